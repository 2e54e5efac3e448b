package registrysync

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vouch-nl/vouch/internal/directory"
)

// mirrorColumns are the columns of registry_entries the sync writes, in
// COPY order.
var mirrorColumns = []string{"uzi_number", "big_number", "card_type", "role_code", "agb_code", "license_status",
	"valid_from", "valid_until", "cert_serial", "dn", "synced_at", "entry_uuid"}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func row(e directory.Entry, now time.Time) []any {
	return []any{e.UZI, nullStr(e.BIG), e.CardType, nullStr(e.Role), nullStr(e.AGB), e.License,
		nullTime(e.ValidFrom), nullTime(e.ValidUntil), nullStr(e.CertSerial), e.DN, now, nullStr(e.EntryUUID)}
}

// licenseState is what decides whether a card holder may vouch.
type licenseState struct {
	UZI        string
	Status     string
	ValidFrom  *time.Time
	ValidUntil *time.Time
	EntryUUID  string
}

func (s licenseState) mayVouch(now time.Time) bool {
	return s.Status == directory.LicenseActive &&
		(s.ValidFrom == nil || !now.Before(*s.ValidFrom)) &&
		(s.ValidUntil == nil || now.Before(*s.ValidUntil))
}

// transition is a license state that changed: old or new may be absent.
type transition struct {
	UZI      string
	Old, New *licenseState
	GoneAs   string // with New nil: why they left (StatusRemoved when empty)
}

// scanFunc starts a scan of the whole register: its pages, and a wait that
// ends the scan and returns the register's error, if it failed mid-scan.
type scanFunc func(ctx context.Context) (pages <-chan []directory.Entry, wait func() error)

// fullSwap builds registry_entries_next from a scan of the register. The
// mirror's indexes are made on the empty table first, so PostgreSQL keeps
// them while the COPY runs, in the time it waits for the register anyway.
// When a unique index finds a card holder listed more than once — the
// register contradicts itself about them, so neither entry is trusted — the
// table is made again without indexes from a second scan, those card holders
// are dropped, and the indexes built after. Until the caller commits,
// readers see the previous mirror, whole.
func fullSwap(ctx context.Context, tx pgx.Tx, scan scanFunc, skip func(dn string, err error), phase func(string)) (n int64, err error) {
	indexes, err := mirrorIndexes(ctx, tx)
	if err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `savepoint mirror_next`); err != nil {
		return 0, err
	}
	n, err = copyNext(ctx, tx, scan, indexes)
	if !isUniqueViolation(err) {
		if err == nil {
			phase("copied, indexed")
		}
		return n, err
	}
	phase("a card holder listed twice: copy again")
	if _, err := tx.Exec(ctx, `rollback to savepoint mirror_next`); err != nil {
		return 0, err
	}
	if n, err = copyNext(ctx, tx, scan, nil); err != nil {
		return 0, err
	}
	phase("copied")
	dropped, err := uniqueOrDrop(ctx, tx, "uzi_number", skip, indexes[0])
	if err != nil {
		return 0, err
	}
	n -= dropped
	// The unique index on entryUUID fails when the register gives two card
	// holders one entryUUID: like a UZI number listed twice, neither entry
	// is trusted, and the others are mirrored.
	if dropped, err = uniqueOrDrop(ctx, tx, "entry_uuid", skip, indexes[1:]...); err != nil {
		return 0, err
	}
	return n - dropped, nil
}

// mirrorIndexes are the statements that give registry_entries_next the
// mirror's primary key and then every other index, as the migrations defined
// them, under names that swapTables turns into the mirror's.
func mirrorIndexes(ctx context.Context, tx pgx.Tx) ([]string, error) {
	stmts := []string{`alter table registry_entries_next add constraint registry_entries_next_pkey primary key (uzi_number)`}
	defs, err := tx.Query(ctx, `select indexname, indexdef from pg_indexes
		where schemaname = current_schema() and tablename = 'registry_entries' and indexname <> 'registry_entries_pkey'
		order by indexname`)
	if err != nil {
		return nil, fmt.Errorf("read mirror indexes: %w", err)
	}
	defer defs.Close()
	for defs.Next() {
		var name, def string
		if err := defs.Scan(&name, &def); err != nil {
			return nil, err
		}
		stmts = append(stmts, nextIndex(name, def))
	}
	if err := defs.Err(); err != nil {
		return nil, fmt.Errorf("read mirror indexes: %w", err)
	}
	return stmts, nil
}

