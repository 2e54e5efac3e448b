package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig describes a work stream: messages kept on disk for a bounded
// age, long enough to ride out an outage or a peak of their consumers, and
// dropped as duplicates when published again with the same message id
// within Duplicates.
type StreamConfig struct {
	Name       string
	Subjects   []string
	MaxAge     time.Duration
	Duplicates time.Duration // the dedupe window; default DuplicatesWindow, longer than RetryWithin
	Replicas   int           // 1 on one machine, 3 in a cluster; default the bus's (VOUCH_BUS_REPLICAS)
}

// Stream opens the stream cfg names, creating it when it does not exist and
// updating its bounds when they changed: every role that writes or reads it
// calls Stream with the same configuration, so whichever starts first
// creates it.
func (b *Bus) Stream(ctx context.Context, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" || len(cfg.Subjects) == 0 || cfg.MaxAge <= 0 {
		return nil, errors.New("bus: a stream needs a name, subjects and a positive age")
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = DuplicatesWindow
	}
	if cfg.Duplicates > cfg.MaxAge {
		cfg.Duplicates = cfg.MaxAge
	}
	// A publish tried again after its first try landed must fall inside
	// the window, or the message is stored twice.
	if cfg.Duplicates <= RetryWithin {
		return nil, fmt.Errorf("bus: stream %s: a dedupe window of %s is not longer than the publish retries (%s)", cfg.Name, cfg.Duplicates, RetryWithin)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = b.replicas
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	js := jetstream.StreamConfig{
		Name:       cfg.Name,
		Subjects:   cfg.Subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     cfg.MaxAge,
		Duplicates: cfg.Duplicates,
		Replicas:   cfg.Replicas,
		Discard:    jetstream.DiscardOld,
	}
	// A cluster answers a creation once the stream's replicas elected a
	// leader, which takes seconds while the cluster starts or under load;
	// a try that timed out may have created it, and the next finds it.
	var st jetstream.Stream
	err := openRetry().Do(ctx, func(ctx context.Context) (err error) {
		st, err = b.openStream(ctx, js)
		return err
	})
	return st, err
}

// openRetry bounds the creation of a stream or bucket at start.
func openRetry() Retry { return Retry{Attempt: 10 * time.Second, Within: time.Minute} }

// openStream opens the stream js describes, creating or updating it.
func (b *Bus) openStream(ctx context.Context, js jetstream.StreamConfig) (jetstream.Stream, error) {
	cfg := js
	// Update only what differs: every role opens the stream at start, and
	// an update racing another role's consumer creation is needless work
	// for the server (and a data race inside nats-server 2.15's file store
	// under -race).
	if s, err := b.js.Stream(ctx, cfg.Name); err == nil {
		have := s.CachedInfo().Config
		if slices.Equal(have.Subjects, js.Subjects) && have.MaxAge == js.MaxAge && have.Duplicates == js.Duplicates &&
			have.Replicas == js.Replicas && have.Storage == js.Storage && have.Discard == js.Discard {
			return s, nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	s, err := b.js.CreateOrUpdateStream(ctx, js)
	if err != nil {
		return nil, fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
	}
	return s, nil
}
