package registrysync

// The fast layer: the package's rules as pure functions, and what it does
// with the license bucket through a fake of LicenseBucket. It needs neither
// slapd, nor PostgreSQL, nor NATS, so a mutation run
// (`gremlins unleash --tags mutation ./internal/registrysync`, which leaves
// out the tests of the real parts) finishes in minutes. The tests of the
// real parts stay the judge of the whole.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/directory"
)

func TestLeavingRule(t *testing.T) {
	t.Parallel()
	const uuidA, uuidB = "0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	l := newLeaving()
	l.skipped(&listedTwiceError{Column: "uzi_number", UZI: "900000004"})
	l.skipped(fmt.Errorf("wrapped: %w", &directory.EntryError{Attribute: "vouchRoleCode", Problem: "bad", EntryUUID: uuidA}))
	l.skipped(&directory.EntryError{Attribute: "dn", Problem: "bad"}) // no entryUUID: ties to nobody
	l.skipped(errors.New("something else"))
	l.unreadable("")
	for _, tt := range []struct {
		st   licenseState
		want string
	}{
		{licenseState{UZI: "900000004"}, StatusDuplicate},
		{licenseState{UZI: "900000004", EntryUUID: uuidA}, StatusDuplicate}, // listed twice wins
		{licenseState{UZI: "900000001", EntryUUID: uuidA}, StatusInvalid},
		{licenseState{UZI: "900000001", EntryUUID: uuidB}, StatusRemoved},
		{licenseState{UZI: "900000001"}, StatusRemoved}, // "" was never noted
	} {
		if got := l.why(tt.st); got != tt.want {
			t.Errorf("why(%+v) = %s, want %s", tt.st, got, tt.want)
		}
	}
	l.listedTwice("900000002")
	if got := l.why(licenseState{UZI: "900000002"}); got != StatusDuplicate {
		t.Errorf("listedTwice: %s", got)
	}
	if got := (&listedTwiceError{Column: "entry_uuid", UZI: "9"}).Error(); got != "entry_uuid listed more than once in the register" {
		t.Errorf("listedTwiceError: %q", got)
	}
}

func TestRecordAndMayVouch(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	before, after := now.Add(-time.Microsecond), now.Add(time.Microsecond)
	for _, tt := range []struct {
		name string
		st   licenseState
		may  bool
	}{
		{"active", licenseState{Status: "active"}, true},
		{"suspended", licenseState{Status: "suspended"}, false},
		{"valid from now", licenseState{Status: "active", ValidFrom: &now}, true},
		{"valid from later", licenseState{Status: "active", ValidFrom: &after}, false},
		{"valid from before", licenseState{Status: "active", ValidFrom: &before}, true},
		{"valid until now", licenseState{Status: "active", ValidUntil: &now}, false},
		{"valid until later", licenseState{Status: "active", ValidUntil: &after}, true},
		{"valid until before", licenseState{Status: "active", ValidUntil: &before}, false},
		{"suspended in its validity", licenseState{Status: "suspended", ValidFrom: &before, ValidUntil: &after}, false},
	} {
		st := tt.st
		st.UZI = "900000001"
		rec := transition{UZI: st.UZI, New: &st}.record(now)
		want := LicenseRecord{Status: st.Status, MayVouch: tt.may, ValidFrom: st.ValidFrom, ValidUntil: st.ValidUntil, ChangedAt: now}
		if fmt.Sprint(rec) != fmt.Sprint(want) {
			t.Errorf("%s: %+v, want %+v", tt.name, rec, want)
		}
	}
	for gone, want := range map[string]string{"": StatusRemoved, StatusInvalid: StatusInvalid, StatusDuplicate: StatusDuplicate} {
		old := licenseState{UZI: "900000001", Status: "active"}
		rec := transition{UZI: old.UZI, Old: &old, GoneAs: gone}.record(now)
		if rec != (LicenseRecord{Status: want, ChangedAt: now}) {
			t.Errorf("left as %q: %+v", gone, rec)
		}
	}
}