// nextIndex rewrites the definition of the mirror's index name into the
// same index of registry_entries_next, under the name swapTables turns back.
func nextIndex(name, def string) string {
	def = strings.Replace(def, " INDEX "+name+" ON ", " INDEX "+strings.Replace(name, "registry_entries", "registry_entries_next", 1)+" ON ", 1)
	return strings.Replace(def, ".registry_entries USING ", ".registry_entries_next USING ", 1)
}

// copyNext makes registry_entries_next with the indexes given and copies a
// scan of the register into it. The register's error, when the scan failed,
// wins over the COPY's: a COPY cut short by it is its consequence.
func copyNext(ctx context.Context, tx pgx.Tx, scan scanFunc, indexes []string) (int64, error) {
	if _, err := tx.Exec(ctx, `create table registry_entries_next (like registry_entries including all excluding indexes)`); err != nil {
		return 0, fmt.Errorf("create next mirror: %w", err)
	}
	for _, q := range indexes {
		if _, err := tx.Exec(ctx, q); err != nil {
			return 0, fmt.Errorf("index next mirror: %w", err)
		}
	}
	pages, wait := scan(ctx)
	// COPY in binary format, written here: pgx's generic CopyFrom boxes every
	// value and looks up an encode plan for it, which cost more than
	// reading the register. FREEZE: the table is new in this transaction,
	// so its rows can be written frozen and never need vacuuming for that.
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeCopyBinary(pw, pages)) }()
	tag, err := tx.Conn().PgConn().CopyFrom(ctx, pr,
		`copy registry_entries_next (`+strings.Join(copyColumns, ", ")+`) from stdin (format binary, freeze)`)
	pr.CloseWithError(errCopyEnded) // unblocks the writer when COPY failed first
	if serr := wait(); serr != nil {
		return 0, serr
	}
	if err != nil {
		return 0, fmt.Errorf("copy mirror: %w", err)
	}
	return tag.RowsAffected(), nil
}

// errCopyEnded stops the COPY's writer once the COPY is over.
var errCopyEnded = errors.New("registrysync: copy ended")

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// uniqueOrDrop runs stmts, which build the next mirror's indexes, inside a
// savepoint. When a unique index finds a value of column listed more than
// once — the register contradicts itself — it rolls back, drops every row
// holding such a value (dropDuplicates) and builds them again, once.
func uniqueOrDrop(ctx context.Context, tx pgx.Tx, column string, skip func(dn string, err error), stmts ...string) (dropped int64, err error) {
	build := func() error {
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	}
	if _, err := tx.Exec(ctx, `savepoint mirror_unique`); err != nil {
		return 0, err
	}
	err = build()
	if isUniqueViolation(err) {
		if _, err := tx.Exec(ctx, `rollback to savepoint mirror_unique`); err != nil {
			return 0, err
		}
		if dropped, err = dropDuplicates(ctx, tx, column, skip); err != nil {
			return 0, err
		}
		err = build()
	}
	if err != nil {
		return 0, fmt.Errorf("index next mirror: %w", err)
	}
	return dropped, nil
}

// listedTwiceError is why dropDuplicates left a card holder out.
type listedTwiceError struct {
	Column, UZI string
}

func (e *listedTwiceError) Error() string {
	return e.Column + " listed more than once in the register"
}

