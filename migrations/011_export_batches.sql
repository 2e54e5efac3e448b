-- The export as a series of batches of arrival: each key is published in
-- exactly one batch, the first one built after it arrived and its embargo
-- passed. A batch's window and keys are fixed when it is made, so its file
-- is the same whenever it is built, and two files never share a header.

-- GAEN's report type (1 CONFIRMED_TEST … 5 REVOKED): uploads here are
-- vouched for by a clinician (1); a site's keys keep the type its file gave.
-- A revision (from a site's revised_keys) is published once, in a later
-- batch, in that file's revised_keys.
alter table exposure_keys
    add column report_type smallint not null default 1 check (report_type between 0 and 5),
    add column batch_id bigint,
    add column revised_report_type smallint check (revised_report_type between 0 and 5),
    add column revised_batch_id bigint,
    add check (revised_batch_id is null or revised_report_type is not null);
create index exposure_keys_unbatched_idx on exposure_keys (rolling_start) where batch_id is null;
create index exposure_keys_batch_idx on exposure_keys (batch_id) where batch_id is not null;
create index exposure_keys_revised_idx on exposure_keys (revised_batch_id)
    where revised_report_type is not null;

-- One row per batch: [start_at, end_at) is the window of arrival it covers,
-- path its file once written. Windows follow each other without overlap.
create table export_batches (
    id       bigint primary key generated always as identity,
    start_at timestamptz not null unique,
    end_at   timestamptz not null unique,
    path     text,
    check (end_at > start_at)
);

---- create above / drop below ----

drop table export_batches;
drop index exposure_keys_revised_idx;
drop index exposure_keys_batch_idx;
drop index exposure_keys_unbatched_idx;
alter table exposure_keys
    drop column revised_batch_id,
    drop column revised_report_type,
    drop column batch_id,
    drop column report_type;
