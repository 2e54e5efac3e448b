-- The published keys: what the readers store from the bus and the
-- aggregator exports. A key is its own identity: storing it twice (a
-- redelivered message, a second site's export) changes nothing. Only a
-- coarse received hour is kept, never the exact time or anything that
-- links a key to a phone, a clinician or a request.
create table exposure_keys (
    key_data          bytea primary key check (octet_length(key_data) = 16),
    rolling_start     integer not null check (rolling_start >= 0),
    rolling_period    integer not null check (rolling_period between 1 and 144),
    transmission_risk smallint not null default 0 check (transmission_risk between 0 and 8),
    days_since_onset  smallint,          -- null when no onset was recorded
    received_hour     timestamptz not null,
    -- '' for keys uploaded here, a site's name for keys imported from it,
    -- 'padding' for the fake keys an export is padded with (kept, so a
    -- rebuild gives the same file).
    origin            text not null default ''
);
create index exposure_keys_rolling_start_idx on exposure_keys (rolling_start);

---- create above / drop below ----

drop table exposure_keys;