// dropDuplicates removes every card holder listed more than once.
func dropDuplicates(ctx context.Context, tx pgx.Tx, column string, skip func(dn string, err error)) (int64, error) {
	rows, err := tx.Query(ctx, `delete from registry_entries_next where `+column+` in
		(select `+column+` from registry_entries_next where `+column+` is not null group by `+column+` having count(*) > 1) returning dn, uzi_number`)
	if err != nil {
		return 0, fmt.Errorf("drop duplicates: %w", err)
	}
	defer rows.Close()
	var n int64
	for rows.Next() {
		var dn, uzi string
		if err := rows.Scan(&dn, &uzi); err != nil {
			return 0, err
		}
		n++
		skip(dn, &listedTwiceError{Column: column, UZI: uzi})
	}
	return n, rows.Err()
}

// swapTables puts registry_entries_next in the mirror's place and gives its
// indexes the mirror's names back, so every full sync leaves the same schema.
func swapTables(ctx context.Context, tx pgx.Tx) error {
	for _, q := range []string{
		`alter table registry_entries rename to registry_entries_prev`,
		`alter table registry_entries_next rename to registry_entries`,
		`drop table registry_entries_prev`,
		`do $$
		declare r record;
		begin
			for r in select indexname from pg_indexes
				where schemaname = current_schema() and tablename = 'registry_entries' and indexname like 'registry_entries_next%'
			loop
				execute format('alter index %I rename to %I', r.indexname, replace(r.indexname, 'registry_entries_next', 'registry_entries'));
			end loop;
		end $$`,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("swap mirror: %w", err)
		}
	}
	return nil
}

// fullTransitions calls fn with every card holder whose license state
// differs between the current mirror and registry_entries_next, a batch at
// a time through a cursor (fn writes the outbox in the same transaction): at
// a million card holders a first sync changes them all.
func fullTransitions(ctx context.Context, tx pgx.Tx, fn func(context.Context, transition) error) (int, error) {
	n := 0
	err := batches(ctx, tx, `
		select coalesce(n.uzi_number, o.uzi_number),
		       o.uzi_number is not null, o.license_status, o.valid_from, o.valid_until, o.entry_uuid::text,
		       n.uzi_number is not null, n.license_status, n.valid_from, n.valid_until
		from registry_entries_next n
		full join registry_entries o on o.uzi_number = n.uzi_number
		where n.uzi_number is null or o.uzi_number is null
		   or n.license_status is distinct from o.license_status
		   or n.valid_from is distinct from o.valid_from
		   or n.valid_until is distinct from o.valid_until`,
		func(rows pgx.CollectableRow) (transition, error) {
			var t transition
			var hasOld, hasNew bool
			var o, nw licenseState
			var oStatus, oUUID, nStatus *string
			if err := rows.Scan(&t.UZI, &hasOld, &oStatus, &o.ValidFrom, &o.ValidUntil, &oUUID, &hasNew, &nStatus, &nw.ValidFrom, &nw.ValidUntil); err != nil {
				return t, err
			}
			if hasOld {
				o.UZI, o.Status, o.EntryUUID = t.UZI, deref(oStatus), deref(oUUID)
				t.Old = &o
			}
			if hasNew {
				nw.UZI, nw.Status = t.UZI, deref(nStatus)
				t.New = &nw
			}
			return t, nil
		},
		func(batch []transition) error {
			for _, t := range batch {
				if err := fn(ctx, t); err != nil {
					return err
				}
				n++
			}
			return nil
		})
	if err != nil {
		return n, fmt.Errorf("compare mirrors: %w", err)
	}
	return n, nil
}

