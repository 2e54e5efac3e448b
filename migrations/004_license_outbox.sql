-- License states on their way to the public tier's bucket. The sync writes
-- them in the transaction that changes the mirror and publishes them only
-- after it commits, deleting each once the bus acknowledged it: the bucket
-- is never ahead of the mirror, and a crash between commit and publish
-- loses nothing (the next run publishes what is left, in order).
create table license_outbox (
    seq        bigint generated always as identity primary key,
    uzi_number text not null,
    record     bytea not null,  -- the exact JSON the bucket gets
    created_at timestamptz not null default now()
);

---- create above / drop below ----

drop table license_outbox;
