package backoffice

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The SQL of the back office: challenges, sessions and authorizations. Each
// method runs one statement; the handlers compose them in transactions.

// errNotFound: no such challenge, session or pending statement (or it
// expired, or was used).
var errNotFound = errors.New("backoffice: not found or expired")

// querier is what the SQL below runs on: the pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Purposes of a challenge.
const (
	purposeSignIn = "sign-in"
	purposeUnlock = "unlock"
)

// equalHash compares two hashes in constant time.
func equalHash(a, b []byte) bool { return len(a) == len(b) && subtle.ConstantTimeCompare(a, b) == 1 }

func hashOf(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}

// errChallengesFull: max challenges are alive; none is kept.
var errChallengesFull = errors.New("backoffice: too many live challenges")

// saveChallenge keeps a new challenge until expires; for an unlock, bound
// to the session it unlocks. With max challenges alive at now it keeps
// nothing and returns errChallengesFull (copies racing may pass max by
// their number, no more).
func saveChallenge(ctx context.Context, q querier, challenge []byte, purpose string, session []byte, expires, now time.Time, max int) error {
	tag, err := q.Exec(ctx, `insert into login_challenges (hash, purpose, session, expires_at)
		select $1, $2, $3, $4
		where (select count(*) from (select from login_challenges where expires_at > $5 limit $6) live) < $6`,
		hashOf(challenge), purpose, session, expires, now, max)
	switch {
	case err != nil:
		return fmt.Errorf("backoffice: save challenge: %w", err)
	case tag.RowsAffected() == 0:
		return errChallengesFull
	}
	return nil
}

// deleteExpiredChallenges sweeps the challenges expired at now.
func deleteExpiredChallenges(ctx context.Context, q querier, now time.Time) error {
	if _, err := q.Exec(ctx, `delete from login_challenges where expires_at <= $1`, now); err != nil {
		return fmt.Errorf("backoffice: sweep challenges: %w", err)
	}
	return nil
}

// useChallenge consumes a challenge: it succeeds once, before the
// challenge expires, for its purpose (and session) only. A challenge
// presented for the wrong purpose is consumed too: it was shown to someone
// who should not have had it.
func useChallenge(ctx context.Context, q querier, challenge []byte, purpose string, session []byte, now time.Time) error {
	var gotPurpose string
	var gotSession []byte
	var expires time.Time
	err := q.QueryRow(ctx, `delete from login_challenges where hash = $1 returning purpose, session, expires_at`,
		hashOf(challenge)).Scan(&gotPurpose, &gotSession, &expires)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return errNotFound
	case err != nil:
		return fmt.Errorf("backoffice: use challenge: %w", err)
	case !now.Before(expires), gotPurpose != purpose, purpose == purposeUnlock && !equalHash(gotSession, session):
		return errNotFound
	}
	return nil
}

// session is a signed-in card holder, as a row of backoffice_sessions.
type session struct {
	Hash         []byte // SHA-256 of the cookie's token
	UZI          string
	Holder       string
	Role         string   // roleClinician or roleStaff: what the card and the register made it at sign-in
	Granted      []string // the roles granted to its UZI number (backoffice_roles), read with the session
	CardType     string
	RoleCode     string
	AuthCertHash []byte
	SignCert     []byte
	Lang         string
	CreatedAt    time.Time
	SeenAt       time.Time
	LockedAt     *time.Time
	HeartbeatAt  time.Time // the page's last report that the card is in the reader
	Pending      []byte    // the statement the card is being asked to sign
	PendingAt    *time.Time
}

// Roles of a session.
const (
	roleClinician = "clinician"
	roleStaff     = "staff"
)

func (s *session) locked() bool { return s.LockedAt != nil }

func createSession(ctx context.Context, q querier, s *session) error {
	if _, err := q.Exec(ctx, `insert into backoffice_sessions
		(hash, uzi_number, holder, role, card_type, role_code, auth_cert_hash, sign_cert, lang, created_at, seen_at, heartbeat_at)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)`,
		s.Hash, s.UZI, s.Holder, s.Role, s.CardType, s.RoleCode, s.AuthCertHash, s.SignCert, s.Lang, s.CreatedAt); err != nil {
		return fmt.Errorf("backoffice: create session: %w", err)
	}
	return nil
}

// touchEvery: a session's last-seen time is written at most this often, so
// that most requests only read their session; idle time is measured to
// within it.
const touchEvery = 30 * time.Second

