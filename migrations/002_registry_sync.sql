-- Registry sync: follow the register incrementally (syncrepl), keep CRLs.

-- entryUUID ties a syncrepl deletion, which names only the UUID, to its row.
alter table registry_entries add column entry_uuid uuid;
create unique index registry_entries_entry_uuid_key on registry_entries (entry_uuid);

alter table registry_sync_runs add column skipped int not null default 0;

-- One row: where incremental sync continues, and when the mirror was last
-- known to equal the register. License decisions refuse a mirror older than
-- their bound.
create table registry_sync_state (
    id        boolean primary key default true check (id),
    cookie    bytea,
    synced_at timestamptz
);

-- The issuing CAs' CRLs as last fetched and verified by the sync job; every
-- role that checks cards reads them from here.
create table uzi_crls (
    issuer      bytea primary key,  -- DER subject of the issuing CA
    issuer_name text not null,
    number      numeric,
    this_update timestamptz not null,
    next_update timestamptz,
    der         bytea not null,
    fetched_at  timestamptz not null default now()
);

---- create above / drop below ----

drop table uzi_crls;
drop table registry_sync_state;
alter table registry_sync_runs drop column skipped;
drop index registry_entries_entry_uuid_key;
alter table registry_entries drop column entry_uuid;