func TestOutboxAdd(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	active, suspended := licenseState{UZI: "1", Status: "active"}, licenseState{UZI: "2", Status: "suspended"}
	for _, tt := range []struct {
		name        string
		announceNew bool
		t           transition
		published   bool
	}{
		{"new who may vouch, first sync", false, transition{UZI: "1", New: &active}, false},
		{"new who may vouch", true, transition{UZI: "1", New: &active}, true},
		{"new who may not vouch, first sync", false, transition{UZI: "2", New: &suspended}, true},
		{"changed to may vouch, first sync", false, transition{UZI: "1", Old: &suspended, New: &active}, true},
		{"left", false, transition{UZI: "2", Old: &suspended}, true},
	} {
		o := (&Syncer{}).outbox(nil, now, tt.announceNew)
		if err := o.add(context.Background(), tt.t); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := len(o.rows) == 1; got != tt.published {
			t.Errorf("%s: %d rows, want published %v", tt.name, len(o.rows), tt.published)
			continue
		}
		if !tt.published {
			continue
		}
		var rec LicenseRecord
		if o.rows[0][0] != tt.t.UZI || json.Unmarshal(o.rows[0][1].([]byte), &rec) != nil || rec != tt.t.record(now) {
			t.Errorf("%s: row %q", tt.name, o.rows[0])
		}
	}
	// Nothing collected, nothing written: flush needs no transaction.
	if err := (&outbox{}).flush(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestCompactRecord(t *testing.T) {
	t.Parallel()
	from := time.Date(2020, 1, 2, 3, 4, 5, 6000, time.UTC)
	until := time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	got := compactRecord(LicenseRecord{Status: string([]byte("suspended")), MayVouch: true, ValidFrom: &from, ValidUntil: &until, ChangedAt: time.Now()})
	want := bucketRecord{readable: true, status: "suspended", mayVouch: true, from: from.UnixMicro(), until: until.UnixMicro()}
	if got != want {
		t.Errorf("%+v, want %+v", got, want)
	}
	if got := compactRecord(LicenseRecord{Status: "active"}); got != (bucketRecord{readable: true, status: "active"}) {
		t.Errorf("no validity: %+v", got)
	}
	// Known statuses share one string; others are kept as they are.
	for _, s := range []string{directory.LicenseActive, directory.LicenseSuspended, directory.LicenseRevoked,
		directory.LicenseDeceased, StatusRemoved, StatusInvalid, StatusDuplicate} {
		copied := string([]byte(s))
		if got := internStatus(copied); got != s || unsafe.StringData(got) != unsafe.StringData(s) {
			t.Errorf("internStatus(%q) not shared", s)
		}
	}
	if got := internStatus("paused"); got != "paused" {
		t.Errorf("internStatus(paused) = %q", got)
	}
}

func TestKeysOf(t *testing.T) {
	t.Parallel()
	next := keysOf(map[string]bucketRecord{"a": {}, "b": {}, "c": {}})
	seen := map[string]int{}
	for {
		row, err := next()
		if err != nil {
			t.Fatal(err)
		}
		if row == nil {
			break
		}
		if len(row) != 1 {
			t.Fatalf("row %v", row)
		}
		seen[row[0].(string)]++
	}
	if fmt.Sprint(seen) != "map[a:1 b:1 c:1]" {
		t.Errorf("keys fed: %v", seen)
	}
	if row, err := keysOf(nil)(); row != nil || err != nil {
		t.Errorf("no keys: %v, %v", row, err)
	}
	k := keys(map[string]int{"x": 1, "y": 2})
	if len(k) != 2 || k[0] == k[1] || (k[0] != "x" && k[0] != "y") || (k[1] != "x" && k[1] != "y") {
		t.Errorf("keys: %v", k)
	}
}

// fakeBucket is LicenseBucket in memory.
type fakeBucket struct {
	values  map[string][]byte
	order   []string
	created bool
	err     error
	id      string
}

func (b *fakeBucket) Ensure(context.Context) (bool, error) { return b.created, b.err }
func (b *fakeBucket) PutAll(_ context.Context, entries []bus.KeyValue) error {
	if b.err != nil {
		return b.err
	}
	for _, e := range entries {
		if _, ok := b.values[e.Key]; !ok {
			b.order = append(b.order, e.Key)
		}
		b.values[e.Key] = e.Value
	}
	return nil
}
func (b *fakeBucket) Each(_ context.Context, fn func(string, []byte) error) error {
	if b.err != nil {
		return b.err
	}
	for _, k := range b.order {
		if err := fn(k, b.values[k]); err != nil {
			return err
		}
	}
	return nil
}
func (b *fakeBucket) Empty(context.Context) (bool, error)      { return len(b.values) == 0, b.err }
func (b *fakeBucket) Identity(context.Context) (string, error) { return b.id, b.err }

var _ LicenseBucket = (*fakeBucket)(nil)

func TestBucketStates(t *testing.T) {
	t.Parallel()
	b := &fakeBucket{values: map[string][]byte{}}
	rec, _ := json.Marshal(LicenseRecord{Status: "suspended", ChangedAt: time.Now()})
	b.PutAll(context.Background(), []bus.KeyValue{{Key: "900000024", Value: rec}, {Key: "900000003", Value: []byte("{not json")}})
	s := &Syncer{bucket: b}
	have, err := s.bucketStates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(have) != 2 || have["900000024"] != (bucketRecord{readable: true, status: "suspended"}) || have["900000003"] != (bucketRecord{}) {
		t.Errorf("states %+v", have)
	}
	b.err = errors.New("bus away")
	if _, err := s.bucketStates(context.Background()); !errors.Is(err, b.err) || !strings.HasPrefix(err.Error(), "registrysync: license bucket: ") {
		t.Errorf("bus away: %v", err)
	}
}

func TestEnsureBucket(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		created, reconciled bool
	}{{false, true}, {true, false}} {
		s := &Syncer{bucket: &fakeBucket{created: tt.created}, log: log, reconciled: true}
		if err := s.ensureBucket(context.Background()); err != nil || s.reconciled != tt.reconciled {
			t.Errorf("created %v: %v, reconciled %v", tt.created, err, s.reconciled)
		}
	}
	away := errors.New("bus away")
	s := &Syncer{bucket: &fakeBucket{err: away}, log: log, reconciled: true}
	if err := s.ensureBucket(context.Background()); !errors.Is(err, away) || !s.reconciled {
		t.Errorf("bus away: %v, reconciled %v", err, s.reconciled)
	}
}

func TestShrinkRule(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		maxShrink      float64
		accept         bool
		leaving, total int
		beyond         bool
	}{
		{0.1, false, 10, 100, false},
		{0.1, false, 11, 100, true},
		{0.1, false, 99, 99, false}, // a small mirror is not guarded
		{0.1, false, 100, 100, true},
		{0.1, true, 100, 100, false},
		{1, false, 100, 100, false},
		{1, false, 100, 1000, false},
		{0.999, false, 100, 100, true},
		{0, false, 1, 1000, true},
		{0, false, 0, 1000, false},
	} {
		s := &Syncer{cfg: Config{MaxShrink: tt.maxShrink}, acceptShrink: tt.accept}
		if got := s.beyondShrink(tt.leaving, tt.total); got != tt.beyond {
			t.Errorf("%+v: beyond %v", tt, got)
		}
	}
	// Nothing leaving, the guard off or accepted: no need to count.
	for _, s := range []*Syncer{{cfg: Config{MaxShrink: 0.1}}, {cfg: Config{MaxShrink: 1}}, {cfg: Config{MaxShrink: 0.1}, acceptShrink: true}} {
		removed := 5
		if s.cfg.MaxShrink == 0.1 && !s.acceptShrink {
			removed = 0
		}
		if err := s.checkShrink(context.Background(), nil, removed); err != nil {
			t.Errorf("%+v: %v", s.cfg, err)
		}
	}
}

