package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RetryWithin is the longest a write is tried again by default: longer
// than a JetStream cluster takes to elect a new leader after one is lost
// (about 8 s measured with three servers on one machine), shorter than a
// phone waits for its answer (30 s), and well inside the streams' dedupe
// window (DuplicatesWindow), so that a retry of a publish that landed is
// dropped as a duplicate.
const RetryWithin = 20 * time.Second

// DuplicatesWindow is the streams' default dedupe window: more than the
// longest retry of a publish with its message id, with room for a
// request that waited for the bus before its first try.
const DuplicatesWindow = 2 * time.Minute

// Retry bounds how one write to the bus is tried again while the cluster
// elects a new leader for a stream or bucket: the write is sent again on
// "no responders" and on timeouts only, at most Attempts times, and never
// past Within from the first try. Zero fields take the defaults.
type Retry struct {
	Attempts int           // tries in all; default 10
	Within   time.Duration // from the first try to the last answer; default RetryWithin
	Attempt  time.Duration // bound on one try; default 5 s
	Wait     time.Duration // pause after the first failure, doubled after each; default 100 ms
	MaxWait  time.Duration // longest pause; default 2 s
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 10
	}
	if r.Within <= 0 {
		r.Within = RetryWithin
	}
	if r.Attempt <= 0 {
		r.Attempt = 5 * time.Second
	}
	if r.Wait <= 0 {
		r.Wait = 100 * time.Millisecond
	}
	if r.MaxWait <= 0 {
		r.MaxWait = 2 * time.Second
	}
	return r
}

// Do runs op until it succeeds, fails with an error that is not
// Retryable, or the tries or the time are spent; each try gets a context
// bounded by Attempt and by what is left of Within. The error is op's
// last, wrapped with how many tries were made.
func (r Retry) Do(ctx context.Context, op func(ctx context.Context) error) error {
	r = r.withDefaults()
	start := time.Now()
	deadline := start.Add(r.Within)
	wait := r.Wait
	for try := 1; ; try++ {
		end := time.Now().Add(r.Attempt)
		if end.After(deadline) {
			end = deadline
		}
		actx, cancel := context.WithDeadline(ctx, end)
		err := op(actx)
		cancel()
		var fin *final
		switch {
		case err == nil:
			return nil
		case errors.As(err, &fin):
			return fin.err
		case ctx.Err() != nil:
			return fmt.Errorf("after %d tries: %w", try, errors.Join(err, ctx.Err()))
		case !Retryable(err):
			return err
		case try >= r.Attempts:
			return fmt.Errorf("bus did not answer %d tries in %s: %w", try, time.Since(start).Round(time.Millisecond), err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("bus did not answer %d tries in %s: %w", try, time.Since(start).Round(time.Millisecond), err)
		}
		pause := min(wait, left)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("after %d tries: %w", try, errors.Join(err, ctx.Err()))
		case <-t.C:
		}
		if time.Until(deadline) <= 0 {
			return fmt.Errorf("bus did not answer %d tries in %s: %w", try, time.Since(start).Round(time.Millisecond), err)
		}
		wait = min(2*wait, r.MaxWait)
	}
}

// final is an error Do returns at once, Retryable or not.
type final struct{ err error }

func (f *final) Error() string { return f.err.Error() }
func (f *final) Unwrap() error { return f.err }

// StreamLookup finds a stream by name: a JetStream.
type StreamLookup interface {
	Stream(ctx context.Context, stream string) (jetstream.Stream, error)
}

// DoOn is Do for a write to stream (a bucket's is KV_<bucket>): when a try
// finds no responders because the stream does not exist at all (deleted,
// or lost with a single server's store), which looks the same as a stream
// electing its leader, it gives up at once instead of trying for Within.
func (r Retry) DoOn(ctx context.Context, js StreamLookup, stream string, op func(ctx context.Context) error) error {
	return r.Do(ctx, func(ctx context.Context) error {
		err := op(ctx)
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return err
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, lerr := js.Stream(lctx, stream); errors.Is(lerr, jetstream.ErrStreamNotFound) {
			return &final{err: fmt.Errorf("%w: %w", err, lerr)}
		}
		return err
	})
}

// Retryable reports whether err means the write may not have reached a
// leader that could answer — no responders (no leader elected yet), a
// timeout (the leader died holding it), JetStream temporarily unavailable,
// or the connection cut as the server this process was connected to died
// (the client reconnects to another) — so that sending the same write
// again is the way on. Every other error (a refusal, a connection this
// process closed, a wrong sequence) is an answer.
func Retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrStaleConnection), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		return true
	}
	if errors.Is(err, nats.ErrConnectionClosed) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.Code == http.StatusServiceUnavailable
}

// Publisher is what PublishOnce needs of JetStream.
type Publisher interface {
	StreamLookup
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// PublishOnce publishes data to subject with the message id id, trying
// again by r through a leader election, always with the same id: a try
// that landed although its answer was lost makes the next one a duplicate
// the stream drops (within its Duplicates window, which Stream keeps
// longer than any Retry's Within), so the message is stored once.
// stream is the stream subject belongs to.
func PublishOnce(ctx context.Context, p Publisher, r Retry, stream, subject, id string, data []byte) (*jetstream.PubAck, error) {
	if id == "" {
		// Without an id a retry could store the message twice.
		return nil, errors.New("bus: publish: no message id")
	}
	var ack *jetstream.PubAck
	err := r.DoOn(ctx, p, stream, func(ctx context.Context) error {
		// A message of its own each try: the client may keep hold of one.
		m := nats.NewMsg(subject)
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Data = data
		a, err := p.PublishMsg(ctx, m)
		if err == nil {
			ack = a
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bus: publish to %s: %w", subject, err)
	}
	return ack, nil
}