// touchSession finds a live session — seen within idle, opened within
// absolute — and, with touch, marks it seen now. An expired one is
// errNotFound.
func touchSession(ctx context.Context, q querier, hash []byte, now time.Time, idle, absolute time.Duration, touch bool) (*session, error) {
	s := &session{}
	err := q.QueryRow(ctx, `select hash, uzi_number, holder, role, card_type, role_code, auth_cert_hash, sign_cert, lang,
			created_at, seen_at, locked_at, pending_statement, pending_at, coalesce(heartbeat_at, created_at),
			array(select r.role from backoffice_roles r where r.uzi_number = backoffice_sessions.uzi_number order by r.role)
		from backoffice_sessions where hash = $1 and seen_at > $2 and created_at > $3`,
		hash, now.Add(-idle), now.Add(-absolute)).Scan(&s.Hash, &s.UZI, &s.Holder, &s.Role, &s.CardType, &s.RoleCode,
		&s.AuthCertHash, &s.SignCert, &s.Lang, &s.CreatedAt, &s.SeenAt, &s.LockedAt, &s.Pending, &s.PendingAt, &s.HeartbeatAt, &s.Granted)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, errNotFound
	case err != nil:
		return nil, fmt.Errorf("backoffice: read session: %w", err)
	}
	if touch && now.Sub(s.SeenAt) >= touchEvery {
		if _, err := q.Exec(ctx, `update backoffice_sessions set seen_at = $2 where hash = $1`, hash, now); err != nil {
			return nil, fmt.Errorf("backoffice: touch session: %w", err)
		}
		s.SeenAt = now
	}
	return s, nil
}

func deleteSession(ctx context.Context, q querier, hash []byte) error {
	if _, err := q.Exec(ctx, `delete from backoffice_sessions where hash = $1`, hash); err != nil {
		return fmt.Errorf("backoffice: delete session: %w", err)
	}
	return nil
}