// firstTransitions calls fn with the card holders of registry_entries_next
// who may not vouch at now, each as new: what a first sync into an empty
// mirror announces. The query may only ever select more than that — fn's
// outbox decides again — never fewer.
func firstTransitions(ctx context.Context, tx pgx.Tx, now time.Time, fn func(context.Context, transition) error) error {
	err := batches(ctx, tx, `select uzi_number, license_status, valid_from, valid_until from registry_entries_next
		where license_status <> 'active' or valid_from > $1 or valid_until <= $1`,
		func(rows pgx.CollectableRow) (licenseState, error) {
			var st licenseState
			err := rows.Scan(&st.UZI, &st.Status, &st.ValidFrom, &st.ValidUntil)
			return st, err
		},
		func(batch []licenseState) error {
			for i := range batch {
				if err := fn(ctx, transition{UZI: batch[i].UZI, New: &batch[i]}); err != nil {
					return err
				}
			}
			return nil
		}, now)
	if err != nil {
		return fmt.Errorf("first mirror: %w", err)
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// states reads the mirror's license state of the given card holders.
func states(ctx context.Context, tx pgx.Tx, where string, args ...any) (map[string]licenseState, error) {
	rows, err := tx.Query(ctx, `select uzi_number, license_status, valid_from, valid_until, entry_uuid::text
		from registry_entries where `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read mirror: %w", err)
	}
	defer rows.Close()
	out := map[string]licenseState{}
	for rows.Next() {
		var s licenseState
		var uuid *string
		if err := rows.Scan(&s.UZI, &s.Status, &s.ValidFrom, &s.ValidUntil, &uuid); err != nil {
			return nil, err
		}
		if uuid != nil {
			s.EntryUUID = *uuid
		}
		out[s.UZI] = s
	}
	return out, rows.Err()
}

// notPresent returns the mirror rows whose entryUUID is not among present:
// the entries a present phase says are gone. The UUIDs go through a
// temporary table, as there may be a million of them.
func notPresent(ctx context.Context, tx pgx.Tx, present []string) (map[string]licenseState, error) {
	if _, err := tx.Exec(ctx, `create temporary table present_uuids (u uuid primary key) on commit drop`); err != nil {
		return nil, fmt.Errorf("present set: %w", err)
	}
	seen := make(map[string]struct{}, len(present))
	rows := make([][]any, 0, len(present))
	for _, p := range present {
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		if u, ok := uuidBytes(p); ok {
			rows = append(rows, []any{u})
		}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"present_uuids"}, []string{"u"}, pgx.CopyFromRows(rows)); err != nil {
		return nil, fmt.Errorf("present set: %w", err)
	}
	return states(ctx, tx, `entry_uuid is not null and not exists (select 1 from present_uuids p where p.u = registry_entries.entry_uuid)`)
}

// upsert writes changed entries into the mirror.
func upsert(ctx context.Context, tx pgx.Tx, entries []directory.Entry, now time.Time) error {
	b := &pgx.Batch{}
	for _, e := range entries {
		b.Queue(`insert into registry_entries (uzi_number, big_number, card_type, role_code, agb_code, license_status,
				valid_from, valid_until, cert_serial, dn, synced_at, entry_uuid)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			on conflict (uzi_number) do update set big_number = excluded.big_number, card_type = excluded.card_type,
				role_code = excluded.role_code, agb_code = excluded.agb_code, license_status = excluded.license_status,
				valid_from = excluded.valid_from, valid_until = excluded.valid_until, cert_serial = excluded.cert_serial,
				dn = excluded.dn, synced_at = excluded.synced_at, entry_uuid = excluded.entry_uuid`, row(e, now)...)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("upsert mirror: %w", err)
	}
	return nil
}

// cookieTx reads the stored cookie inside a transaction.
func cookieTx(ctx context.Context, tx pgx.Tx) ([]byte, error) {
	var cookie []byte
	err := tx.QueryRow(ctx, `select cookie from registry_sync_state where id`).Scan(&cookie)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load sync state: %w", err)
	}
	return cookie, nil
}

// saveState records where the next incremental sync starts and that the
// mirror equals the register as of now.
func saveState(ctx context.Context, tx pgx.Tx, cookie []byte, now time.Time) error {
	_, err := tx.Exec(ctx, `insert into registry_sync_state (id, cookie, synced_at) values (true, $1, $2)
		on conflict (id) do update set cookie = excluded.cookie, synced_at = excluded.synced_at`, cookie, now)
	if err != nil {
		return fmt.Errorf("save sync state: %w", err)
	}
	return nil
}