func TestSmallHelpers(t *testing.T) {
	t.Parallel()
	now := time.Now()
	later := now.Add(time.Second)
	if nullStr("") != nil || nullStr("x") != "x" || nullTime(time.Time{}) != nil || nullTime(now) != now {
		t.Error("null helpers")
	}
	if timePtr(time.Time{}) != nil || *timePtr(now) != now {
		t.Error("timePtr")
	}
	for _, tt := range []struct {
		a, b *time.Time
		eq   bool
	}{{nil, nil, true}, {&now, nil, false}, {nil, &now, false}, {&now, &now, true}, {&now, &later, false}} {
		if eqTime(tt.a, tt.b) != tt.eq {
			t.Errorf("eqTime(%v, %v)", tt.a, tt.b)
		}
	}
	if deref(nil) != "" || deref(new(string)) != "" {
		t.Error("deref")
	}
	s := "x"
	if deref(&s) != "x" {
		t.Error("deref")
	}
	e := directory.Entry{UZI: "900000001", CardType: "Z", License: "active", DN: "dn", EntryUUID: "u"}
	r := row(e, now)
	if len(r) != len(mirrorColumns) || r[0] != "900000001" || r[1] != nil || r[2] != "Z" || r[3] != nil || r[5] != "active" ||
		r[6] != nil || r[9] != "dn" || r[10] != now || r[11] != "u" {
		t.Errorf("row %v", r)
	}
	if !isUniqueViolation(fmt.Errorf("x: %w", &pgconn.PgError{Code: "23505"})) || isUniqueViolation(&pgconn.PgError{Code: "23503"}) || isUniqueViolation(errors.New("23505")) {
		t.Error("isUniqueViolation")
	}
	if u, ok := uuidBytes("0f8fad5b-d9cb-469f-a165-70867728950e"); !ok || u[0] != 0x0f || u[15] != 0x0e {
		t.Errorf("uuidBytes: %x %v", u, ok)
	}
	for _, bad := range []string{"", "0f8fad5b-d9cb-469f-a165-70867728950", "0f8fad5b-d9cb-469f-a165-70867728950e0", "zf8fad5b-d9cb-469f-a165-70867728950e"} {
		if _, ok := uuidBytes(bad); ok {
			t.Errorf("uuidBytes(%q) ok", bad)
		}
	}
	const def = "CREATE UNIQUE INDEX registry_entries_entry_uuid_key ON public.registry_entries USING btree (entry_uuid)"
	if got := nextIndex("registry_entries_entry_uuid_key", def); got != "CREATE UNIQUE INDEX registry_entries_next_entry_uuid_key ON public.registry_entries_next USING btree (entry_uuid)" {
		t.Errorf("nextIndex: %s", got)
	}
}

