package registrysync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/directory"
)

// The license bucket follows the mirror, never leads it. A sync writes the
// license states that changed to license_outbox in the transaction that
// changes the mirror; after commit, drain publishes the outbox in order and
// deletes what the bus acknowledged. A crash anywhere leaves either nothing
// (before commit) or rows that the next run publishes (after): republishing
// is harmless. Whatever else goes wrong with the bucket — deleted, lost with
// the bus's store, written by hand — reconcile compares all of it with the
// mirror and corrects it through the same outbox: when the loop starts,
// at the first run into a bucket other than the one last compared (new, or
// created again by whichever role), and once the last comparison is older
// than the full-sync interval (a day by default).

// outbox collects a transaction's license changes and writes them to
// license_outbox with COPY, a batch at a time.
type outbox struct {
	tx  pgx.Tx
	now time.Time
	// announceNew publishes card holders who appear able to vouch too: the
	// bucket may still hold an old refusal for them. Only a first sync into
	// an empty mirror may leave them out (reconcile corrects the bucket).
	announceNew bool
	rows        [][]any
}

const outboxBatch = 1024

func (s *Syncer) outbox(tx pgx.Tx, now time.Time, announceNew bool) *outbox {
	return &outbox{tx: tx, now: now, announceNew: announceNew}
}

// record is what the bucket should say about a card holder after t.
func (t transition) record(now time.Time) LicenseRecord {
	if t.New == nil {
		status := t.GoneAs
		if status == "" {
			status = StatusRemoved
		}
		return LicenseRecord{Status: status, ChangedAt: now}
	}
	return LicenseRecord{Status: t.New.Status, MayVouch: t.New.mayVouch(now), ValidFrom: t.New.ValidFrom,
		ValidUntil: t.New.ValidUntil, ChangedAt: now}
}

func (o *outbox) add(ctx context.Context, t transition) error {
	rec := t.record(o.now)
	if t.Old == nil && rec.MayVouch && !o.announceNew {
		return nil
	}
	return o.put(ctx, t.UZI, rec)
}

func (o *outbox) put(ctx context.Context, uzi string, rec LicenseRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	o.rows = append(o.rows, []any{uzi, b})
	if len(o.rows) >= outboxBatch {
		return o.flush(ctx)
	}
	return nil
}

// flush writes what was collected; the caller's commit makes it count.
func (o *outbox) flush(ctx context.Context) error {
	if len(o.rows) == 0 {
		return nil
	}
	if _, err := o.tx.CopyFrom(ctx, pgx.Identifier{"license_outbox"}, []string{"uzi_number", "record"}, pgx.CopyFromRows(o.rows)); err != nil {
		return fmt.Errorf("registrysync: write license outbox: %w", err)
	}
	o.rows = o.rows[:0]
	return nil
}

// Reconcile publishes what the outbox holds and compares the whole bucket
// with the mirror, correcting every difference: what an operator runs when
// the bucket is in doubt (`vouch registry-sync -once -reconcile`). Unlike
// the sync's own settling it does not pass when another instance holds the
// lock: it returns ErrBusy, and the operator runs it again.
func (s *Syncer) Reconcile(ctx context.Context) error {
	return s.settleMode(ctx, true, true)
}

// ensureBucket creates the bucket again if it is gone; a bucket created
// again is empty, so a reconciliation becomes due, and stays due until one
// has run.
func (s *Syncer) ensureBucket(ctx context.Context) error {
	created, err := s.bucket.Ensure(ctx)
	if err != nil {
		return fmt.Errorf("registrysync: license bucket: %w", err)
	}
	if created {
		s.log.Warn("the license bucket was missing and has been created again; filling it from the mirror")
		s.reconciled = false
	}
	return nil
}

// settle brings the bucket up to the mirror: it creates the bucket again if
// it is gone, publishes the outbox and, when asked, at this process's first
// call, or when the bucket was created again, reconciles the whole bucket.
// When another instance holds the lock, what it could not do stays due.
func (s *Syncer) settle(ctx context.Context, reconcile bool) error {
	return s.settleMode(ctx, reconcile, false)
}

