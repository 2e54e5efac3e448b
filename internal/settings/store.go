package settings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Channel is the NOTIFY channel a change is announced on, so that every
// copy reads the settings again at once rather than at its next refresh.
const Channel = "vouch_settings"

// Item is one setting as the admin's page shows it.
type Item struct {
	Rule  Rule
	Value Value // in effect
	// Set says an admin set it; otherwise Value is the rule's default.
	Set bool
	// Ignored says the stored value is refused by the rules as they are
	// now (the configuration's limits were narrowed): the default is in
	// effect instead. Stored is that value.
	Ignored   bool
	Stored    Value
	Version   int64 // 0: never set
	ChangedBy string
	ChangedAt time.Time
}

type state struct {
	items  []Item
	values Values
}

// Store keeps the settings in effect in this copy, read from PostgreSQL
// again on every NOTIFY and every Refresh (Run).
type Store struct {
	pool    *pgxpool.Pool // nil: a fixed store of the defaults
	rules   Rules
	refresh time.Duration
	log     *slog.Logger
	cur     atomic.Pointer[state]
	// reloads counts completed reads, for tests that wait for one.
	reloads atomic.Int64
}

// Open reads the settings once and returns their Store; Run keeps it
// current. refresh is Config.Refresh.
func Open(ctx context.Context, pool *pgxpool.Pool, rules Rules, refresh time.Duration, log *slog.Logger) (*Store, error) {
	if pool == nil || len(rules) == 0 {
		return nil, errors.New("settings: no database or no rules")
	}
	if refresh <= 0 || refresh > MaxRefresh {
		return nil, fmt.Errorf("settings: refresh %s, want (0, %s]", refresh, MaxRefresh)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{pool: pool, rules: rules, refresh: refresh, log: log}
	if err := s.Reload(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Fixed is a Store of the rules' defaults that reads and writes nothing:
// for tools and tests without settings. Set refuses.
func Fixed(rules Rules) *Store {
	s := &Store{rules: rules}
	s.cur.Store(build(rules, nil))
	return s
}

// Rules are the store's rules.
func (s *Store) Rules() Rules { return s.rules }

// Current are the settings in effect now.
func (s *Store) Current() Values { return s.cur.Load().values }

// Items are the settings in effect with what the page shows of each.
func (s *Store) Items() []Item { return slices.Clone(s.cur.Load().items) }

// stored is a row of settings.
type stored struct {
	Value     Value
	Version   int64
	ChangedBy string
	ChangedAt time.Time
	bad       bool // does not decode
}

// Reload reads the settings now.
func (s *Store) Reload(ctx context.Context) error {
	if s.pool == nil {
		return nil
	}
	rows, err := s.pool.Query(ctx, `select name, value, version, changed_by, changed_at from settings`)
	if err != nil {
		return fmt.Errorf("settings: read: %w", err)
	}
	got := map[Name]stored{}
	for rows.Next() {
		var name string
		var raw []byte
		var st stored
		if err := rows.Scan(&name, &raw, &st.Version, &st.ChangedBy, &st.ChangedAt); err != nil {
			rows.Close()
			return fmt.Errorf("settings: read: %w", err)
		}
		if err := json.Unmarshal(raw, &st.Value); err != nil {
			// Not ours to have written: ignored, its default holds.
			s.log.Error("settings: a stored value does not decode; its default is in effect", "setting", name, "err", err)
			st.bad = true
		}
		got[Name(name)] = st
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("settings: read: %w", err)
	}
	next := build(s.rules, got)
	prev := s.cur.Load()
	for i, it := range next.items {
		// Once per value ignored, not at every refresh.
		if it.Ignored && (prev == nil || !prev.items[i].Ignored || prev.items[i].Version != it.Version) {
			s.log.Warn("settings: a stored value is outside the configuration's limits; its default is in effect",
				"setting", it.Rule.Name, "stored", it.Stored.String(), "default", it.Value.String())
		}
	}
	s.cur.Store(next)
	s.reloads.Add(1)
	return nil
}

// build makes the state from the rows read: each setting's stored value
// when the rules allow it, else its default.
func build(rules Rules, got map[Name]stored) *state {
	st := &state{}
	inEffect := map[Name]Value{}
	for _, r := range rules {
		it := Item{Rule: r, Value: r.Default}
		if row, ok := got[r.Name]; ok {
			it.Version, it.ChangedBy, it.ChangedAt, it.Stored = row.Version, row.ChangedBy, row.ChangedAt, row.Value
			if !row.bad && r.Check(row.Value) == nil {
				it.Value, it.Set = r.canonical(row.Value), true
			} else {
				it.Ignored = true
			}
		}
		inEffect[r.Name] = it.Value
		st.items = append(st.items, it)
	}
	st.values = values(inEffect)
	return st
}

// Run keeps the store current until ctx ends: it LISTENs on Channel on a
// connection of its own and reads the settings on every notification and
// at least every refresh. Without the connection (the database away) it
// still reads every refresh, and listens again when it can.
func (s *Store) Run(ctx context.Context) error {
	if s.pool == nil {
		<-ctx.Done()
		return ctx.Err()
	}
	for {
		err := s.listen(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Warn("settings: not listening for changes; reading them every refresh meanwhile", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.refresh):
		}
		if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("settings: reading failed; the last ones read stay in effect", "err", err)
		}
	}
}

// listen reads the settings on every notification and every refresh, until
// its connection fails or ctx ends.
func (s *Store) listen(ctx context.Context) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("settings: listen: %w", err)
	}
	// Its own connection from now on: a pooled one would keep listening
	// for whoever took it next.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `listen `+Channel); err != nil {
		return fmt.Errorf("settings: listen: %w", err)
	}
	for {
		// Read after listening: no change falls between the two.
		if err := s.Reload(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("settings: reading failed; the last ones read stay in effect", "err", err)
		}
		wctx, cancel := context.WithTimeout(ctx, s.refresh)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("settings: listen: %w", err)
		}
	}
}

