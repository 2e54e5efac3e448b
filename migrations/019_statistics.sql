-- Daily statistics (internal/stats), kept forever (DESIGN.md, Data kept):
-- the raw rows they are counted from go after 30 days (authorizations) or
-- 14 (keys), so a day is counted once it is over, soon after, by `vouch
-- stats`, and the counts stay. Counting a day again gives the same rows:
-- its rows are replaced in one transaction, under an advisory lock, so two
-- copies of the job never count a day twice.

-- One count of one day: figure (vouches, sign-ins, refusals, …) and label
-- (the profession, the reason; '' for a figure without parts). A label
-- holds no person's identifier.
create table stats_daily (
    day    date not null,
    figure text not null check (figure ~ '^[a-z][a-z-]{0,39}$'),
    label  text not null default '' check (length(label) <= 100),
    value  bigint not null check (value >= 0),
    primary key (day, figure, label)
);

-- Codes vouched per card holder and day: a stolen card vouches far more
-- than its holder does. Never public (internal/stats.Public has no access
-- to it; the public page and files are built without it).
create table stats_clinician_daily (
    day        date not null,
    uzi_number text not null check (length(uzi_number) <= 20),
    vouched    integer not null check (vouched > 0),
    primary key (day, uzi_number)
);

-- The days counted, and when: a day is counted once (incremental), again
-- only when asked.
create table stats_days (
    day         date primary key,
    computed_at timestamptz not null
);

---- create above / drop below ----

drop table stats_days;
drop table stats_clinician_daily;
drop table stats_daily;