func (s *Syncer) settleMode(ctx context.Context, reconcile, strict bool) error {
	if err := s.ensureBucket(ctx); err != nil {
		return err
	}
	err := s.withLock(ctx, func(tx pgx.Tx) error { return markAbandoned(ctx, tx) })
	if err != nil && (strict || !errors.Is(err, ErrBusy)) {
		return err
	}
	if err := s.drain(ctx, strict); err != nil {
		return err
	}
	if !reconcile && s.reconciled {
		due, err := s.reconcileDue(ctx)
		if err != nil || !due {
			return err
		}
	}
	start := s.now()
	n, err := s.reconcile(ctx)
	s.log.Debug("license bucket: compared with the mirror", "seconds", s.now().Sub(start).Seconds(), "err", err)
	if errors.Is(err, ErrBusy) && !strict {
		// The instance holding the lock may not know the bucket was lost:
		// this one tries again at its next run.
		s.reconciled = false
		return nil
	}
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Warn("license bucket differed from the mirror; corrected", "records", n)
	}
	s.reconciled = true
	return s.drain(ctx, strict)
}

// drain publishes license_outbox in order, a batch per transaction, and
// deletes each batch once the bus acknowledged it. Unless strict, another
// instance holding the lock is left to do it after its commit.
func (s *Syncer) drain(ctx context.Context, strict bool) error {
	start, total := s.now(), 0
	for {
		var n int
		err := s.withLock(ctx, func(tx pgx.Tx) (err error) {
			n, err = s.drainBatch(ctx, tx)
			return err
		})
		total += n
		if errors.Is(err, ErrBusy) && !strict {
			return nil
		}
		if err != nil || n < outboxBatch {
			if total > 0 {
				s.log.Debug("license bucket: outbox published", "records", total, "seconds", s.now().Sub(start).Seconds())
			}
			return err
		}
	}
}

func (s *Syncer) drainBatch(ctx context.Context, tx pgx.Tx) (int, error) {
	rows, err := tx.Query(ctx, `select seq, uzi_number, record from license_outbox order by seq limit $1`, outboxBatch)
	if err != nil {
		return 0, fmt.Errorf("registrysync: read license outbox: %w", err)
	}
	var last int64
	var entries []bus.KeyValue
	for rows.Next() {
		var e bus.KeyValue
		if err := rows.Scan(&last, &e.Key, &e.Value); err != nil {
			rows.Close()
			return 0, fmt.Errorf("registrysync: read license outbox: %w", err)
		}
		entries = append(entries, e)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("registrysync: read license outbox: %w", err)
	}
	if len(entries) == 0 {
		return 0, nil
	}
	if err := s.step(stepCommitted); err != nil {
		return 0, err
	}
	if err := s.bucket.PutAll(ctx, entries); err != nil {
		return 0, fmt.Errorf("registrysync: license bucket: %w", err)
	}
	s.metrics.changes.Add(float64(len(entries)))
	if err := s.step(stepPublished); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `delete from license_outbox where seq <= $1`, last); err != nil {
		return 0, fmt.Errorf("registrysync: delete from license outbox: %w", err)
	}
	return len(entries), nil
}

