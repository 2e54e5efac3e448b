-- The aggregator's publication state and the sites' imports.

-- One row per lease name: the aggregator holding it publishes, others wait.
-- Taken with one atomic upsert that succeeds only when the row is free,
-- expired or already the holder's, so two aggregators never publish at once.
create table export_lease (
    name       text primary key,
    holder     text not null,
    expires_at timestamptz not null
);

-- Every export file the aggregator wrote into the origin's directory. A file
-- is deleted only after it left the index and a grace period passed, so a
-- phone that just read the index still finds every file it names (the
-- Google server deleted files still indexed: exposure-notifications-server
-- #1148, #1171). A file written but never indexed (a crash before the index)
-- is recorded as having left it when written, so it goes the same way.
create table export_files (
    path          text primary key,
    in_index      boolean not null default false,
    written_at    timestamptz not null default now(),
    left_index_at timestamptz,
    check (in_index = (left_index_at is null))
);
create index export_files_left_idx on export_files (left_index_at) where not in_index;

-- The files imported from other sites: content-addressed names are never
-- fetched twice.
create table federate_imports (
    site        text not null,
    path        text not null,
    imported_at timestamptz not null default now(),
    keys        integer not null check (keys >= 0),
    primary key (site, path)
);

---- create above / drop below ----

drop table federate_imports;
drop table export_files;
drop table export_lease;
