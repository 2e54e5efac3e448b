package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Bucket is a JetStream key-value bucket that one writer fills in
// acknowledged batches and that readers look up by key: the license states
// the public tier consults. It is the only place that knows the bucket's
// subjects.
type Bucket struct {
	js   jetstream.JetStream
	cfg  jetstream.KeyValueConfig
	kv   jetstream.KeyValue
	wait time.Duration // for all acknowledgements of one PutAll
}

// Bucket opens the bucket name, creating it when it does not exist.
func (b *Bus) Bucket(ctx context.Context, name, description string) (*Bucket, error) {
	k := &Bucket{js: b.js, cfg: jetstream.KeyValueConfig{Bucket: name, History: 5, Description: description}, wait: 30 * time.Second}
	if _, err := k.Ensure(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Ensure makes sure the bucket exists and reports whether it had to create
// it: a bucket deleted by an operator, or lost with the bus's store, is
// empty, and its writer must fill it again.
func (k *Bucket) Ensure(ctx context.Context) (created bool, err error) {
	kv, err := k.js.KeyValue(ctx, k.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = k.js.CreateKeyValue(ctx, k.cfg)
		created = err == nil
	}
	if err != nil {
		return false, fmt.Errorf("bus: bucket %s: %w", k.cfg.Bucket, err)
	}
	k.kv = kv
	return created, nil
}

// KeyValue is one entry to put.
type KeyValue struct {
	Key   string
	Value []byte
}

// maxPending bounds the puts in flight, so memory stays flat however many
// are written.
const maxPending = 1024

// PutAll puts every entry, in order, and returns once the bus acknowledged
// all of them: after it returns nil they survive a restart of the bus. A
// key that appears twice ends with its last value.
func (k *Bucket) PutAll(ctx context.Context, entries []KeyValue) error {
	subject := "$KV." + k.cfg.Bucket + "."
	pending := make([]jetstream.PubAckFuture, 0, min(len(entries), maxPending))
	wait := func() error {
		timeout := time.NewTimer(k.wait)
		defer timeout.Stop()
		for _, f := range pending {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return fmt.Errorf("bus: bucket %s: %w", k.cfg.Bucket, err)
			case <-ctx.Done():
				return ctx.Err()
			case <-timeout.C:
				return fmt.Errorf("bus: bucket %s did not acknowledge in %s", k.cfg.Bucket, k.wait)
			}
		}
		pending = pending[:0]
		return nil
	}
	for _, e := range entries {
		f, err := k.js.PublishAsync(subject+e.Key, e.Value)
		if err != nil {
			return fmt.Errorf("bus: bucket %s: put %s: %w", k.cfg.Bucket, e.Key, err)
		}
		pending = append(pending, f)
		if len(pending) >= maxPending {
			if err := wait(); err != nil {
				return err
			}
		}
	}
	return wait()
}

// Get returns the value of key, or nil and no error when there is none.
func (k *Bucket) Get(ctx context.Context, key string) ([]byte, error) {
	e, err := k.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: get %s: %w", k.cfg.Bucket, key, err)
	}
	return e.Value(), nil
}

// All returns the current value of every key.
func (k *Bucket) All(ctx context.Context) (map[string][]byte, error) {
	w, err := k.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: read: %w", k.cfg.Bucket, err)
	}
	defer w.Stop()
	out := map[string][]byte{}
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("bus: bucket %s: read ended early", k.cfg.Bucket)
			}
			if e == nil { // every current value has been delivered
				return out, nil
			}
			out[e.Key()] = e.Value()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
