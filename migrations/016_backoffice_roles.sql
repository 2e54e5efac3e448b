-- Roles in the back office granted to a card holder (UZI number): auditor
-- and admin. clinician and staff are not kept here: the card and the
-- register decide them at sign-in (docs/backoffice.md, Roles). The first
-- admins come from VOUCH_BOOTSTRAP_ADMINS (granted_by says so); a grant of
-- admin is a request until a second admin approves it (approved_by).
create table backoffice_roles (
    uzi_number  text not null check (uzi_number ~ '^[0-9]{9}$'),
    role        text not null check (role in ('auditor', 'admin')),
    granted_by  text not null,  -- the admin's UZI number, or VOUCH_BOOTSTRAP_ADMINS
    approved_by text,           -- admin: the second admin
    granted_at  timestamptz not null,
    primary key (uzi_number, role),
    check (role <> 'admin' or approved_by is not null or granted_by = 'VOUCH_BOOTSTRAP_ADMINS'),
    check (approved_by is null or approved_by <> granted_by)
);

-- Grants of admin waiting for a second admin: shown as pending until then.
create table backoffice_role_requests (
    uzi_number   text not null check (uzi_number ~ '^[0-9]{9}$'),
    role         text not null check (role = 'admin'),
    requested_by text not null,
    requested_at timestamptz not null,
    primary key (uzi_number, role),
    check (requested_by <> uzi_number)
);

---- create above / drop below ----

drop table backoffice_role_requests;
drop table backoffice_roles;
