-- The audit trail pages (internal/backoffice/audittrail*.go) read the log
-- newest first by (at, seq), a page at a time by keyset, filtered by time,
-- actor, action, reason or result. Each filter has an index in that order,
-- so that a page is an index range read whatever the log's size (a year of
-- rows and more); (at, seq) replaces the index on at alone.
create index audit_log_at_seq_idx on audit_log (at, seq);
drop index audit_log_at_idx;
create index audit_log_actor_idx on audit_log (actor, at, seq);
create index audit_log_action_idx on audit_log (action, at, seq);
create index audit_log_reason_idx on audit_log (reason, at, seq) where reason is not null;
-- Refusals (every action ending in -refused): the same expression as the
-- trail's result filter (internal/audit/trail.go).
create index audit_log_refused_idx on audit_log (at, seq) where action like '%-refused';

---- create above / drop below ----

drop index audit_log_refused_idx;
drop index audit_log_reason_idx;
drop index audit_log_action_idx;
drop index audit_log_actor_idx;
create index audit_log_at_idx on audit_log (at);
drop index audit_log_at_seq_idx;