// setLocked locks (at non-nil) or unlocks a session and reports whether it
// changed, so that a lock is recorded once however often the page asks.
// Unlocking counts as a heartbeat: the card just signed.
func setLocked(ctx context.Context, q querier, hash []byte, at *time.Time, now time.Time) (bool, error) {
	cond := "locked_at is null"
	if at == nil {
		cond = "locked_at is not null"
	}
	tag, err := q.Exec(ctx, `update backoffice_sessions set locked_at = $2, pending_statement = null, pending_at = null,
			heartbeat_at = case when $2::timestamptz is null then $3 else heartbeat_at end
		where hash = $1 and `+cond, hash, at, now)
	if err != nil {
		return false, fmt.Errorf("backoffice: lock session: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// heartbeat notes that the page of an unlocked session saw its card now.
func heartbeat(ctx context.Context, q querier, hash []byte, now time.Time) error {
	if _, err := q.Exec(ctx, `update backoffice_sessions set heartbeat_at = $2 where hash = $1 and locked_at is null`, hash, now); err != nil {
		return fmt.Errorf("backoffice: heartbeat: %w", err)
	}
	return nil
}

// lockSilent locks the unlocked sessions whose last heartbeat is older than
// timeout and returns their card holders' UZI numbers, for the audit rows.
// hash, when not nil, limits it to that session.
func lockSilent(ctx context.Context, q querier, hash []byte, now time.Time, timeout time.Duration) ([]string, error) {
	rows, err := q.Query(ctx, `update backoffice_sessions set locked_at = $1, pending_statement = null, pending_at = null
		where locked_at is null and coalesce(heartbeat_at, created_at) < $2 and ($3::bytea is null or hash = $3)
		returning uzi_number`, now, now.Add(-timeout), hash)
	if err != nil {
		return nil, fmt.Errorf("backoffice: lock silent sessions: %w", err)
	}
	uzis, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("backoffice: lock silent sessions: %w", err)
	}
	return uzis, nil
}

func setLang(ctx context.Context, q querier, hash []byte, lang string) error {
	if _, err := q.Exec(ctx, `update backoffice_sessions set lang = $2 where hash = $1`, hash, lang); err != nil {
		return fmt.Errorf("backoffice: set language: %w", err)
	}
	return nil
}

func setPending(ctx context.Context, q querier, hash, statement []byte, now time.Time) error {
	if _, err := q.Exec(ctx, `update backoffice_sessions set pending_statement = $2, pending_at = $3 where hash = $1`,
		hash, statement, now); err != nil {
		return fmt.Errorf("backoffice: keep statement: %w", err)
	}
	return nil
}

// takePending clears the session's pending statement if it is still
// statement: a second submission of the same signature finds nothing.
func takePending(ctx context.Context, q querier, hash, statement []byte) error {
	tag, err := q.Exec(ctx, `update backoffice_sessions set pending_statement = null, pending_at = null
		where hash = $1 and pending_statement = $2`, hash, statement)
	if err != nil {
		return fmt.Errorf("backoffice: take statement: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return errNotFound
	}
	return nil
}

// authorization is a vouched statement with everything the phone picks up.
type authorization struct {
	ID             [16]byte
	PhoneCode      []byte
	Statement      []byte
	StatementSig   []byte
	Attestation    []byte
	AttestationSig []byte
	SignerCert     []byte
	UZI            string
	RoleCode       string
	CreatedAt      time.Time
	ExpiresAt      time.Time
}

func insertAuthorization(ctx context.Context, q querier, a *authorization) error {
	if _, err := q.Exec(ctx, `insert into authorizations
		(id, phone_code, statement, statement_sig, attestation, attestation_sig, signer_cert, uzi_number, role_code, created_at, expires_at)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		a.ID, a.PhoneCode, a.Statement, a.StatementSig, a.Attestation, a.AttestationSig, a.SignerCert, a.UZI, a.RoleCode,
		a.CreatedAt, a.ExpiresAt); err != nil {
		return fmt.Errorf("backoffice: store authorization: %w", err)
	}
	return nil
}

// quotaLock serialises one card holder's vouches, so that two at once
// cannot both pass the quota's last place.
func quotaLock(ctx context.Context, q querier, uziNumber string) error {
	if _, err := q.Exec(ctx, `select pg_advisory_xact_lock(hashtextextended('vouch-quota:' || $1, 0))`, uziNumber); err != nil {
		return fmt.Errorf("backoffice: quota lock: %w", err)
	}
	return nil
}

// vouchedSince counts a card holder's authorizations made since.
func vouchedSince(ctx context.Context, q querier, uziNumber string, since time.Time) (int, error) {
	var n int
	if err := q.QueryRow(ctx, `select count(*) from authorizations where uzi_number = $1 and created_at >= $2`,
		uziNumber, since).Scan(&n); err != nil {
		return 0, fmt.Errorf("backoffice: count vouches: %w", err)
	}
	return n, nil
}

// unpublished lists valid authorizations the public tier has not
// acknowledged, oldest first.
func unpublished(ctx context.Context, q querier, now time.Time, limit int) ([]authorization, error) {
	rows, err := q.Query(ctx, `select id, phone_code, statement, statement_sig, attestation, attestation_sig, signer_cert,
			uzi_number, coalesce(role_code, ''), created_at, expires_at
		from authorizations where published_at is null and expires_at > $1 and signer_cert is not null
		order by created_at limit $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("backoffice: read unpublished: %w", err)
	}
	defer rows.Close()
	var out []authorization
	for rows.Next() {
		var a authorization
		if err := rows.Scan(&a.ID, &a.PhoneCode, &a.Statement, &a.StatementSig, &a.Attestation, &a.AttestationSig,
			&a.SignerCert, &a.UZI, &a.RoleCode, &a.CreatedAt, &a.ExpiresAt); err != nil {
			return nil, fmt.Errorf("backoffice: read unpublished: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("backoffice: read unpublished: %w", err)
	}
	return out, nil
}

func markPublished(ctx context.Context, q querier, ids [][16]byte, now time.Time) error {
	if _, err := q.Exec(ctx, `update authorizations set published_at = $2 where id = any($1) and published_at is null`,
		ids, now); err != nil {
		return fmt.Errorf("backoffice: mark published: %w", err)
	}
	return nil
}

// sweep deletes expired challenges and sessions.
func sweep(ctx context.Context, q querier, now time.Time, idle, absolute time.Duration) error {
	if err := deleteExpiredChallenges(ctx, q, now); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, `delete from backoffice_sessions where seen_at <= $1 or created_at <= $2`,
		now.Add(-idle), now.Add(-absolute)); err != nil {
		return fmt.Errorf("backoffice: sweep sessions: %w", err)
	}
	return nil
}