// loadState returns the stored cookie and time of the last good sync.
func loadState(ctx context.Context, pool *pgxpool.Pool) (cookie []byte, syncedAt time.Time, err error) {
	var at *time.Time
	err = pool.QueryRow(ctx, `select cookie, synced_at from registry_sync_state where id`).Scan(&cookie, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("load sync state: %w", err)
	}
	if at != nil {
		syncedAt = *at
	}
	return cookie, syncedAt, nil
}

// startRun and finishRun keep the record of every run, outside the sync's
// transaction so a failed run is recorded too.
func startRun(ctx context.Context, pool *pgxpool.Pool, kind string, at time.Time) (int64, error) {
	var id int64
	err := pool.QueryRow(ctx, `insert into registry_sync_runs (kind, started_at) values ($1, $2) returning id`, kind, at).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record run: %w", err)
	}
	return id, nil
}

// markAbandoned closes the records of runs that never finished: a run
// killed with -9 or a machine that lost power leaves its row open, and an
// open row reads as "still running" forever. Called holding the sync's lock
// before this instance starts a run, so no run is writing; one that merely
// had not reached the lock yet records its own end over this.
func markAbandoned(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `update registry_sync_runs set finished_at = now(),
			error = 'abandoned: the run ended without recording its end (killed, or the machine stopped)'
		where finished_at is null`)
	if err != nil {
		return fmt.Errorf("record abandoned runs: %w", err)
	}
	return nil
}

func finishRun(ctx context.Context, pool *pgxpool.Pool, id int64, r Result, runErr error, at time.Time) error {
	var msg *string
	if runErr != nil {
		s := runErr.Error()
		msg = &s
	}
	_, err := pool.Exec(ctx, `update registry_sync_runs set finished_at = $2, entries = $3, changes = $4, skipped = $5, error = $6
		where id = $1`, id, at, r.Entries, r.Changes, r.Skipped, msg)
	if err != nil {
		return fmt.Errorf("record run end: %w", err)
	}
	return nil
}

// copyColumns are the columns the full sync's COPY writes; synced_at takes
// its default, the transaction's time.
var copyColumns = []string{"uzi_number", "big_number", "card_type", "role_code", "agb_code", "license_status",
	"valid_from", "valid_until", "cert_serial", "dn", "entry_uuid"}

// pgEpoch is where PostgreSQL's binary timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// writeCopyBinary writes the pages in COPY's binary format: PostgreSQL then
// parses nothing, which matters at a million rows.
func writeCopyBinary(w io.Writer, pages <-chan []directory.Entry) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	bw.WriteString("PGCOPY\n\xff\r\n\x00")
	bw.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0}) // flags, header extension length
	var b []byte
	str := func(v string) {
		if v == "" {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff) // NULL
			return
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	ts := func(t time.Time) {
		if t.IsZero() {
			b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			return
		}
		b = binary.BigEndian.AppendUint32(b, 8)
		// Not t.Sub(pgEpoch): a Duration saturates at 292 years, and
		// registers write "no end" as the year 9999.
		b = binary.BigEndian.AppendUint64(b, uint64((t.Unix()-pgEpoch.Unix())*1e6+int64(t.Nanosecond()/1e3)))
	}
	for page := range pages {
		for _, e := range page {
			b = b[:0]
			b = binary.BigEndian.AppendUint16(b, uint16(len(copyColumns)))
			str(e.UZI)
			str(e.BIG)
			str(e.CardType)
			str(e.Role)
			str(e.AGB)
			str(e.License)
			ts(e.ValidFrom)
			ts(e.ValidUntil)
			str(e.CertSerial)
			str(e.DN)
			if u, ok := uuidBytes(e.EntryUUID); ok {
				b = binary.BigEndian.AppendUint32(b, 16)
				b = append(b, u[:]...)
			} else {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
			}
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
	}
	bw.Write([]byte{0xff, 0xff}) // trailer
	return bw.Flush()
}

// uuidBytes decodes the text form that directory checked.
func uuidBytes(s string) (u [16]byte, ok bool) {
	if len(s) != 36 {
		return u, false
	}
	h := strings.ReplaceAll(s, "-", "")
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, false
	}
	return u, true
}
