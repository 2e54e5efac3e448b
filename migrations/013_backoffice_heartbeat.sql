-- The back office page reports a heartbeat while the card agent's watch
-- sees the signed-in card; the server locks a session whose last heartbeat
-- is older than two minutes (closed tab, extension gone). A row without
-- one (written before this migration) counts from its sign-in.
alter table backoffice_sessions add column heartbeat_at timestamptz;

---- create above / drop below ----

alter table backoffice_sessions drop column heartbeat_at;
