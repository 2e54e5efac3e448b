// Package phoneclient is an HTTP client of the public phone API
// (internal/phoneapi): pickup and upload as a phone makes them, signed with
// the phone's key, padded to their block and marked real or chaff. The
// reference phone (cmd/phone), the end-to-end test and the benchmark use it.
//
// It retries with exponential backoff and full jitter on network errors,
// 429 and 503, so a million phones that lost the server do not come back in
// step. A retried request sends the identical bytes: the server treats a
// repeated upload as the same one.
package phoneclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// Backoff is how a request is retried: waits grow from Initial by doubling
// up to Max, each drawn at random below its bound (full jitter), at most
// Attempts tries in all. An answer that says when to come back
// (Retry-After, on 429 or 503) is waited for that long plus the jittered
// wait, so that phones behind one address do not come back in step; such
// answers are retried for up to Patience in all without counting against
// Attempts (a rate limit is the server pacing its clients, not a failure).
type Backoff struct {
	Initial  time.Duration
	Max      time.Duration
	Attempts int
	Patience time.Duration
}

// DefaultBackoff is the client's retry policy.
var DefaultBackoff = Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second, Attempts: 8, Patience: 10 * time.Minute}

// Wait is the jittered wait before retry number n (0 for the first retry).
func (b Backoff) Wait(n int) time.Duration {
	bound := b.Initial
	for i := 0; i < n && bound < b.Max; i++ {
		bound *= 2
	}
	if bound > b.Max {
		bound = b.Max
	}
	if bound <= 0 {
		return 0
	}
	return rand.N(bound) + 1
}

// Client talks to one phone API.
type Client struct {
	base  string
	http  *http.Client
	retry Backoff
	now   func() time.Time
}

// Option changes a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (timeouts, transport).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithBackoff sets the retry policy.
func WithBackoff(b Backoff) Option { return func(c *Client) { c.retry = b } }