// Change is a setting changed: what it was and what it is.
type Change struct {
	Name    Name
	Old     Value
	OldSet  bool // Old was set by an admin (else it was the default)
	New     Value
	Version int64 // the new version
}

// ErrFixed: a Fixed store has no database to write to.
var ErrFixed = errors.New("settings: this store is fixed to the defaults")

// Set changes the setting name to v in tx, if it is still at version (0:
// never set) — else ErrStale, and nothing is written — and announces it on
// Channel when tx commits. v is checked against the rules; a value equal to
// the one in effect is a Refusal RefusedUnchanged. The caller appends the
// audit row in the same tx, and calls Reload after the commit.
func (s *Store) Set(ctx context.Context, tx pgx.Tx, name Name, v Value, version int64, actor string, now time.Time) (Change, error) {
	if s.pool == nil {
		return Change{}, ErrFixed
	}
	r, ok := s.rules.Rule(name)
	if !ok {
		return Change{}, &Refusal{Code: RefusedUnknown}
	}
	if err := r.Check(v); err != nil {
		return Change{}, err
	}
	v = r.canonical(v)
	ch := Change{Name: name, Old: r.Default, New: v, Version: version + 1}
	var raw []byte
	var current int64
	err := tx.QueryRow(ctx, `select value, version from settings where name = $1 for update`, string(name)).Scan(&raw, &current)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return Change{}, fmt.Errorf("settings: read %s: %w", name, err)
	default:
		var old Value
		if json.Unmarshal(raw, &old) == nil && r.Check(old) == nil {
			ch.Old, ch.OldSet = r.canonical(old), true
		}
	}
	if current != version {
		return Change{}, &Refusal{Code: RefusedStale, Rule: r}
	}
	if slices.Equal(ch.Old.List, v.List) && ch.Old.Number == v.Number {
		return Change{}, &Refusal{Code: RefusedUnchanged, Rule: r}
	}
	enc, err := json.Marshal(v)
	if err != nil {
		return Change{}, err
	}
	// A first value: another admin's first value at the same moment makes
	// this insert do nothing, which is stale too.
	tag, err := tx.Exec(ctx, `insert into settings as s (name, value, version, changed_by, changed_at)
		values ($1, $2, $3 + 1, $4, $5)
		on conflict (name) do update set value = $2, version = s.version + 1, changed_by = $4, changed_at = $5
		where s.version = $3`, string(name), enc, version, actor, now)
	switch {
	case err != nil:
		return Change{}, fmt.Errorf("settings: write %s: %w", name, err)
	case tag.RowsAffected() != 1:
		return Change{}, &Refusal{Code: RefusedStale, Rule: r}
	}
	if _, err := tx.Exec(ctx, `select pg_notify($1, $2)`, Channel, string(name)); err != nil {
		return Change{}, fmt.Errorf("settings: notify: %w", err)
	}
	return ch, nil
}
