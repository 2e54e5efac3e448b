-- The back office: login challenges, sessions, and what an authorization
-- needs to be published.

-- A challenge is single use and lives 5 minutes. It is kept here, not in
-- memory, so that whichever copy of the back office receives the signature
-- can check a challenge another copy issued. Only its hash is stored: the
-- row is consumed by deleting it.
create table login_challenges (
    hash       bytea primary key check (octet_length(hash) = 32),
    purpose    text not null check (purpose in ('sign-in', 'unlock')),
    session    bytea,             -- unlock: the session it unlocks
    expires_at timestamptz not null
);
create index login_challenges_expires_at_idx on login_challenges (expires_at);

-- A session is bound to the card that opened it (the SHA-256 of its
-- authentication certificate) and survives a restart of the back office.
-- The cookie holds a random token; the row holds its SHA-256, so whoever
-- reads this table cannot take over a session.
create table backoffice_sessions (
    hash              bytea primary key check (octet_length(hash) = 32),
    uzi_number        text not null,
    holder            text not null,
    role              text not null check (role in ('clinician', 'staff')),
    card_type         char(1) not null,
    role_code         text not null,
    auth_cert_hash    bytea not null check (octet_length(auth_cert_hash) = 32),
    sign_cert         bytea,      -- the card's signature certificate, as the card agent read it
    lang              text not null,
    created_at        timestamptz not null,
    seen_at           timestamptz not null,
    locked_at         timestamptz,
    pending_statement bytea,      -- the statement the card is being asked to sign
    pending_at        timestamptz
);
create index backoffice_sessions_seen_at_idx on backoffice_sessions (seen_at);

-- What the phone picks up is the bundle; published_at says the public
-- tier's bucket acknowledged it. A row committed but not yet published (the
-- back office stopped in between) is published by the next sweep.
alter table authorizations
    add column signer_cert  bytea,
    add column published_at timestamptz;
create index authorizations_unpublished_idx on authorizations (created_at) where published_at is null;
-- The per-card daily quota counts a card holder's authorizations of today.
create index authorizations_uzi_created_idx on authorizations (uzi_number, created_at);

---- create above / drop below ----

drop index authorizations_uzi_created_idx;
drop index authorizations_unpublished_idx;
alter table authorizations drop column published_at, drop column signer_cert;
drop table backoffice_sessions;
drop table login_challenges;
