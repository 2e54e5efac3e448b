-- The transparency log's writer (internal/transparency) keeps here a mirror
-- of the log: one row per leaf, by its index, with what it came from. The
-- log itself (tessera's files) is the truth: after a crash the writer reads
-- the leaves the log holds beyond this mirror and records them before it
-- appends anything, so an authorization is appended exactly once. Rows are
-- written with the log lease's epoch checked (internal/lease) and kept as
-- long as the log (no retention: the log never forgets either).
create table transparency_leaves (
    idx              bigint primary key check (idx >= 0),
    entry            bytea not null,
    -- the authorization the leaf is the hash of (kind 1); no foreign key:
    -- authorizations are deleted after 30 days, their leaves stay
    authorization_id uuid,
    -- the audit row whose chain head the leaf is (kind 2)
    audit_seq        bigint,
    logged_at        timestamptz not null default now()
);
-- What the writer has yet to append: authorizations without a leaf.
create index transparency_leaves_authorization_idx on transparency_leaves (authorization_id)
    where authorization_id is not null;
create index transparency_leaves_audit_seq_idx on transparency_leaves (audit_seq)
    where audit_seq is not null;

---- create above / drop below ----

drop table transparency_leaves;
