-- The back office's rate limits (sign-in attempts per address, vouches per
-- card) as token buckets every copy of the back office takes from, one
-- atomic upsert a check: kept per process, each copy behind the balancer
-- would allow the whole rate again. A row whose bucket is full again
-- (full_at) is deleted by the back office's sweep; none and a full one are
-- the same.
--
-- Unlogged: a bucket is worth less than the WAL of every check. After a
-- crash or a failover the buckets start full, which gives each address or
-- card one burst more; the daily quota of vouches, which is the bound that
-- matters, is counted in the logged authorizations.
create unlogged table rate_buckets (
    key     text primary key check (length(key) <= 200),
    tokens  double precision not null,
    at      timestamptz not null,
    full_at timestamptz not null
) with (fillfactor = 50);

---- create above / drop below ----

drop table rate_buckets;