// reconcile compares every record in the bucket with the mirror and writes
// a correction to the outbox for each that differs: a card holder in the
// mirror whose record is missing (unless they may vouch: an absent key
// means "as attested") or says something else, and a key of someone no
// longer in the mirror that says they may vouch. It returns how many it
// corrected; the caller drains them.
func (s *Syncer) reconcile(ctx context.Context) (int, error) {
	now := s.now()
	n := 0
	err := s.withLock(ctx, func(tx pgx.Tx) error {
		// Under the lock nobody else writes the outbox or the bucket; what
		// is still in the outbox goes out first, or the comparison would
		// correct the bucket towards states older than the outbox's.
		for {
			k, err := s.drainBatch(ctx, tx)
			if err != nil {
				return err
			}
			if k < outboxBatch {
				break
			}
		}
		// The bucket's identity before its records: a bucket replaced while
		// it is read is not the one this comparison is recorded for.
		bucketID, err := s.bucket.Identity(ctx)
		if err != nil {
			return fmt.Errorf("registrysync: license bucket: %w", err)
		}
		have, err := s.bucketStates(ctx)
		if err != nil {
			return err
		}
		// Only two kinds of card holder can need a correction: those who
		// may not vouch (their refusal must be there) and those the bucket
		// has a record of. Who may vouch and has none is as attested; at a
		// million card holders, most are, and are not read.
		if _, err := tx.Exec(ctx, `create temporary table reconcile_keys (uzi_number text primary key) on commit drop`); err != nil {
			return fmt.Errorf("registrysync: bucket keys: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"reconcile_keys"}, []string{"uzi_number"}, pgx.CopyFromFunc(keysOf(have))); err != nil {
			return fmt.Errorf("registrysync: bucket keys: %w", err)
		}
		out := s.outbox(tx, now, true)
		err = batches(ctx, tx, `select uzi_number, license_status, valid_from, valid_until from registry_entries r
			where license_status <> 'active' or valid_from > $1 or valid_until <= $1
			   or exists (select 1 from reconcile_keys k where k.uzi_number = r.uzi_number)`,
			func(r pgx.CollectableRow) (licenseState, error) {
				var st licenseState
				err := r.Scan(&st.UZI, &st.Status, &st.ValidFrom, &st.ValidUntil)
				return st, err
			},
			func(batch []licenseState) error {
				for _, st := range batch {
					want := transition{UZI: st.UZI, New: &st}.record(now)
					b, ok := have[st.UZI]
					delete(have, st.UZI)
					if !ok && want.MayVouch || ok && b == compactRecord(want) {
						continue
					}
					n++
					if err := out.put(ctx, st.UZI, want); err != nil {
						return err
					}
				}
				return out.flush(ctx)
			}, now)
		if err != nil {
			return err
		}
		for uzi, b := range have {
			if b.readable && !b.mayVouch && b.status != "" {
				continue // removed, invalid or duplicate: still true
			}
			n++
			if err := out.put(ctx, uzi, LicenseRecord{Status: StatusRemoved, ChangedAt: now}); err != nil {
				return err
			}
		}
		if err := out.flush(ctx); err != nil {
			return err
		}
		if err := recordReconciled(ctx, tx, now, bucketID); err != nil {
			return err
		}
		return s.step(stepOutboxWritten)
	})
	return n, err
}

// recordReconciled notes that the bucket named by bucketID (its Identity)
// equals the mirror as of at, once the outbox written with it is published.
func recordReconciled(ctx context.Context, tx pgx.Tx, at time.Time, bucketID string) error {
	if _, err := tx.Exec(ctx, `insert into registry_sync_state (id, reconciled_at, reconciled_bucket) values (true, $1, $2)
		on conflict (id) do update set reconciled_at = excluded.reconciled_at, reconciled_bucket = excluded.reconciled_bucket`,
		at, bucketID); err != nil {
		return fmt.Errorf("registrysync: record reconciliation: %w", err)
	}
	return nil
}

// reconcileDue reports whether the bucket as it is now was never compared
// whole with the mirror — a bucket configured anew, or deleted and created
// again by any role, is another bucket — or last longer ago than the
// full-sync interval.
func (s *Syncer) reconcileDue(ctx context.Context) (bool, error) {
	var at *time.Time
	var of *string
	err := s.db.Pool().QueryRow(ctx, `select reconciled_at, reconciled_bucket from registry_sync_state where id`).Scan(&at, &of)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, fmt.Errorf("registrysync: last reconciliation: %w", err)
	}
	if at == nil || of == nil || s.now().Sub(*at) >= s.cfg.FullInterval {
		return true, nil
	}
	id, err := s.bucket.Identity(ctx)
	if err != nil {
		return false, fmt.Errorf("registrysync: license bucket: %w", err)
	}
	if id != *of {
		s.log.Warn("the license bucket is not the one last compared with the mirror; filling it from the mirror", "bucket", id, "compared", *of)
		return true, nil
	}
	return false, nil
}

