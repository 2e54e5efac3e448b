package transparency

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
)

// AuditReport is what Audit found.
type AuditReport struct {
	Checkpoint     *Checkpoint
	Authorizations int // in the database, proven in the log
	Recent         int // younger than the grace period and not yet in the log
	Heads          int // audit-chain heads in the log, each matching the database's chain
	HeadsPruned    int // heads of rows pruned since (older than six years)
	Repeats        int // leaves that repeat an earlier one (a stale writer's; harmless, reported)
	AuditRows      int64
	Problems       []string
}

// Audit checks the log against the database: the log is consistent with
// the checkpoint st saw before (Follow); every authorization in the
// database older than grace is in the log, proven by an inclusion proof
// against the current checkpoint; the audit chain verifies, and every
// audit-chain head the log holds is still a row of it with that hash, so
// a truncated or rewritten audit log is found without a head noted by
// hand; and no audit row older than grace is left without a head after it
// in the log (grace must exceed the writer's audit interval). Problems are
// in the report; an error means it could not check.
func Audit(ctx context.Context, db *database.DB, src Source, v note.Verifier, st *State, grace time.Duration, now time.Time) (*AuditReport, error) {
	rep := &AuditReport{}
	type head struct {
		idx uint64
		raw []byte
		e   Entry
	}
	var heads []head
	where := map[string]uint64{} // entry → its first index
	cp, err := Follow(ctx, src, v, st, true, func(idx uint64, raw []byte, e Entry) error {
		if _, seen := where[string(raw)]; seen {
			rep.Repeats++
			return nil
		}
		where[string(raw)] = idx
		if e.Kind == KindAuditHead {
			heads = append(heads, head{idx, raw, e})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rep.Checkpoint = cp
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("transparency: proofs: %w", err)
	}
	problem := func(format string, args ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, args...)) }
	// One snapshot of the database for both tables.
	err = pgx.BeginTxFunc(ctx, db.Pool(), pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select id, statement, coalesce(statement_sig, ''), coalesce(signer_cert, ''),
				coalesce(attestation, ''), coalesce(attestation_sig, ''), created_at
			from authorizations order by created_at, id`)
		if err != nil {
			return fmt.Errorf("transparency: authorizations: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id                                [16]byte
				statement, sig, cert, att, attSig []byte
				created                           time.Time
			)
			if err := rows.Scan(&id, &statement, &sig, &cert, &att, &attSig, &created); err != nil {
				return fmt.Errorf("transparency: authorizations: %w", err)
			}
			entry := authorizationRowEntry(statement, sig, cert, att, attSig, created)
			idx, ok := where[string(entry)]
			switch {
			case !ok && now.Sub(created) < grace:
				rep.Recent++
			case !ok:
				problem("authorization %s (stored %s) is not in the log of %d leaves", hex.EncodeToString(id[:]), created.UTC().Format(time.RFC3339), cp.Size)
			default:
				if err := ProveInclusion(ctx, pb, cp, idx, entry); err != nil {
					problem("authorization %s: %v", hex.EncodeToString(id[:]), err)
					continue
				}
				rep.Authorizations++
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("transparency: authorizations: %w", err)
		}
		chain, err := audit.Verify(ctx, tx, nil)
		var p audit.Problem
		switch {
		case errors.As(err, &p):
			problem("%v", p)
		case err != nil:
			return err
		}
		rep.AuditRows = chain.Rows
		// Rows no head in the log covers yet must be younger than grace:
		// a writer that stopped logging heads (or was made to) leaves the
		// rows after its last head deletable unseen.
		var covered int64
		for _, h := range heads {
			covered = max(covered, h.e.Seq)
		}
		var oldest *time.Time
		if err := tx.QueryRow(ctx, `select min(at) from audit_log where seq > $1`, covered).Scan(&oldest); err != nil {
			return fmt.Errorf("transparency: audit rows: %w", err)
		}
		if oldest != nil && now.Sub(*oldest) >= grace {
			problem("audit rows after row %d (the first of %s) are older than %s and no head in the log covers them: the writer does not log the audit chain's head", covered, oldest.UTC().Format(time.RFC3339), grace)
		}
		for _, h := range heads {
			if err := ProveInclusion(ctx, pb, cp, h.idx, h.raw); err != nil {
				problem("audit head at leaf %d: %v", h.idx, err)
				continue
			}
			if h.e.Seq < chain.First {
				rep.HeadsPruned++
				continue
			}
			var hash []byte
			err := tx.QueryRow(ctx, `select hash from audit_log where seq = $1`, h.e.Seq).Scan(&hash)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				problem("audit row %d, whose chain head the log holds at leaf %d, is gone: the audit log was truncated", h.e.Seq, h.idx)
			case err != nil:
				return fmt.Errorf("transparency: audit row %d: %w", h.e.Seq, err)
			case !bytes.Equal(hash, h.e.Hash[:]):
				problem("audit row %d's chain hash is %x, the log holds %x at leaf %d: the audit log was rewritten", h.e.Seq, hash, h.e.Hash, h.idx)
			default:
				rep.Heads++
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}
