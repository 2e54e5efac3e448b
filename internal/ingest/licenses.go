package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/registrysync"
)

// licenses mirrors the license bucket in memory through a key-value
// watcher, so each upload's check is a map lookup, and a change the
// registry sync publishes takes effect within the bus's delivery time.
type licenses struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu      sync.RWMutex
	records map[string]registrysync.LicenseRecord
	loaded  atomic.Bool // the bucket's values at start have all arrived
}

func newLicenses(kv jetstream.KeyValue, log *slog.Logger) *licenses {
	return &licenses{kv: kv, log: log, records: map[string]registrysync.LicenseRecord{}}
}

// errLicensesLoading: until the bucket was read once, no upload can be
// decided.
var errLicensesLoading = errors.New("ingest: license states not loaded yet")

// mayVouch decides on the record of uzi at now. The bucket holds the card
// holders whose state changed or who may not vouch (docs/registry.md,
// "License changes to the public tier"): no record means "as attested" —
// the attestation in the bundle says the register had the license active
// when the clinician vouched, at most a day ago. An unreadable or inactive
// record refuses, and so does everything until the bucket was read once.
func (l *licenses) mayVouch(uzi string, now time.Time) (bool, error) {
	if !l.loaded.Load() {
		return false, errLicensesLoading
	}
	l.mu.RLock()
	rec, ok := l.records[uzi]
	l.mu.RUnlock()
	if !ok {
		return true, nil
	}
	return rec.MayVouch && rec.Status == directory.LicenseActive &&
		(rec.ValidFrom == nil || !now.Before(*rec.ValidFrom)) &&
		(rec.ValidUntil == nil || now.Before(*rec.ValidUntil)), nil
}

// ready fails until the bucket was read once.
func (l *licenses) ready(context.Context) error {
	if !l.loaded.Load() {
		return errLicensesLoading
	}
	return nil
}

// run watches the bucket until ctx ends, watching again after the watcher
// stopped (the bus restarted); what is known stays in force meanwhile.
func (l *licenses) run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := l.watch(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("license watcher stopped; watching again", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (l *licenses) watch(ctx context.Context) error {
	w, err := l.kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	// A new watch replays every current value: collect them and swap the
	// map once the replay is complete, so a deleted key does not survive.
	fresh := map[string]registrysync.LicenseRecord{}
	initial := true
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case e, ok = <-w.Updates():
		}
		if !ok {
			return errors.New("watcher closed")
		}
		if e == nil { // the replay is complete
			l.mu.Lock()
			l.records = fresh
			l.mu.Unlock()
			initial = false
			if !l.loaded.Swap(true) {
				l.log.Info("license states loaded", "count", len(fresh))
			}
			continue
		}
		key := e.Key()
		var rec registrysync.LicenseRecord
		put := e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &rec) == nil
		if e.Operation() == jetstream.KeyValuePut && !put {
			l.log.Warn("unreadable license record; that card holder may not vouch", "uzi", key)
			// Kept as a refusal: dropping it would read as "as attested".
			rec, put = registrysync.LicenseRecord{Status: "unreadable"}, true
		}
		if initial {
			if put {
				fresh[key] = rec
			} else {
				delete(fresh, key)
			}
			continue
		}
		l.mu.Lock()
		if put {
			l.records[key] = rec
		} else {
			delete(l.records, key)
		}
		l.mu.Unlock()
	}
}
