-- Which license bucket reconciled_at is about: its name and when the bus
-- created it. A bucket configured anew, or deleted and created again by any
-- role, differs from it, and is compared whole with the mirror at the next
-- run, however recent reconciled_at is.
alter table registry_sync_state add column reconciled_bucket text;

---- create above / drop below ----

alter table registry_sync_state drop column reconciled_bucket;
