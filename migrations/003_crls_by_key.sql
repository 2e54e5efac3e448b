-- CRLs are filed by the key that signed them, not by the issuer's name:
-- during a key rollover two CAs share a name, and each has its own CRL. The
-- rows are a cache of what the sync fetched and verified; the next sync
-- fills the new table again. A CRL without a number or a nextUpdate is
-- refused (revocation.Parse), so both are required.
drop table uzi_crls;
create table uzi_crls (
    issuer_key  bytea primary key,  -- SHA-256 of the CA's DER subject and key
    issuer_name text not null,
    number      numeric not null,
    this_update timestamptz not null,
    next_update timestamptz not null,
    der         bytea not null,
    fetched_at  timestamptz not null default now()
);

---- create above / drop below ----

drop table uzi_crls;
create table uzi_crls (
    issuer      bytea primary key,  -- DER subject of the issuing CA
    issuer_name text not null,
    number      numeric,
    this_update timestamptz not null,
    next_update timestamptz,
    der         bytea not null,
    fetched_at  timestamptz not null default now()
);
