package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	k := &Bucket{js: b.js, cfg: jetstream.KeyValueConfig{Bucket: name, History: 5, Description: description,
		Storage: jetstream.FileStorage, Replicas: max(b.replicas, 1)}, wait: 30 * time.Second}
	if _, err := k.Ensure(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// ExpiringBucket opens the bucket name whose entries the bus forgets ttl
// after they were put, creating it when it does not exist: the
// authorizations the phones pick up, which are worth nothing after their
// validity. Only the latest value of a key is kept.
func (b *Bus) ExpiringBucket(ctx context.Context, name, description string, ttl time.Duration) (*Bucket, error) {
	k := &Bucket{js: b.js, cfg: jetstream.KeyValueConfig{Bucket: name, History: 1, TTL: ttl, Description: description,
		Storage: jetstream.FileStorage, Replicas: max(b.replicas, 1)}, wait: 30 * time.Second}
	if _, err := k.Ensure(ctx); err != nil {
		return nil, err
	}
	return k, nil
}

// Ensure makes sure the bucket exists and reports whether it had to create
// it: a bucket deleted by an operator, or lost with the bus's store, is
// empty, and its writer must fill it again.
func (k *Bucket) Ensure(ctx context.Context) (created bool, err error) {
	// As for a stream (Stream): a cluster answers once the bucket's
	// replicas elected a leader, and a try that timed out may have made it.
	err = openRetry().Do(ctx, func(ctx context.Context) (err error) {
		created, err = k.ensure(ctx)
		return err
	})
	return created, err
}

func (k *Bucket) ensure(ctx context.Context) (created bool, err error) {
	kv, err := k.js.KeyValue(ctx, k.cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = k.js.CreateKeyValue(ctx, k.cfg)
		// A bucket deleted a moment ago may still have its store being
		// removed: the server answers "error creating store for stream"
		// (10049) for a short while. Ask again, briefly.
		for try := 0; err != nil && isStoreBusy(err) && try < 20; try++ {
			select {
			case <-ctx.Done():
				return false, fmt.Errorf("bus: bucket %s: %w", k.cfg.Bucket, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
			kv, err = k.js.CreateKeyValue(ctx, k.cfg)
		}
		created = err == nil
	}
	if err != nil {
		return false, fmt.Errorf("bus: bucket %s: %w", k.cfg.Bucket, err)
	}
	k.kv = kv
	return created, nil
}

// Empty reports whether the bucket holds no entry at all, not even a
// deleted one.
func (k *Bucket) Empty(ctx context.Context) (bool, error) {
	st, err := k.kv.Status(ctx)
	if err != nil {
		return false, fmt.Errorf("bus: bucket %s: status: %w", k.cfg.Bucket, err)
	}
	return st.Values() == 0, nil
}

// Identity names this bucket and when the bus created it: a bucket deleted
// and created again, by any role, has another, so a writer that filled the
// old one can tell.
func (k *Bucket) Identity(ctx context.Context) (string, error) {
	st, err := k.kv.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("bus: bucket %s: status: %w", k.cfg.Bucket, err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return "", fmt.Errorf("bus: bucket %s: status without stream info", k.cfg.Bucket)
	}
	return k.cfg.Bucket + " created " + bs.StreamInfo().Created.UTC().Format(time.RFC3339Nano), nil
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
// key that appears twice ends with its last value. Puts not acknowledged
// because the bucket's leader is being elected are put again, a batch at a
// time in order (a put is idempotent: the same value again), bounded by a
// Retry of the bucket's wait.
func (k *Bucket) PutAll(ctx context.Context, entries []KeyValue) error {
	r := Retry{Attempt: k.wait, Within: 2 * k.wait}
	for len(entries) > 0 {
		batch := entries[:min(len(entries), maxPending)]
		entries = entries[len(batch):]
		if err := r.DoOn(ctx, k.js, "KV_"+k.cfg.Bucket, func(ctx context.Context) error { return k.putBatch(ctx, batch) }); err != nil {
			return fmt.Errorf("bus: bucket %s: %w", k.cfg.Bucket, err)
		}
	}
	return nil
}

// putBatch puts entries and waits for every acknowledgement, until ctx
// ends.
func (k *Bucket) putBatch(ctx context.Context, entries []KeyValue) error {
	subject := "$KV." + k.cfg.Bucket + "."
	pending := make([]jetstream.PubAckFuture, 0, len(entries))
	for _, e := range entries {
		f, err := k.js.PublishAsync(subject+e.Key, e.Value)
		if err != nil {
			return fmt.Errorf("put %s: %w", e.Key, err)
		}
		pending = append(pending, f)
	}
	for _, f := range pending {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return fmt.Errorf("not acknowledged: %w", ctx.Err())
		}
	}
	return nil
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

// eachBatch is how many entries Each asks the bus for at a time: memory
// holds one batch, however large the bucket.
const eachBatch = 1024

// Each calls fn with the current value of every key, in the order the bus
// stored them, reading a batch at a time through an ordered consumer, so
// that memory stays flat however many keys the bucket holds. Deleted and
// purged keys are left out. An error from fn ends it.
func (k *Bucket) Each(ctx context.Context, fn func(key string, value []byte) error) error {
	stream := "KV_" + k.cfg.Bucket
	prefix := "$KV." + k.cfg.Bucket + "."
	cons, err := k.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{prefix + ">"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("bus: bucket %s: read: %w", k.cfg.Bucket, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("bus: bucket %s: read: %w", k.cfg.Bucket, err)
	}
	left := info.NumPending
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, eachBatch)), jetstream.FetchMaxWait(k.wait))
		if err != nil {
			return fmt.Errorf("bus: bucket %s: read: %w", k.cfg.Bucket, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("bus: bucket %s: read: %w", k.cfg.Bucket, err)
			}
			left = md.NumPending
			if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" {
				continue
			}
			key, ok := strings.CutPrefix(m.Subject(), prefix)
			if !ok {
				continue
			}
			if err := fn(key, m.Data()); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("bus: bucket %s: read: %w", k.cfg.Bucket, err)
		}
		if got == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("bus: bucket %s: read stalled with %d entries left", k.cfg.Bucket, left)
		}
	}
	return nil
}

// All returns the current value of every key (Each, collected): for
// buckets known to be small, and for tests.
func (k *Bucket) All(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	err := k.Each(ctx, func(key string, value []byte) error {
		out[key] = value
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// streamStoreError is JetStream's "error creating store for stream".
const streamStoreError = 10049

func isStoreBusy(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == streamStoreError
}