// WithClock sets the clock whose time the phone signs.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// New is a client of the API at baseURL ("http://127.0.0.1:8081").
func New(baseURL string, opts ...Option) *Client {
	c := &Client{
		base:  strings.TrimRight(baseURL, "/"),
		http:  &http.Client{Timeout: 30 * time.Second},
		retry: DefaultBackoff,
		now:   time.Now,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is the API's refusal of a request.
type Error struct {
	Status  int    // HTTP status
	Code    string // phoneapi.ErrorResponse.Error, stable
	Message string

	retryAfter time.Duration // the answer's Retry-After, for Do
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("phone API: HTTP %d", e.Status)
	}
	return fmt.Sprintf("phone API: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// Temporary says whether asking again later may succeed.
func (e *Error) Temporary() bool {
	return e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable
}

// ErrPending is PickupWait's error when the wait ended before the bundle came.
var ErrPending = errors.New("phone API: not vouched yet")

// Pickup asks once (with retries on transient failures) for the bundle of
// the phone with key priv: nil and no error while it is pending.
func (c *Client) Pickup(ctx context.Context, priv ed25519.PrivateKey) ([]byte, error) {
	body, err := c.PickupBody(priv, c.now())
	if err != nil {
		return nil, err
	}
	var resp phoneapi.PickupResponse
	if err := c.Do(ctx, phoneapi.PathPickup, phoneapi.ChaffReal, body, &resp); err != nil {
		return nil, err
	}
	switch resp.Status {
	case phoneapi.StatusPending:
		return nil, nil
	case phoneapi.StatusReady:
		if len(resp.Bundle) == 0 {
			return nil, errors.New("phone API: pickup ready without a bundle")
		}
		return resp.Bundle, nil
	}
	return nil, fmt.Errorf("phone API: pickup status %q", resp.Status)
}

// PickupWait polls Pickup, waiting by poll between pending answers
// (poll.Attempts 0: until ctx ends), and returns the bundle.
func (c *Client) PickupWait(ctx context.Context, priv ed25519.PrivateKey, poll Backoff) ([]byte, error) {
	for n := 0; ; n++ {
		b, err := c.Pickup(ctx, priv)
		if err != nil && ctx.Err() != nil {
			// The wait ended during a poll, not a refusal.
			return nil, fmt.Errorf("%w: %w", ErrPending, err)
		}
		if err != nil || b != nil {
			return b, err
		}
		if poll.Attempts > 0 && n+1 >= poll.Attempts {
			return nil, ErrPending
		}
		if err := sleep(ctx, poll.Wait(n)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPending, err)
		}
	}
}

// PickupBody is the padded JSON of a pickup request signed at at.
func (c *Client) PickupBody(priv ed25519.PrivateKey, at time.Time) ([]byte, error) {
	pub := priv.Public().(ed25519.PublicKey)
	at = at.Truncate(time.Second)
	req := phoneapi.PickupRequest{
		PublicKey: pub,
		Time:      at.Unix(),
		Signature: ed25519.Sign(priv, protocol.PickupMessage(pub, at)),
	}
	return pad(&req, &req.Padding, phoneapi.PickupRequestBlock)
}

// Upload publishes keys with the bundle the phone picked up.
func (c *Client) Upload(ctx context.Context, priv ed25519.PrivateKey, bundle []byte, keys []exposure.Key) (*phoneapi.UploadResponse, error) {
	body, err := UploadBody(priv, bundle, keys, c.now())
	if err != nil {
		return nil, err
	}
	var resp phoneapi.UploadResponse
	if err := c.Do(ctx, phoneapi.PathUploads, phoneapi.ChaffReal, body, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// UploadBody is the padded JSON of an upload signed at at. The benchmark
// signs its uploads before the clock starts with it.
func UploadBody(priv ed25519.PrivateKey, bundle []byte, keys []exposure.Key, at time.Time) ([]byte, error) {
	pub := priv.Public().(ed25519.PublicKey)
	at = at.Truncate(time.Second)
	u := protocol.Upload{Bundle: bundle, Phone: pub, At: at, Keys: keys}
	req := phoneapi.UploadRequest{
		Bundle:    bundle,
		PublicKey: pub,
		Time:      at.Unix(),
		Keys:      WireKeys(keys),
		Signature: ed25519.Sign(priv, u.Marshal()),
	}
	return pad(&req, &req.Padding, phoneapi.UploadRequestBlock)
}

// ChaffUpload sends an upload that only looks like one: nKeys keys made
// as the phone makes its real ones (RandomKeys), a random bundle of
// bundleLen bytes and a key pair of its own, marked chaff. Phones send
// these so that an upload does not tell an observer that its phone's owner
// is infected; the server answers them as it answers a real upload of the
// same keys.
func (c *Client) ChaffUpload(ctx context.Context, bundleLen, nKeys int) error {
	keys, err := RandomKeys(nKeys, c.now())
	if err != nil {
		return err
	}
	bundle := make([]byte, bundleLen)
	if _, err := crand.Read(bundle); err != nil {
		return err
	}
	body, err := UploadBody(randomKey(), bundle, keys, c.now())
	if err != nil {
		return err
	}
	return c.Do(ctx, phoneapi.PathUploads, phoneapi.ChaffFake, body, nil)
}

// KeyDays is how many whole days before today RandomKeys spreads keys
// over: GAEN's 14, all within the days a server publishes by default.
const KeyDays = exposure.DefaultMaxAgeDays

// RandomKeys makes n random keys (1..exposure.MaxKeysPerUpload) of the
// KeyDays whole days before now's UTC day, as a phone that reset its key
// on some days holds them: one a day for up to KeyDays keys, more spread
// evenly over the days but the oldest beyond that, each day's keys one
// after another (at most 3 a day for 30 keys, never overlapping). Every
// key has expired, so an aggregator publishes it at once; the reference
// phone uploads these and sends them as chaff.
func RandomKeys(n int, now time.Time) ([]exposure.Key, error) {
	if n < 1 || n > exposure.MaxKeysPerUpload {
		return nil, fmt.Errorf("phone: %d keys; a phone uploads 1..%d", n, exposure.MaxKeysPerUpload)
	}
	today := exposure.IntervalNumber(now.UTC().Truncate(24 * time.Hour))
	keys := make([]exposure.Key, 0, n)
	for d := range min(n, KeyDays) {
		// Day d (0 is yesterday) holds its share of the keys. The oldest
		// day holds one: a key that ended earlier on it would be past the
		// days published late in the day.
		perDay := 1
		if rest, days := n-KeyDays, KeyDays-1; rest > 0 && d < days {
			perDay += rest / days
			if d < rest%days {
				perDay++
			}
		}
		start := today - int32(d+1)*exposure.MaxRollingPeriod
		period := int32(exposure.MaxRollingPeriod / perDay)
		for j := range perDay {
			k := exposure.Key{RollingStart: start + int32(j)*period, RollingPeriod: period, TransmissionRisk: 4}
			if j == perDay-1 {
				k.RollingPeriod = exposure.MaxRollingPeriod - int32(j)*period
			}
			if _, err := crand.Read(k.Data[:]); err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// ChaffPickup sends a pickup marked chaff, of a real one's size.
func (c *Client) ChaffPickup(ctx context.Context) error {
	body, err := c.PickupBody(randomKey(), c.now())
	if err != nil {
		return err
	}
	return c.Do(ctx, phoneapi.PathPickup, phoneapi.ChaffFake, body, nil)
}

// Do posts body to path with the chaff header, retrying the identical
// bytes on network errors, 429 and 503 (Backoff), and decodes a 2xx answer
// into out (nil: discarded). A refusal is an *Error.
func (c *Client) Do(ctx context.Context, path, chaff string, body []byte, out any) error {
	var last error
	attempts := max(c.retry.Attempts, 1)
	start := time.Now()
	for n, tries := 0, 0; ; n++ {
		if n > 0 {
			wait := c.retry.Wait(n - 1)
			var e *Error
			if errors.As(last, &e) {
				wait += e.retryAfter
			}
			if err := sleep(ctx, wait); err != nil {
				return fmt.Errorf("%w (after %w)", err, last)
			}
		}
		err := c.once(ctx, path, chaff, body, out)
		if err == nil {
			return nil
		}
		last = err
		if ctx.Err() != nil {
			return err
		}
		var e *Error
		if errors.As(err, &e) && !e.Temporary() {
			return err
		}
		// Paced by the server: retried while patience lasts.
		if e != nil && e.retryAfter > 0 && time.Since(start)+e.retryAfter <= c.retry.Patience {
			continue
		}
		if tries++; tries >= attempts {
			return last
		}
	}
}

func (c *Client) once(ctx context.Context, path, chaff string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("phone API: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(phoneapi.HeaderChaff, chaff)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("phone API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("phone API: read answer: %w", err)
	}
	if len(b) > maxResponse {
		return fmt.Errorf("phone API: answer larger than %d bytes", maxResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Status: resp.StatusCode}
		var er phoneapi.ErrorResponse
		if json.Unmarshal(b, &er) == nil {
			e.Code, e.Message = er.Error, er.Message
		}
		e.retryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("phone API: answer: %w", err)
	}
	return nil
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 when
// absent or unreadable.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(h); err == nil {
		return time.Duration(max(s, 0)) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// maxResponse bounds an answer: a pickup with a bundle is a few KiB.
const maxResponse = 1 << 20

// WireKeys are keys as the API carries them.
func WireKeys(keys []exposure.Key) []phoneapi.Key {
	out := make([]phoneapi.Key, len(keys))
	for i, k := range keys {
		out[i] = phoneapi.Key{Key: k.Data[:], RollingStartIntervalNumber: k.RollingStart, RollingPeriod: k.RollingPeriod, TransmissionRisk: k.TransmissionRisk}
	}
	return out
}

// pad marshals v with an empty padding field, then again with as much
// padding as brings it to a multiple of block.
func pad(v any, padding *string, block int) ([]byte, error) {
	*padding = ""
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	*padding = phoneapi.Padding(phoneapi.PadLen(len(b), block))
	if b, err = json.Marshal(v); err != nil {
		return nil, err
	}
	if len(b)%block != 0 {
		return nil, fmt.Errorf("phone API: padded body is %d bytes, not a multiple of %d", len(b), block)
	}
	return b, nil
}

func randomKey() ed25519.PrivateKey {
	_, priv, _ := ed25519.GenerateKey(crand.Reader)
	return priv
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// DefaultHTTPClient is an HTTP client for conns phones talking at once to
// one server: enough idle connections kept that each reuses its own.
func DefaultHTTPClient(conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = conns
	t.MaxIdleConnsPerHost = conns
	return &http.Client{Timeout: 30 * time.Second, Transport: t}
}