// bucketRecord is what a bucket record says, without when it was written:
// what reconcile compares, held for every key of the bucket, so small.
type bucketRecord struct {
	readable    bool // the value is a LicenseRecord
	status      string
	mayVouch    bool
	from, until int64 // Unix microseconds; 0 for none
}

func compactRecord(r LicenseRecord) bucketRecord {
	micros := func(t *time.Time) int64 {
		if t == nil {
			return 0
		}
		return t.UnixMicro()
	}
	return bucketRecord{readable: true, status: internStatus(r.Status), mayVouch: r.MayVouch,
		from: micros(r.ValidFrom), until: micros(r.ValidUntil)}
}

// internStatus shares the strings of the known statuses: a bucket of a
// million refusals would otherwise hold a million copies of "suspended".
func internStatus(s string) string {
	for _, known := range []string{directory.LicenseActive, directory.LicenseSuspended, directory.LicenseRevoked,
		directory.LicenseDeceased, StatusRemoved, StatusInvalid, StatusDuplicate} {
		if s == known {
			return known
		}
	}
	return s
}

// keysOf feeds COPY the keys of m, one row each.
func keysOf(m map[string]bucketRecord) func() ([]any, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return func() ([]any, error) {
		if len(keys) == 0 {
			return nil, nil
		}
		k := keys[0]
		keys = keys[1:]
		return []any{k}, nil
	}
}

// bucketStates reads the whole bucket, a batch at a time, into what
// reconcile compares.
func (s *Syncer) bucketStates(ctx context.Context) (map[string]bucketRecord, error) {
	have := map[string]bucketRecord{}
	err := s.bucket.Each(ctx, func(key string, value []byte) error {
		var rec LicenseRecord
		if json.Unmarshal(value, &rec) != nil {
			have[key] = bucketRecord{}
			return nil
		}
		have[key] = compactRecord(rec)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registrysync: license bucket: %w", err)
	}
	return have, nil
}

// batches runs query (with args) through a cursor and hands fn its rows a batch at a
// time: the rows of a plain query hold the connection, and fn must be able
// to write in the same transaction; memory stays flat at any size.
func batches[T any](ctx context.Context, tx pgx.Tx, query string, scan func(pgx.CollectableRow) (T, error), fn func([]T) error, args ...any) error {
	// One cursor name per query: pgx caches the fetch's statement with the
	// columns of the first cursor it read.
	h := fnv.New64a()
	h.Write([]byte(query))
	cursor := fmt.Sprintf("vouch_batches_%x", h.Sum64())
	// A cursor is planned for its first rows unless told otherwise; these
	// are read to the end.
	if _, err := tx.Exec(ctx, `set local cursor_tuple_fraction = 1`); err != nil {
		return fmt.Errorf("registrysync: cursor: %w", err)
	}
	if _, err := tx.Exec(ctx, `declare `+cursor+` no scroll cursor for `+query, args...); err != nil {
		return fmt.Errorf("registrysync: cursor: %w", err)
	}
	for {
		rows, err := tx.Query(ctx, fmt.Sprintf(`fetch %d from %s`, outboxBatch, cursor))
		if err != nil {
			return fmt.Errorf("registrysync: fetch: %w", err)
		}
		batch, err := pgx.CollectRows(rows, scan)
		if err != nil {
			return fmt.Errorf("registrysync: fetch: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		if err := fn(batch); err != nil {
			return err
		}
	}
	_, err := tx.Exec(ctx, `close `+cursor)
	return err
}
