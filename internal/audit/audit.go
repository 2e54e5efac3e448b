// Package audit keeps the back office's audit log: one row for every
// sign-in, refused sign-in, vouch, refusal, lock and unlock, kept six years.
//
// The log is append-only twice over: the database refuses UPDATE, DELETE
// and TRUNCATE (migration 001), and every row carries the SHA-256 of the
// row before it, so that whoever edits, inserts or deletes a row without
// also rewriting every hash after it is found by Verify. Someone who can
// rewrite the whole chain is found only against a hash noted outside the
// database: Verify reports the head of the chain for an auditor to keep,
// and checks that a head kept earlier is still in it.
//
// Rows older than six years are pruned from the start of the chain (Prune):
// the database lets them go only through its audit_prune function, which
// records an anchor — the first row kept and the hash it chains from — and
// Verify starts from the newest anchor instead of from row 1.
//
// A row holds no patient datum and never a PIN: the actor is a UZI number,
// the subject an identifier of what was acted on (an authorization id),
// never a phone code.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// Entry is what happened, as the caller knows it.
type Entry struct {
	Actor     string // UZI number of the card holder; "" before the card is known
	Action    string // Action* below
	Subject   string // what was acted on (an authorization id); no patient datum
	Reason    string // why it was refused, a stable reason code; "" when it was not
	IP        string
	UserAgent string
	Detail    string // more, as JSON; no patient datum
}

// Actions the back office records.
const (
	ActionSignIn        = "sign-in"
	ActionSignInRefused = "sign-in-refused"
	ActionVouch         = "vouch"
	ActionVouchRefused  = "vouch-refused"
	ActionLock          = "lock"
	ActionUnlock        = "unlock"
	ActionUnlockRefused = "unlock-refused"
	ActionSignOut       = "sign-out"
	// ActionRequestRefused: a request refused before it reached an action
	// (another site's page posting to the back office).
	ActionRequestRefused = "request-refused"
	// ActionPrune: rows past retention were deleted from the chain's start.
	ActionPrune = "prune"
)

// Row is an entry as stored: its place in the chain, its time and hashes.
type Row struct {
	Seq int64
	At  time.Time
	Entry
	PrevHash []byte // nil for the first row
	Hash     []byte
}

// lockKey serialises appends: the chain has one order.
const lockKey int64 = 0x766f7563_6861756c // "vouchaul"

// maxField bounds every text field: a user agent is the one an attacker
// chooses, and the log keeps six years.
const maxField = 1024

