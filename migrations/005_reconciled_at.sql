-- When the license bucket was last compared whole with the mirror: the
-- comparison is due again after the full-sync interval, so no lost or
-- altered record outlives a day, without every run reading the whole bucket.
alter table registry_sync_state add column reconciled_at timestamptz;

---- create above / drop below ----

alter table registry_sync_state drop column reconciled_at;