// TestCopyBinary decodes what writeCopyBinary writes, as PostgreSQL would.
func TestCopyBinary(t *testing.T) {
	t.Parallel()
	from := time.Date(2000, 1, 1, 0, 0, 1, 2000, time.UTC) // a second and 2 µs after PostgreSQL's epoch
	until := time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	entries := []directory.Entry{
		{UZI: "900000001", BIG: "big", CardType: "Z", Role: "01.015", AGB: "01234567", License: "active", ValidFrom: from, ValidUntil: until,
			CertSerial: "0a", DN: "dn1", EntryUUID: "0f8fad5b-d9cb-469f-a165-70867728950e"},
		{UZI: "900000002", CardType: "M", License: "suspended", DN: "dn2", EntryUUID: "not a uuid"},
	}
	pages := make(chan []directory.Entry, 2)
	pages <- entries[:1]
	pages <- entries[1:]
	close(pages)
	var out bytes.Buffer
	if err := writeCopyBinary(&out, pages); err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(out.Bytes())
	head := make([]byte, 19)
	io.ReadFull(r, head)
	if string(head) != "PGCOPY\n\xff\r\n\x00"+strings.Repeat("\x00", 8) {
		t.Fatalf("header %q", head)
	}
	var rows [][]any
	for {
		var n uint16
		if err := binary.Read(r, binary.BigEndian, &n); err != nil {
			t.Fatal(err)
		}
		if n == 0xffff {
			break
		}
		if int(n) != len(copyColumns) {
			t.Fatalf("%d fields, want %d", n, len(copyColumns))
		}
		var row []any
		for i := range int(n) {
			var size uint32
			binary.Read(r, binary.BigEndian, &size)
			if size == 0xffffffff {
				row = append(row, nil)
				continue
			}
			b := make([]byte, size)
			io.ReadFull(r, b)
			switch copyColumns[i] {
			case "valid_from", "valid_until":
				us := int64(binary.BigEndian.Uint64(b))
				row = append(row, time.Unix(pgEpoch.Unix()+us/1e6, us%1e6*1e3).UTC())
			case "entry_uuid":
				row = append(row, fmt.Sprintf("%x", b))
			default:
				row = append(row, string(b))
			}
		}
		rows = append(rows, row)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes after the trailer", r.Len())
	}
	want := [][]any{
		{"900000001", "big", "Z", "01.015", "01234567", "active", from, until, "0a", "dn1", "0f8fad5bd9cb469fa16570867728950e"},
		{"900000002", nil, "M", nil, nil, "suspended", nil, nil, nil, "dn2", nil},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("rows\n%v\nwant\n%v", rows, want)
	}
}