// Append writes e as the next row of the chain in tx, so the row commits
// with the change it records, or neither does. It waits for other appends
// to commit first.
func Append(ctx context.Context, tx pgx.Tx, e Entry, now time.Time) (Row, error) {
	e = clean(e)
	if e.Action == "" {
		return Row{}, errors.New("audit: entry without an action")
	}
	if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey); err != nil {
		return Row{}, fmt.Errorf("audit: lock: %w", err)
	}
	r := Row{Seq: 1, At: now.UTC().Truncate(time.Microsecond), Entry: e}
	var prevSeq int64
	err := tx.QueryRow(ctx, `select seq, hash from audit_log order by seq desc limit 1`).Scan(&prevSeq, &r.PrevHash)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return Row{}, fmt.Errorf("audit: read chain head: %w", err)
	default:
		r.Seq = prevSeq + 1
	}
	r.Hash = r.hash()
	if _, err := tx.Exec(ctx, `insert into audit_log (seq, at, actor, action, subject, reason, ip, user_agent, detail, prev_hash, hash)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		r.Seq, r.At, r.Actor, r.Action, null(r.Subject), null(r.Reason), null(r.IP), null(r.UserAgent), null(r.Detail), r.PrevHash, r.Hash); err != nil {
		return Row{}, fmt.Errorf("audit: append: %w", err)
	}
	return r, nil
}

// clean keeps fields short and printable: the log is read by people, years
// from now, and an attacker chooses the user agent.
func clean(e Entry) Entry {
	f := func(s string) string {
		s = strings.Map(func(c rune) rune {
			if c < 0x20 || c == 0x7f || c == utf8.RuneError {
				return '\uFFFD'
			}
			return c
		}, s) // invalid UTF-8 comes out as U+FFFD too
		if len(s) > maxField {
			s = s[:maxField]
			for !utf8.ValidString(s) {
				s = s[:len(s)-1]
			}
		}
		return s
	}
	e.Actor, e.Action, e.Subject, e.Reason = f(e.Actor), f(e.Action), f(e.Subject), f(e.Reason)
	e.IP, e.UserAgent = f(e.IP), f(e.UserAgent)
	if len(e.Detail) > 4*maxField || !utf8.ValidString(e.Detail) {
		e.Detail = `{"truncated":true}`
	}
	return e
}

func null(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// hash is SHA-256 over a domain label and every field of the row, each
// with its length, the previous hash included: no two rows encode alike.
func (r Row) hash() []byte {
	h := sha256.New()
	h.Write([]byte("vouch audit v1\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(r.Seq))
	h.Write(n[:])
	for _, f := range []string{r.At.UTC().Format(time.RFC3339Nano), r.Actor, r.Action, r.Subject, r.Reason, r.IP, r.UserAgent, r.Detail, string(r.PrevHash)} {
		binary.BigEndian.PutUint32(n[:4], uint32(len(f)))
		h.Write(n[:4])
		h.Write([]byte(f))
	}
	return h.Sum(nil)
}

// Problem is the first place where the chain does not hold.
type Problem struct {
	Seq  int64  // the row where it shows
	Kind string // Edited, Deleted, Reordered, or Missing for a head that is gone
}

// Kinds of Problem.
const (
	Edited  = "edited"  // the row's content does not match its hash, or its link to the row before
	Deleted = "deleted" // rows before this one are gone
	Missing = "missing" // the head noted earlier is not in the chain: history was rewritten
	Start   = "start"   // the chain does not begin with a first row
)

func (p Problem) Error() string {
	switch p.Kind {
	case Deleted:
		return fmt.Sprintf("audit log: rows before %d were deleted", p.Seq)
	case Missing:
		return "audit log: the head noted earlier is not in the chain: history was rewritten"
	case Start:
		return fmt.Sprintf("audit log: the chain begins at row %d, not at a first row", p.Seq)
	}
	return fmt.Sprintf("audit log: row %d was edited or inserted", p.Seq)
}

// Report is what Verify found.
type Report struct {
	Rows  int64
	First int64  // the first row: 1, or the anchor's after a prune
	Head  []byte // hash of the last row: note it, and pass it to a later Verify
}

// HeadHex is the head as an auditor writes it down.
func (r Report) HeadHex() string { return hex.EncodeToString(r.Head) }

// Verify reads the whole chain in order and recomputes it. A non-nil known
// is a head noted earlier, which must be a row of the chain. It returns a
// Problem for the first row that does not hold; other errors mean it could
// not read.
func Verify(ctx context.Context, tx pgx.Tx, known []byte) (Report, error) {
	return VerifyProgress(ctx, tx, known, nil)
}

// progressEvery is how many rows VerifyProgress checks between reports.
const progressEvery = 1000

// VerifyProgress is Verify, telling progress how many rows it has checked
// every thousand rows and at the end: a year of rows takes a while, and an
// auditor waiting on a page wants to see it move. progress may be nil.
func VerifyProgress(ctx context.Context, tx pgx.Tx, known []byte, progress func(checked int64)) (Report, error) {
	var rep Report
	// Where the chain starts: row 1 from nothing, or the newest anchor a
	// prune left.
	first, firstPrev := int64(1), []byte(nil)
	err := tx.QueryRow(ctx, `select seq, prev_hash from audit_anchor order by seq desc limit 1`).Scan(&first, &firstPrev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return rep, fmt.Errorf("audit: read anchor: %w", err)
	}
	rep.First = first
	rows, err := tx.Query(ctx, rowColumns+` order by seq`)
	if err != nil {
		return rep, fmt.Errorf("audit: read: %w", err)
	}
	defer rows.Close()
	var prev *Row
	foundKnown := known == nil
	for rows.Next() {
		var r Row
		if err := r.scan(rows); err != nil {
			return rep, fmt.Errorf("audit: read: %w", err)
		}
		switch {
		case prev == nil && (r.Seq != first || !bytes.Equal(r.PrevHash, firstPrev)):
			return rep, Problem{Seq: r.Seq, Kind: Start}
		case prev != nil && r.Seq != prev.Seq+1:
			return rep, Problem{Seq: r.Seq, Kind: Deleted}
		case prev != nil && !bytes.Equal(r.PrevHash, prev.Hash), !bytes.Equal(r.hash(), r.Hash):
			return rep, Problem{Seq: r.Seq, Kind: Edited}
		}
		if !foundKnown && bytes.Equal(r.Hash, known) {
			foundKnown = true
		}
		rep.Rows++
		rep.Head = r.Hash
		prev = &r
		if progress != nil && rep.Rows%progressEvery == 0 {
			progress(rep.Rows)
		}
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("audit: read: %w", err)
	}
	if progress != nil {
		progress(rep.Rows)
	}
	if !foundKnown {
		return rep, Problem{Kind: Missing}
	}
	return rep, nil
}

// Prune deletes, in tx, the rows at the start of the chain that are all
// older than before, keeping the newest row, and records the anchor Verify
// then starts from, and an entry saying so. The database keeps every row
// younger than six years by its own clock, whatever before says. It
// returns how many rows went.
func Prune(ctx context.Context, tx pgx.Tx, before, now time.Time) (int64, error) {
	if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey); err != nil {
		return 0, fmt.Errorf("audit: lock: %w", err)
	}
	var n int64
	if err := tx.QueryRow(ctx, `select audit_prune($1)`, before).Scan(&n); err != nil {
		return 0, fmt.Errorf("audit: prune: %w", err)
	}
	if n > 0 {
		detail := fmt.Sprintf(`{"rows":%d,"before":%q}`, n, before.UTC().Format(time.RFC3339))
		if _, err := Append(ctx, tx, Entry{Action: ActionPrune, Detail: detail}, now); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// rowColumns reads a whole row, in the order scan takes it.
const rowColumns = `select seq, at, actor, action, coalesce(subject, ''), coalesce(reason, ''), coalesce(ip, ''),
		coalesce(user_agent, ''), coalesce(detail, ''), prev_hash, hash from audit_log`

func (r *Row) scan(rows pgx.Rows) error {
	return rows.Scan(&r.Seq, &r.At, &r.Actor, &r.Action, &r.Subject, &r.Reason, &r.IP, &r.UserAgent, &r.Detail, &r.PrevHash, &r.Hash)
}

// Querier runs a query: a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ByActor returns the newest rows of one actor, newest first, at most
// limit: what a card holder may read of their own activity.
func ByActor(ctx context.Context, q Querier, actor string, limit int) ([]Row, error) {
	rows, err := q.Query(ctx, rowColumns+` where actor = $1 order by seq desc limit $2`, actor, limit)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	defer rows.Close()
	var out []Row
	for rows.Next() {
		var r Row
		if err := r.scan(rows); err != nil {
			return nil, fmt.Errorf("audit: read: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	return out, nil
}
