package bus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vouch-nl/vouch/internal/bus"
)

// fakePublisher answers each try with the next of errs (nil: acknowledged),
// the last one for every try after; hang makes a try wait for its context,
// as a publish to a leader that died does.
type fakePublisher struct {
	jetstream.JetStream
	mu       sync.Mutex
	errs     []error
	hang     bool
	gone     bool // the stream does not exist
	tries    []*nats.Msg
	deadline []time.Time
}

func (p *fakePublisher) PublishMsg(ctx context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.mu.Lock()
	n := len(p.tries)
	p.tries = append(p.tries, m)
	d, _ := ctx.Deadline()
	p.deadline = append(p.deadline, d)
	p.mu.Unlock()
	if p.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	err := p.errs[min(n, len(p.errs)-1)]
	if err != nil {
		return nil, err
	}
	return &jetstream.PubAck{Stream: "S", Sequence: 1, Duplicate: n > 0}, nil
}

func (p *fakePublisher) Stream(context.Context, string) (jetstream.Stream, error) {
	if p.gone {
		return nil, jetstream.ErrStreamNotFound
	}
	return nil, nil
}

// TestPublishOnceRetries: a publish is tried again, with the same message
// id and data, on no responders, timeouts and "temporarily unavailable",
// and only on those; bounded by the tries and by Within; it stops at once
// when the stream does not exist or the caller gives up.
func TestPublishOnceRetries(t *testing.T) {
	t.Parallel()
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	fast := bus.Retry{Attempts: 5, Within: 2 * time.Second, Attempt: time.Second, Wait: time.Millisecond, MaxWait: 4 * time.Millisecond}
	for _, tt := range []struct {
		name    string
		pub     *fakePublisher
		retry   bus.Retry
		tries   int
		wantErr error // nil: acknowledged
	}{
		{"acknowledged at once", &fakePublisher{errs: []error{nil}}, fast, 1, nil},
		{"no responders, then a leader", &fakePublisher{errs: []error{jetstream.ErrNoStreamResponse, nats.ErrNoResponders, nil}}, fast, 3, nil},
		{"timeouts, then a leader", &fakePublisher{errs: []error{context.DeadlineExceeded, nats.ErrTimeout, nil}}, fast, 3, nil},
		{"temporarily unavailable, then a leader", &fakePublisher{errs: []error{unavailable, nil}}, fast, 2, nil},
		{"a refusal is an answer", &fakePublisher{errs: []error{&jetstream.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"}}}, fast, 1, jetstream.ErrNotJSMessage},
		{"a closed connection is an answer", &fakePublisher{errs: []error{nats.ErrConnectionClosed}}, fast, 1, nats.ErrConnectionClosed},
		{"tries spent", &fakePublisher{errs: []error{jetstream.ErrNoStreamResponse}}, fast, 5, jetstream.ErrNoStreamResponse},
		{"stream gone: no responders is final", &fakePublisher{errs: []error{jetstream.ErrNoStreamResponse}, gone: true}, fast, 1, jetstream.ErrStreamNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ack, err := bus.PublishOnce(t.Context(), tt.pub, tt.retry, "S", "s.x", "id-1", []byte("payload"))
			if len(tt.pub.tries) != tt.tries {
				t.Errorf("%d tries, want %d", len(tt.pub.tries), tt.tries)
			}
			for i, m := range tt.pub.tries {
				if got := m.Header.Get(jetstream.MsgIDHeader); got != "id-1" || m.Subject != "s.x" || !bytes.Equal(m.Data, []byte("payload")) {
					t.Errorf("try %d: id %q subject %q data %q", i, got, m.Subject, m.Data)
				}
			}
			switch {
			case tt.wantErr == nil && (err != nil || ack == nil):
				t.Errorf("err %v, ack %v; want acknowledged", err, ack)
			case tt.wantErr == jetstream.ErrNotJSMessage:
				var api *jetstream.APIError
				if !errors.As(err, &api) || api.Code != 400 {
					t.Errorf("err %v, want the refusal", err)
				}
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A leader that died holding the publish answers nothing: each try ends at
// Attempt, and all of them within Within, however many tries are allowed.
func TestPublishOnceBoundedInTime(t *testing.T) {
	t.Parallel()
	p := &fakePublisher{hang: true}
	r := bus.Retry{Attempts: 1000, Within: 300 * time.Millisecond, Attempt: 80 * time.Millisecond, Wait: 5 * time.Millisecond}
	start := time.Now()
	_, err := bus.PublishOnce(t.Context(), p, r, "S", "s.x", "id-1", nil)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want the tries' timeout", err)
	}
	if took < r.Within || took > r.Within+time.Second {
		t.Errorf("gave up after %s, want about %s", took, r.Within)
	}
	if n := len(p.tries); n < 3 || n > 5 {
		t.Errorf("%d tries of %s within %s", n, r.Attempt, r.Within)
	}
	for i, d := range p.deadline {
		if d.After(start.Add(r.Within+50*time.Millisecond)) || d.After(start.Add(time.Duration(i+1)*(r.Attempt+r.MaxWait+50*time.Millisecond))) {
			t.Errorf("try %d had until %s after the start", i, d.Sub(start))
		}
	}
}

// The caller's context ends the tries, and no message without an id is
// tried at all (a retry of it could be stored twice).
func TestPublishOnceStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	p := &fakePublisher{errs: []error{jetstream.ErrNoStreamResponse}}
	r := bus.Retry{Attempts: 1000, Within: time.Minute, Wait: 20 * time.Millisecond, MaxWait: 20 * time.Millisecond}
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, err := bus.PublishOnce(ctx, p, r, "S", "s.x", "id-1", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want canceled", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("stopped %s after the caller gave up", took)
	}
	empty := &fakePublisher{errs: []error{nil}}
	if _, err := bus.PublishOnce(t.Context(), empty, r, "S", "s.x", "", nil); err == nil || len(empty.tries) != 0 {
		t.Errorf("no id: err %v after %d tries, want a refusal before any", err, len(empty.tries))
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{nats.ErrNoResponders, true},
		{jetstream.ErrNoStreamResponse, true},
		{nats.ErrTimeout, true},
		{context.DeadlineExceeded, true},
		{jetstream.ErrAsyncPublishTimeout, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008}, true},
		{nats.ErrConnectionReconnecting, true},
		{nats.ErrDisconnected, true},
		{nats.ErrStaleConnection, true},
		{nats.ErrReconnectBufExceeded, true},
		{fmt.Errorf("put k: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}), true},
		{syscall.ECONNRESET, true},
		{context.Canceled, false},
		{nats.ErrConnectionClosed, false},
		{jetstream.ErrKeyExists, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071}, false},
		{errors.New("down"), false},
	} {
		if got := bus.Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
