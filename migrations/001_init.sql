-- Authorizations: a clinician's signed statement that a phone code may upload.
-- Rows outlive their 24 h validity (kept 30 days) so used_at answers replays.
create table authorizations (
    id              uuid primary key,
    phone_code      bytea not null check (octet_length(phone_code) = 10),
    statement       bytea not null,
    statement_sig   bytea,
    attestation     bytea,
    attestation_sig bytea,
    uzi_number      text not null,
    role_code       text,
    created_at      timestamptz not null default now(),
    expires_at      timestamptz not null,
    used_at         timestamptz
);

create index authorizations_phone_code_idx on authorizations (phone_code);
create index authorizations_expires_at_idx on authorizations (expires_at);

-- Audit log: append-only and hash-chained; hash covers prev_hash and the row,
-- computed by the writer so the chain can be verified outside the database.
create table audit_log (
    seq       bigserial primary key,
    at        timestamptz not null default now(),
    actor     text not null,
    action    text not null,
    subject   text,
    detail    jsonb,
    prev_hash bytea,
    hash      bytea not null
);

create index audit_log_at_idx on audit_log (at);

-- The database itself refuses changes to history, whatever the application does.
create function audit_log_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger audit_log_append_only
    before update or delete on audit_log
    for each row execute function audit_log_append_only();

-- TRUNCATE bypasses row triggers, so refuse it with a statement trigger.
create trigger audit_log_no_truncate
    before truncate on audit_log
    for each statement execute function audit_log_append_only();

-- Registry mirror: the national registry's view of each card holder.
create table registry_entries (
    uzi_number     text primary key,
    big_number     text,
    card_type      char(1),
    role_code      text,
    agb_code       text,
    license_status text not null
        check (license_status in ('active', 'suspended', 'revoked', 'deceased')),
    valid_from     timestamptz,
    valid_until    timestamptz,
    cert_serial    text,
    dn             text,
    synced_at      timestamptz not null default now()
);

create table registry_sync_runs (
    id          bigserial primary key,
    kind        text not null check (kind in ('full', 'incremental')),
    started_at  timestamptz not null default now(),
    finished_at timestamptz,
    entries     int not null default 0,
    changes     int not null default 0,
    error       text
);

---- create above / drop below ----

drop table registry_sync_runs;
drop table registry_entries;
drop trigger audit_log_no_truncate on audit_log;
drop trigger audit_log_append_only on audit_log;
drop table audit_log;
drop function audit_log_append_only();
drop table authorizations;
