-- Fenced leases: one row per job that only one copy may run at a time (the
-- aggregator's publication, …), taken and renewed by internal/lease.
-- Every take-over adds one to epoch, the fencing token: a holder's writes
-- check, in their own transaction, that the lease still has their epoch
-- and has not expired, so a copy that was frozen past its lease cannot
-- write once another took over, even if it took the lease again since.
-- Expiry is always by the database's clock (clock_timestamp()), never by
-- a holder's. A released lease keeps its row (expired), so the epoch
-- never goes back.
create table leases (
    name       text primary key,
    holder     text not null,
    epoch      bigint not null check (epoch > 0),
    taken_at   timestamptz not null,
    expires_at timestamptz not null
);

-- The index the aggregator last published: its record is written, with
-- the lease's epoch checked, in the transaction that decides the index;
-- the index file is written only after that commit. generation counts
-- publications.
create table export_index (
    id           boolean primary key default true check (id),
    generation   bigint not null check (generation > 0),
    epoch        bigint not null,
    files        text[] not null,
    keys         integer not null check (keys >= 0),
    published_at timestamptz not null
);

-- The aggregator's unfenced lease goes: an aggregator of an earlier
-- version, still running during an upgrade, then fails to take it and
-- never publishes beside a fenced one.
drop table export_lease;

---- create above / drop below ----

create table export_lease (
    name       text primary key,
    holder     text not null,
    expires_at timestamptz not null
);
drop table export_index;
drop table leases;
