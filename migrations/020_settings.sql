-- Settings an admin changes in the back office (internal/settings): one row
-- per setting ever set; a setting without a row is its default, which the
-- configuration gives. version counts the changes, so that an admin's
-- change made on an older version is refused (optimistic concurrency).
-- Every change is also an audit row with the old and the new value.
create table settings (
    name       text primary key check (name ~ '^[a-z-]{1,64}$'),
    value      jsonb not null,
    version    bigint not null check (version > 0),
    changed_by text not null,
    changed_at timestamptz not null
);

---- create above / drop below ----

drop table settings;