// value reads a counter's or a gauge's value.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func TestRunMetrics(t *testing.T) {
	t.Parallel()
	m := NewMetrics(prometheus.NewRegistry())
	now := time.Unix(1_800_000_000, 0)
	s := &Syncer{metrics: m, log: slog.New(slog.DiscardHandler), now: func() time.Time { return now }}
	s.record(now, &Result{Kind: "full", Entries: 7, Skipped: 2}, nil)
	s.record(now, &Result{Kind: "full", Entries: 3, Skipped: 1}, errors.New("register away"))
	s.record(now, &Result{Kind: "incremental", Entries: 1}, nil)
	for _, tt := range []struct {
		name      string
		got, want float64
	}{
		{"full ok", value(m.runs.WithLabelValues("full", "ok")), 1},
		{"full error", value(m.runs.WithLabelValues("full", "error")), 1},
		{"incremental ok", value(m.runs.WithLabelValues("incremental", "ok")), 1},
		{"entries of the last good full", value(m.entries.WithLabelValues("full")), 7},
		{"skipped", value(m.skipped), 3},
		{"last success", value(m.lastSuccess), float64(now.Unix())},
	} {
		if tt.got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestNewAndSteps(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	s, err := New(context.Background(), Config{}, nil, nil, &fakeBucket{}, nil, log, nil)
	if err != nil || s.crls != nil || !s.reconciled || s.now == nil {
		t.Fatalf("New without CRLs: %+v, %v", s, err)
	}
	s, err = New(context.Background(), Config{}, nil, nil, &fakeBucket{}, &CRLConfig{Sources: []string{"x"}}, log, nil)
	if err != nil || s.crls == nil || s.crls.cfg.Sources[0] != "x" {
		t.Fatalf("New with CRLs: %+v, %v", s, err)
	}
	if err := s.step(stepCommitted); err != nil {
		t.Errorf("no fault: %v", err)
	}
	boom := errors.New("boom")
	s.fault = func(step string) error {
		if step == stepPublished {
			return boom
		}
		return nil
	}
	if s.step(stepCommitted) != nil || s.step(stepPublished) != boom {
		t.Error("fault injection")
	}
}

// copyTx is a transaction that takes COPYs and nothing else.
type copyTx struct {
	pgx.Tx
	copies [][][]any
	err    error
}

func (tx *copyTx) CopyFrom(_ context.Context, table pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	if tx.err != nil {
		return 0, tx.err
	}
	if table.Sanitize() != `"license_outbox"` || strings.Join(cols, ",") != "uzi_number,record" {
		return 0, fmt.Errorf("copy into %s (%v)", table.Sanitize(), cols)
	}
	var rows [][]any
	for src.Next() {
		v, err := src.Values()
		if err != nil {
			return 0, err
		}
		rows = append(rows, v)
	}
	tx.copies = append(tx.copies, rows)
	return int64(len(rows)), nil
}

// TestOutboxWritesInBatches: the outbox holds at most a batch in memory,
// writing each full one as it fills, and the rest at flush.
func TestOutboxWritesInBatches(t *testing.T) {
	t.Parallel()
	tx := &copyTx{}
	o := (&Syncer{}).outbox(tx, time.Now(), true)
	for i := range outboxBatch - 1 {
		if err := o.put(context.Background(), fmt.Sprint(i), LicenseRecord{Status: "removed"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(tx.copies) != 0 || len(o.rows) != outboxBatch-1 {
		t.Fatalf("written before a batch was full: %d copies, %d held", len(tx.copies), len(o.rows))
	}
	for i := range 2 {
		if err := o.put(context.Background(), fmt.Sprint("x", i), LicenseRecord{Status: "removed"}); err != nil {
			t.Fatal(err)
		}
	}
	if len(tx.copies) != 1 || len(tx.copies[0]) != outboxBatch || len(o.rows) != 1 {
		t.Fatalf("a full batch: %d copies, %d held", len(tx.copies), len(o.rows))
	}
	if err := o.flush(context.Background()); err != nil || len(tx.copies) != 2 || len(tx.copies[1]) != 1 || len(o.rows) != 0 {
		t.Fatalf("flush: %v, %d copies, %d held", err, len(tx.copies), len(o.rows))
	}
	if tx.copies[1][0][0] != "x1" {
		t.Errorf("last row %v", tx.copies[1][0])
	}
	tx.err = errors.New("database away")
	o.put(context.Background(), "y", LicenseRecord{})
	if err := o.flush(context.Background()); !errors.Is(err, tx.err) || !strings.HasPrefix(err.Error(), "registrysync: write license outbox: ") {
		t.Errorf("failed copy: %v", err)
	}
}
