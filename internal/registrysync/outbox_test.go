// The tests of the real parts (slapd, PostgreSQL, NATS); a mutation run
// builds with -tags mutation and leaves them out (see unit_test.go).

//go:build !mutation

package registrysync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/testpki"
)

// bucket reads every record in the license bucket.
func (f *fixture) bucket(t *testing.T) map[string]LicenseRecord {
	t.Helper()
	out := map[string]LicenseRecord{}
	lister, err := f.kv.ListKeys(context.Background())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for k := range lister.Keys() {
		out[k] = *f.license(t, k)
	}
	return out
}

// checkBucketFollowsMirror asserts, from the mirror's rows and the bucket's
// records alone, that the public tier would decide as the mirror says: a
// card holder who may not vouch has a record saying so, with the mirror's
// status; one who may vouch has none or one saying so; anyone else in the
// bucket may not vouch.
func (f *fixture) checkBucketFollowsMirror(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	rows, err := f.db.Pool().Query(ctx, `select uzi_number, license_status,
		license_status = 'active' and (valid_from is null or valid_from <= now()) and (valid_until is null or valid_until > now())
		from registry_entries`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	bucket := f.bucket(t)
	for rows.Next() {
		var uzi, status string
		var may bool
		if err := rows.Scan(&uzi, &status, &may); err != nil {
			t.Fatal(err)
		}
		rec, ok := bucket[uzi]
		delete(bucket, uzi)
		switch {
		case !may && (!ok || rec.MayVouch || rec.Status != status):
			t.Errorf("%s is %s in the mirror; bucket: %+v (present %v)", uzi, status, rec, ok)
		case may && ok && (!rec.MayVouch || rec.Status != status):
			t.Errorf("%s may vouch in the mirror; bucket: %+v", uzi, rec)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for uzi, rec := range bucket {
		if rec.MayVouch {
			t.Errorf("%s is not in the mirror; bucket says they may vouch: %+v", uzi, rec)
		}
	}
}

// TestBucketFollowsMirrorThroughFaults fails every step of a change's way
// to the bucket, in an incremental and in a full sync: after the failed run
// and one good run, the bucket says what the mirror says, and the change
// reached it.
func TestBucketFollowsMirrorThroughFaults(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	f.checkBucketFollowsMirror(t)
	clinicians := []string{"900000001", "900000003", "900000004", "900000005", "900000006", "900000010"}
	i := 0
	for _, full := range []bool{false, true} {
		for _, step := range []string{stepOutboxWritten, stepCommitted, stepPublished} {
			name := fmt.Sprintf("full=%v, failing at %s", full, step)
			uzi := clinicians[i]
			i++
			if f.license(t, uzi) != nil && !f.license(t, uzi).MayVouch {
				t.Fatalf("%s: %s already refused", name, uzi)
			}
			f.ldap.LDIF(t, modify(uzi, "vouchLicenseStatus", "suspended"))
			injected := errors.New("injected fault at " + step)
			f.s.fault = func(s string) error {
				if s == step {
					return injected
				}
				return nil
			}
			sync := f.s.Once
			if full {
				sync = f.s.Full
			}
			if _, err := sync(ctx); !errors.Is(err, injected) {
				t.Fatalf("%s: %v", name, err)
			}
			if r := f.license(t, uzi); step != stepPublished && r != nil && !r.MayVouch {
				t.Errorf("%s: the bucket knew of the suspension before it was published: %+v", name, r)
			}
			f.s.fault = nil
			if _, err := f.s.Once(ctx); err != nil {
				t.Fatalf("%s: the next run: %v", name, err)
			}
			if r := f.license(t, uzi); r == nil || r.MayVouch || r.Status != "suspended" {
				t.Errorf("%s: the suspension of %s did not reach the bucket: %+v", name, uzi, r)
			}
			f.checkBucketFollowsMirror(t)
			var pending int
			f.db.Pool().QueryRow(ctx, `select count(*) from license_outbox`).Scan(&pending)
			if pending != 0 {
				t.Errorf("%s: %d records left in the outbox", name, pending)
			}
		}
	}
}

// TestBucketLostOrWrong: a bucket deleted between syncs is created again
// and filled with every refusal; records that say something else than the
// mirror — written by hand, or left by an older version — are corrected by
// the next full sync.
func TestBucketLostOrWrong(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, r := range f.bucket(t) {
		if !r.MayVouch {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("the fixtures hold nobody who may not vouch")
	}
	if err := f.js.DeleteKeyValue(ctx, "licenses"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Once(ctx); err != nil { // an incremental sync: nothing changed in the register
		t.Fatal(err)
	}
	kv, err := f.js.KeyValue(ctx, "licenses")
	if err != nil {
		t.Fatalf("bucket not created again: %v", err)
	}
	f.kv = kv
	f.checkBucketFollowsMirror(t)
	if got := len(f.bucket(t)); got < refused {
		t.Errorf("%d records after the loss, want at least the %d refusals", got, refused)
	}

	// Hand-written lies: a suspended clinician who may vouch, an active one
	// refused, a stranger who may vouch, garbage.
	put := func(uzi string, v any) {
		b, _ := json.Marshal(v)
		if _, err := f.kv.Put(ctx, uzi, b); err != nil {
			t.Fatal(err)
		}
	}
	put("900000024", LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
	put("900000001", LicenseRecord{Status: "suspended", ChangedAt: time.Now()})
	put("123456789", LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
	if _, err := f.kv.Put(ctx, "900000003", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	// A full sync within the day publishes what changed in the register
	// and leaves the rest of the bucket unread: reading it whole at every
	// run would cost as much as the sync.
	if _, err := f.s.Full(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.license(t, "123456789"); r == nil || !r.MayVouch {
		t.Fatalf("the bucket was read whole before a reconciliation was due: %+v", r)
	}
	// A day later the comparison is due, whichever run comes first.
	later := time.Now().Add(f.s.cfg.FullInterval)
	f.s.now = func() time.Time { return later }
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	f.checkBucketFollowsMirror(t)
	if r := f.license(t, "123456789"); r == nil || r.MayVouch || r.Status != StatusRemoved {
		t.Errorf("stranger: %+v", r)
	}
}

// TestRunReconcilesAtStart: the loop compares the whole bucket with the
// mirror when it starts, before any full sync is due.
func TestRunReconcilesAtStart(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
	if _, err := f.kv.Put(ctx, "900000024", b); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Once(ctx); err != nil { // a one-off incremental sync does not reconcile
		t.Fatal(err)
	}
	if r := f.license(t, "900000024"); r == nil || !r.MayVouch {
		t.Fatalf("the lie was corrected outside the loop: %+v", r)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.s.Run(rctx) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for r := f.license(t, "900000024"); r == nil || r.MayVouch; r = f.license(t, "900000024") {
		if time.Now().After(deadline) {
			t.Fatalf("the loop did not correct the bucket: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holdLock takes the sync's advisory lock in a transaction of its own, as
// another instance mid-run would; release ends it.
func (f *fixture) holdLock(t *testing.T) (release func()) {
	t.Helper()
	tx, err := f.db.Pool().Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), `select pg_advisory_xact_lock($1)`, int64(lockKey)); err != nil {
		t.Fatal(err)
	}
	return func() { tx.Rollback(context.Background()) }
}

// TestLostBucketWhileAnotherSyncs: the bucket is lost while another
// instance holds the lock; the reconciliation that could not run then stays
// due, and the next run fills the bucket.
func TestLostBucketWhileAnotherSyncs(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.js.DeleteKeyValue(ctx, "licenses"); err != nil {
		t.Fatal(err)
	}
	release := f.holdLock(t)
	if _, err := f.s.Once(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("with the lock held: %v", err)
	}
	if err := f.s.Reconcile(ctx); !errors.Is(err, ErrBusy) {
		t.Errorf("an operator's reconcile with the lock held: %v, want ErrBusy, not a silent success", err)
	}
	release()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	kv, err := f.js.KeyValue(ctx, "licenses")
	if err != nil {
		t.Fatal(err)
	}
	f.kv = kv
	if r := f.license(t, "900000024"); r == nil || r.MayVouch {
		t.Errorf("the suspension is not back in the bucket: %+v", r)
	}
	f.checkBucketFollowsMirror(t)
}

// TestFullSyncIntoLostBucketWithPendingOutbox: records waiting in the
// outbox and a lost bucket do not stop the full sync.
func TestFullSyncIntoLostBucketWithPendingOutbox(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(LicenseRecord{Status: "suspended", ChangedAt: time.Now()})
	if _, err := f.db.Pool().Exec(ctx, `insert into license_outbox (uzi_number, record) values ('900000024', $1)`, b); err != nil {
		t.Fatal(err)
	}
	if err := f.js.DeleteKeyValue(ctx, "licenses"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := f.s.Full(ctx); err != nil {
			t.Fatalf("full sync: %v", err)
		}
	}
	kv, err := f.js.KeyValue(ctx, "licenses")
	if err != nil {
		t.Fatal(err)
	}
	f.kv = kv
	f.checkBucketFollowsMirror(t)
}

// TestLicenseExpiringByTheClock: a license whose validity ends, with
// nothing changing in the register, is published as no longer vouching at
// the next run.
func TestLicenseExpiringByTheClock(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	until := time.Now().Add(3 * time.Second).UTC()
	f.ldap.LDIF(t, entry("100000009")+"\nvouchLicenseValidUntil: "+until.Format("20060102150405Z"))
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.Once(ctx); err != nil { // announces the newcomer
		t.Fatal(err)
	}
	time.Sleep(time.Until(until) + time.Second)
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.license(t, "100000009"); r == nil || r.MayVouch {
		t.Errorf("an expired license still vouches in the bucket: %+v", r)
	}
	f.checkBucketFollowsMirror(t)
}

// TestFirstSyncAnnouncesEveryRefusal: a first sync into an empty mirror
// writes to the outbox, in its own transaction, exactly the card holders
// who may not vouch — suspended, not yet valid, expired by date — and
// nobody who may. Read before anything is published, so that the
// reconciliation after it cannot hide a refusal it missed.
func TestFirstSyncAnnouncesEveryRefusal(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	day := 24 * time.Hour
	f.ldap.LDIF(t,
		entry("100000001"),
		entry("100000002")+"\nvouchLicenseValidFrom: "+time.Now().Add(day).UTC().Format("20060102150405Z"),
		entry("100000003")+"\nvouchLicenseValidUntil: "+time.Now().Add(-day).UTC().Format("20060102150405Z"),
		entry("100000004")+"\nvouchLicenseValidFrom: "+time.Now().Add(-day).UTC().Format("20060102150405Z")+
			"\nvouchLicenseValidUntil: "+time.Now().Add(day).UTC().Format("20060102150405Z"),
		entry("100000005", "vouchLicenseStatus: revoked"))
	injected := errors.New("stop before publishing")
	f.s.fault = func(step string) error {
		if step == stepCommitted {
			return injected
		}
		return nil
	}
	if _, err := f.s.Once(ctx); !errors.Is(err, injected) {
		t.Fatal(err)
	}
	rows, err := f.db.Pool().Query(ctx, `select uzi_number, record from license_outbox`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]LicenseRecord{}
	for rows.Next() {
		var uzi string
		var b []byte
		var rec LicenseRecord
		if err := rows.Scan(&uzi, &b); err != nil || json.Unmarshal(b, &rec) != nil {
			t.Fatal(err)
		}
		got[uzi] = rec
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range testpki.Cards() {
		if c.License != "active" {
			want = append(want, c.UZI)
		}
	}
	want = append(want, "100000002", "100000003", "100000005")
	for _, uzi := range want {
		if r, ok := got[uzi]; !ok || r.MayVouch {
			t.Errorf("%s may not vouch, but the outbox has %+v (present %v)", uzi, r, ok)
		}
		delete(got, uzi)
	}
	for uzi, r := range got {
		t.Errorf("%s may vouch, but the outbox announces %+v", uzi, r)
	}
	f.s.fault = nil
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	f.checkBucketFollowsMirror(t)
}

// TestFirstSyncIntoAFullBucket: a first sync into an empty mirror counts as
// a reconciliation only when the bucket was empty too. A bucket that
// already holds records — a mirror dropped and made again, say — is
// compared with the new mirror, and its lies are corrected in that run.
func TestFirstSyncIntoAFullBucket(t *testing.T) {
	t.Parallel()
	f := setup(t, 100, nil)
	ctx := context.Background()
	lie, _ := json.Marshal(LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
	if _, err := f.kv.Put(ctx, "900000024", lie); err != nil { // suspended in the register
		t.Fatal(err)
	}
	stale, _ := json.Marshal(LicenseRecord{Status: "suspended", ChangedAt: time.Now()})
	if _, err := f.kv.Put(ctx, "900000001", stale); err != nil { // active in the register
		t.Fatal(err)
	}
	if _, err := f.s.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if r := f.license(t, "900000024"); r == nil || r.MayVouch {
		t.Errorf("the suspended clinician may vouch in the bucket: %+v", r)
	}
	if r := f.license(t, "900000001"); r != nil && !r.MayVouch {
		t.Errorf("the active GP is refused in the bucket: %+v", r)
	}
	f.checkBucketFollowsMirror(t)
}

// TestOnceFillsANewOrLostBucket: `vouch registry-sync -once` (and -once
// -full) opens the bucket the way the command does — creating it when it is
// missing, before the syncer exists — into a bucket deleted since the last
// run, one never written (a new VOUCH_LICENSE_BUCKET), or one deleted and
// created again by another role while a syncer runs. Each must end with
// every refusal, though the last reconciliation is minutes old.
func TestOnceFillsANewOrLostBucket(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		full   bool
		bucket string
		lose   bool // delete the bucket first
		same   bool // the syncer that filled it syncs again
	}{
		{name: "lost, -once", bucket: "licenses", lose: true},
		{name: "lost, -once -full", full: true, bucket: "licenses", lose: true},
		{name: "new, -once", bucket: "licenses-new"},
		{name: "new, -once -full", full: true, bucket: "licenses-new"},
		{name: "lost and created by another role, loop", bucket: "licenses", lose: true, same: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := setup(t, 100, nil)
			ctx := context.Background()
			if _, err := f.s.Once(ctx); err != nil {
				t.Fatal(err)
			}
			refused := 0
			for _, r := range f.bucket(t) {
				if !r.MayVouch {
					refused++
				}
			}
			if refused == 0 {
				t.Fatal("the fixtures hold nobody who may not vouch")
			}
			if tt.lose {
				if err := f.js.DeleteKeyValue(ctx, "licenses"); err != nil {
					t.Fatal(err)
				}
			}
			// What the command (or ingest, starting) does: open the bucket,
			// creating it.
			bk, err := f.bus.Bucket(ctx, tt.bucket, BucketDescription)
			if err != nil {
				t.Fatal(err)
			}
			s := f.s
			if !tt.same {
				cfg := f.s.cfg
				cfg.Bucket = tt.bucket
				if s, err = New(ctx, cfg, f.s.dir, f.db, bk, nil, f.s.log, NewMetrics(prometheus.NewRegistry())); err != nil {
					t.Fatal(err)
				}
			}
			sync := s.Once
			if tt.full {
				sync = s.Full
			}
			if _, err := sync(ctx); err != nil {
				t.Fatal(err)
			}
			if f.kv, err = f.js.KeyValue(ctx, tt.bucket); err != nil {
				t.Fatal(err)
			}
			f.checkBucketFollowsMirror(t)
			if got := len(f.bucket(t)); got < refused {
				t.Errorf("%d records in the bucket, want at least the %d refusals", got, refused)
			}
		})
	}
}
