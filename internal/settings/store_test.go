package settings_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/settings"
	"github.com/vouch-nl/vouch/internal/testenv"
)

func rules(t *testing.T) settings.Rules {
	t.Helper()
	r, err := settings.NewRules(settings.Config{MaxDailyQuota: 100}, settings.Bounds{DailyQuota: 60, MaxRegisterStaleness: 24 * time.Hour,
		Professions: []string{"01", "02", "03", "30"}, Languages: []string{"en", "nl"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func open(t *testing.T, db *database.DB, refresh time.Duration) *settings.Store {
	t.Helper()
	s, err := settings.Open(t.Context(), db.Pool(), rules(t), refresh, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s's refresh loop until the test ends.
func run(t *testing.T, s *settings.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func set(t *testing.T, db *database.DB, s *settings.Store, name settings.Name, v settings.Value, version int64) (settings.Change, error) {
	t.Helper()
	var ch settings.Change
	err := db.InTx(t.Context(), func(tx pgx.Tx) (err error) {
		ch, err = s.Set(t.Context(), tx, name, v, version, "900000010", time.Now())
		return err
	})
	return ch, err
}

func code(err error) string {
	var r *settings.Refusal
	if errors.As(err, &r) {
		return r.Code
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// TestSetIsVersioned: a change names the version it was made on; a change
// on an older version is refused (two admins at once: the second is told),
// and so is one past the limits, and neither writes anything.
func TestSetIsVersioned(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	s := open(t, db, time.Second)
	ch, err := set(t, db, s, settings.DailyQuota, settings.Value{Number: 100}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(settings.Change{Name: settings.DailyQuota, Old: settings.Value{Number: 60}, New: settings.Value{Number: 100}, Version: 1}, ch); diff != "" {
		t.Errorf("first change (-want +got):\n%s", diff)
	}
	// A second admin who read version 0 too.
	if _, err := set(t, db, s, settings.DailyQuota, settings.Value{Number: 30}, 0); code(err) != settings.RefusedStale {
		t.Errorf("a change on a stale version: %v", err)
	}
	if _, err := set(t, db, s, settings.DailyQuota, settings.Value{Number: 101}, 1); code(err) != settings.RefusedAbove {
		t.Errorf("past the limit: %v", err)
	}
	if _, err := set(t, db, s, settings.DailyQuota, settings.Value{Number: 100}, 1); code(err) != settings.RefusedUnchanged {
		t.Errorf("unchanged: %v", err)
	}
	if _, err := set(t, db, s, "colour", settings.Value{Number: 1}, 0); code(err) != settings.RefusedUnknown {
		t.Errorf("no such setting: %v", err)
	}
	var value string
	var version int
	if err := db.Pool().QueryRow(t.Context(), `select value::text, version from settings where name = 'daily-quota'`).Scan(&value, &version); err != nil {
		t.Fatal(err)
	}
	if value != `{"number": 100}` || version != 1 {
		t.Errorf("stored %s at version %d, want the first change's alone", value, version)
	}
	ch, err = set(t, db, s, settings.DailyQuota, settings.Value{Number: 30}, 1)
	if err != nil || !ch.OldSet || ch.Old.Number != 100 || ch.Version != 2 {
		t.Errorf("a change on the version read: %+v %v", ch, err)
	}
	if n := s.Current().DailyQuota; n != 60 {
		t.Errorf("in effect before a read: %d, want the default until Reload or Run", n)
	}
	if err := s.Reload(t.Context()); err != nil || s.Current().DailyQuota != 30 {
		t.Errorf("in effect after a read: %d %v, want 30", s.Current().DailyQuota, err)
	}
}

// TestSetConcurrently: two admins saving on the same version at once: one
// wins, the other is told, whichever the order.
func TestSetConcurrently(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	s := open(t, db, time.Second)
	errs := make(chan error, 2)
	for _, n := range []int{10, 20} {
		go func() {
			_, err := set(t, db, s, settings.DailyQuota, settings.Value{Number: n}, 0)
			errs <- err
		}()
	}
	got := map[string]int{}
	for range 2 {
		got[code(<-errs)]++
	}
	if diff := cmp.Diff(map[string]int{"": 1, settings.RefusedStale: 1}, got); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

// TestCopiesConverge: two copies on one database. A change made through one
// reaches the other on the NOTIFY, long before its timer (a minute here);
// a change that sends none (written by hand) on its timer.
func TestCopiesConverge(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	a, b := open(t, db, time.Minute), open(t, db, time.Minute)
	run(t, a)
	run(t, b)
	waitFor(t, 10*time.Second, func() bool { return listening(t, db) == 2 })
	start := time.Now()
	if _, err := set(t, db, a, settings.AuthorizationValidity, settings.Value{Number: 6}, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return b.Current().AuthorizationValidity == 6*time.Hour })
	t.Logf("a change reached the other copy in %s (NOTIFY)", time.Since(start).Round(time.Millisecond))

	// The timer: a copy whose refresh is 300 ms, and a change without NOTIFY.
	c := open(t, db, 300*time.Millisecond)
	run(t, c)
	if _, err := db.Pool().Exec(t.Context(), `update settings set value = '{"number": 7}', version = version + 1
		where name = 'authorization-validity'`); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitFor(t, 10*time.Second, func() bool { return c.Current().AuthorizationValidity == 7*time.Hour })
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the timer took %s, its refresh is 300ms", d)
	}
}

// listening counts the connections that LISTEN for changes.
func listening(t *testing.T, db *database.DB) int {
	var n int
	if err := db.Pool().QueryRow(t.Context(), `select count(*) from pg_stat_activity
		where datname = current_database() and query = 'listen `+settings.Channel+`'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
