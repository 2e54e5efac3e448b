-- Retention of the audit log. Rows are kept six years, then deleted from
-- the start of the chain. The chain must still verify afterwards, so the
-- deletion leaves an anchor: the sequence number and hash the first
-- remaining row chains from. Verify starts there instead of at row 1.
--
-- Deleting stays refused to everyone else: the trigger lets a row go only
-- inside audit_prune (which sets vouch.audit_prune_below for its own
-- transaction) and only when the row is more than six years old, whatever
-- the caller passes. Anchors are append-only, like the log.
create table audit_anchor (
    seq       bigint primary key,  -- the first row kept
    prev_hash bytea not null check (octet_length(prev_hash) = 32),
    pruned_at timestamptz not null,
    rows      bigint not null
);

create or replace function audit_log_append_only() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE'
       and current_setting('vouch.audit_prune_below', true) is not null
       and current_setting('vouch.audit_prune_below', true) <> ''
       and old.seq < current_setting('vouch.audit_prune_below', true)::bigint
       and old.at < now() - interval '6 years' then
        return old;
    end if;
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create function audit_anchor_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_anchor is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;
create trigger audit_anchor_append_only
    before update or delete on audit_anchor
    for each row execute function audit_anchor_append_only();
create trigger audit_anchor_no_truncate
    before truncate on audit_anchor
    for each statement execute function audit_anchor_append_only();

-- audit_prune deletes the rows of the chain's start that are all older
-- than before and than six years, keeping at least the newest row, and
-- records the anchor. It returns how many rows went. The caller holds the
-- audit append lock, so no row is appended meanwhile.
create function audit_prune(before timestamptz) returns bigint
language plpgsql as $$
declare
    cut    bigint;
    anchor bytea;
    n      bigint;
begin
    -- Six years by the database's clock, whatever the caller's says.
    before := least(before, now() - interval '6 years');
    -- The first row to keep: the first one not older than before; the head
    -- when every row is, so the chain always has a row to continue from.
    select coalesce(
        (select min(seq) from audit_log where at >= before),
        (select max(seq) from audit_log)) into cut;
    if cut is null then
        return 0;
    end if;
    select hash into anchor from audit_log where seq = cut - 1;
    if anchor is null then
        return 0; -- nothing before cut
    end if;
    perform set_config('vouch.audit_prune_below', cut::text, true);
    delete from audit_log where seq < cut;
    get diagnostics n = row_count;
    perform set_config('vouch.audit_prune_below', '', true);
    insert into audit_anchor (seq, prev_hash, pruned_at, rows) values (cut, anchor, now(), n);
    return n;
end;
$$;

---- create above / drop below ----

drop function audit_prune(timestamptz);
drop trigger audit_anchor_no_truncate on audit_anchor;
drop trigger audit_anchor_append_only on audit_anchor;
drop function audit_anchor_append_only();
drop table audit_anchor;
create or replace function audit_log_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;
