-- The audit row as the back office writes it: who, from where, why refused.
-- detail becomes text: the chain's hash covers the exact bytes written, and
-- jsonb would rewrite them. seq is assigned by the writer, one more than the
-- row before, under a lock: a gap is a deleted row, not a rolled-back insert.
alter table audit_log
    add column reason     text,
    add column ip         text,
    add column user_agent text,
    alter column detail type text using detail::text,
    alter column seq drop default,
    alter column at drop default;
drop sequence if exists audit_log_seq_seq;

---- create above / drop below ----

create sequence audit_log_seq_seq owned by audit_log.seq;
select setval('audit_log_seq_seq', coalesce((select max(seq) from audit_log), 0) + 1, false);
alter table audit_log
    alter column at set default now(),
    alter column seq set default nextval('audit_log_seq_seq'),
    alter column detail type jsonb using detail::jsonb,
    drop column user_agent,
    drop column ip,
    drop column reason;
