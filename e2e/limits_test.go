package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/registry"
)

// opsPaths are what only the operations listener answers.
var opsPaths = []string{"/metrics", "/readyz", "/healthz", "/debug/pprof/"}

// checkOps asks every public address for the operator's paths (404) and
// the operations address for them (answered: readiness 200 or 503, the
// rest 200). The origin too answers 404, never 400, for a directory path.
func checkOps(t *testing.T, role string, public []string, ops string) {
	t.Helper()
	get := func(url string) (int, []byte) {
		t.Helper()
		cl := &http.Client{Timeout: 10 * time.Second}
		res, err := cl.Get(url)
		if err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	for _, p := range opsPaths {
		for _, pub := range public {
			code, _ := get("http://" + pub + p)
			if code != http.StatusNotFound {
				t.Errorf("%s: public %s%s = %d, want 404", role, pub, p, code)
			}
		}
		code, body := get("http://" + ops + p)
		switch {
		case p == "/readyz" && (code == 200 || code == 503) && bytes.Contains(body, []byte(`"checks"`)):
		case p == "/metrics" && code == 200 && bytes.Contains(body, []byte("go_goroutines")):
		case (p == "/healthz" || p == "/debug/pprof/") && code == 200:
		default:
			t.Errorf("%s: operations %s%s = %d %.200s", role, ops, p, code, body)
		}
	}
}

// Every role serves metrics, health, readiness and diagnostics on its
// operations listener alone; its public address answers 404 for them.
func TestOperationsListener(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	type role struct {
		name   string
		args   []string
		public map[string]string // variable → address
		extra  []string
	}
	// One after the other: each signs in to the test HSM's tokens, which
	// SoftHSM rewrites at every login.
	for _, r := range []role{
		{name: "ingest", args: []string{"ingest"}, public: map[string]string{"VOUCH_INGEST_ADDR": freeAddr(t)}},
		{name: "cdn", args: []string{"cdn"}, public: map[string]string{"VOUCH_CDN_ADDR": freeAddr(t)}},
		{name: "backoffice", args: []string{"backoffice"}, public: map[string]string{"VOUCH_HTTP_ADDR": freeAddr(t)}},
		{name: "store", args: []string{"store"}},
		{name: "aggregate", args: []string{"aggregate"}},
		{name: "registry-sync", args: []string{"registry-sync"},
			extra: []string{"VOUCH_REGISTRY_URL=" + l.URL, "VOUCH_REGISTRY_BIND_DN=" + l.BindDN, "VOUCH_REGISTRY_BIND_PASSWORD=" + l.BindPassword}},
	} {
		ops := freeAddr(t)
		extra := append([]string{"VOUCH_OPS_LISTEN=" + ops}, r.extra...)
		var public []string
		for k, v := range r.public {
			extra = append(extra, k+"="+v)
			public = append(public, v)
		}
		p := w.role(r.name, extra, r.args...)
		w.waitHTTP(p, "http://"+ops+"/healthz")
		for _, pub := range public {
			w.waitPort(p, pub)
		}
		checkOps(t, r.name, public, ops)
		p.stop()
	}
}

// rss reads a process's resident set and its peak, in bytes.
func rss(pid int) (now, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			now = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return now, peak, nil
}

// attacker keeps one connection at a time to addr that sends a request
// head with an ever longer header, 2 KiB every 100 ms up to 1 MiB (10 s
// of Go's default read-header timeout hold 200 KiB), then comes back
// shortly after the server closes it.
type attacker struct {
	open, peakOpen, refused, dialFailed atomic.Int64
	dialErr                             atomic.Value // the first, for the log
}

func (a *attacker) run(ctx context.Context, addr, head string) {
	chunk := bytes.Repeat([]byte("a"), 2<<10)
	for ctx.Err() == nil {
		d := net.Dialer{Timeout: 5 * time.Second}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			a.dialErr.CompareAndSwap(nil, err.Error())
			a.dialFailed.Add(1)
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		if n := a.open.Add(1); n > a.peakOpen.Load() {
			a.peakOpen.Store(n) // a rough peak is enough
		}
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			line, _ := bufio.NewReader(c).ReadString('\n')
			if strings.Contains(line, " 431 ") {
				a.refused.Add(1)
			}
		}()
		c.SetWriteDeadline(time.Now().Add(15 * time.Second))
		_, err = io.WriteString(c, head+"X-Pad: ")
		for sent := 0; err == nil && sent < 1<<20; sent += len(chunk) {
			if _, err = c.Write(chunk); err != nil {
				break
			}
			select {
			case <-closed:
				err = io.EOF
			case <-ctx.Done():
				err = ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		c.Close()
		<-closed
		a.open.Add(-1)
		sleepCtx(ctx, time.Duration(150+rand.IntN(100))*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// 2,000 connections sending large request heads slowly to `vouch all`'s
// public listeners (the phone API and the back office) leave it under
// 200 MB, are refused with 431, and a real phone picks up and uploads
// meanwhile and afterwards.
func TestListenerLimits(t *testing.T) {
	const (
		conns    = 2000
		limitRSS = 200 << 20
		attack   = 15 * time.Second
	)
	w := newWorld(t, testenv.DatabaseURL(t))
	phones, gp := vouched(t, w.man, 2)
	w.vouch(phones, gp)
	ops, backoffice := freeAddr(t), freeAddr(t)
	all := w.role("all", []string{"VOUCH_OPS_LISTEN=" + ops, "VOUCH_HTTP_ADDR=" + backoffice,
		"VOUCH_BACKOFFICE_ORIGIN=http://" + backoffice}, "all")
	w.waitHTTP(all, "http://"+ops+"/readyz")
	ingest := strings.TrimPrefix(w.ingest, "http://")
	origin := strings.TrimPrefix(w.cdn, "http://")
	checkOps(t, "all", []string{ingest, backoffice, origin}, ops)
	pid := all.cmd.Process.Pid
	before, _, err := rss(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vouch all before: %d MB", before>>20)

	ctx, stop := context.WithTimeout(context.Background(), attack)
	defer stop()
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		// Sampled until the attack ends; past twice the limit there is no
		// need to take the machine further.
		defer close(sampled)
		for ctx.Err() == nil {
			now, _, err := rss(pid)
			if err != nil {
				return
			}
			if now > peak.Load() {
				peak.Store(now)
			}
			if now > 2*limitRSS {
				stop()
			}
			sleepCtx(ctx, 50*time.Millisecond)
		}
	}()
	phoneAPI, bo := &attacker{}, &attacker{}
	var wg sync.WaitGroup
	for i := range conns {
		a, addr, head := phoneAPI, ingest, "POST /v1/uploads HTTP/1.1\r\nHost: "+ingest+"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
		if i%2 == 1 {
			a, addr, head = bo, backoffice, "GET / HTTP/1.1\r\nHost: "+backoffice+"\r\nAccept: text/html\r\n"
		}
		wg.Add(1)
		go func() { defer wg.Done(); a.run(ctx, addr, head) }()
	}

	// A real phone, in the middle of it.
	sleepCtx(ctx, 3*time.Second)
	upload := func(ph phone) error {
		uctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		client := phoneclient.New(w.ingest)
		b, err := client.Pickup(uctx, ph.priv)
		if err != nil {
			return fmt.Errorf("pickup: %w", err)
		}
		if b == nil {
			return fmt.Errorf("pickup: pending, want the bundle")
		}
		if _, err := client.Upload(uctx, ph.priv, b, ph.keys); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		return nil
	}
	duringErr := upload(phones[0])
	duringAt := attack - time.Until(deadlineOf(ctx))
	<-ctx.Done()
	wg.Wait()
	<-sampled
	_, hwm, err := rss(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("vouch all: peak %d MB sampled, VmHWM %d MB; phone API: %d refused with 431, peak %d open, %d dials failed (%v); back office: %d refused, peak %d open, %d dials failed (%v)",
		peak.Load()>>20, hwm>>20, phoneAPI.refused.Load(), phoneAPI.peakOpen.Load(), phoneAPI.dialFailed.Load(), phoneAPI.dialErr.Load(),
		bo.refused.Load(), bo.peakOpen.Load(), bo.dialFailed.Load(), bo.dialErr.Load())
	if duringErr != nil {
		t.Errorf("a real upload during the attack (after %s): %v", duringAt.Round(time.Millisecond), duringErr)
	}
	if peak.Load() > limitRSS || hwm > limitRSS {
		t.Errorf("vouch all grew to %d MB (peak sampled), VmHWM %d MB; want under %d MB", peak.Load()>>20, hwm>>20, limitRSS>>20)
	}
	if phoneAPI.refused.Load() == 0 || bo.refused.Load() == 0 {
		t.Errorf("no 431 from the phone API (%d) or the back office (%d)", phoneAPI.refused.Load(), bo.refused.Load())
	}
	if err := upload(phones[1]); err != nil {
		t.Errorf("a real upload after the attack: %v", err)
	}
	if !all.running() {
		t.Error("vouch all stopped")
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// The phone API believes X-Forwarded-For only from the proxies configured
// for it (VOUCH_INGEST_TRUSTED_PROXIES), else from those of every role
// (VOUCH_TRUSTED_PROXIES); its IP filter sees the client they name. Its
// listener limits are configured as documented.
func TestPhoneAPIListenerConfig(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	// The same world, for a test of its own.
	t.Run("limits configured", func(t *testing.T) { checkLimitsConfigured(t, w) })
	for _, tt := range []struct {
		name         string
		env          []string
		forwarded    int // status with X-Forwarded-For: an allowed client
		notForwarded int // status without: the loopback peer, not allowed
	}{
		{"none trusted", nil, 403, 403},
		{"every role's", []string{"VOUCH_TRUSTED_PROXIES=127.0.0.0/8"}, 200, 403},
		{"the phone API's", []string{"VOUCH_INGEST_TRUSTED_PROXIES=127.0.0.0/8"}, 200, 403},
		{"the phone API's first", []string{"VOUCH_INGEST_TRUSTED_PROXIES=10.0.0.0/8", "VOUCH_TRUSTED_PROXIES=127.0.0.0/8"}, 403, 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ops, api := freeAddr(t), freeAddr(t)
			p := w.role("ingest-"+strings.ReplaceAll(tt.name, " ", "-"), append([]string{"VOUCH_OPS_LISTEN=" + ops, "VOUCH_INGEST_ADDR=" + api,
				"VOUCH_INGEST_ALLOW_CIDRS=198.51.100.0/24"}, tt.env...), "ingest")
			defer p.stop()
			w.waitHTTP(p, "http://"+ops+"/healthz")
			w.waitPort(p, api)
			for _, xff := range []string{"198.51.100.7", ""} {
				req, _ := http.NewRequest(http.MethodGet, "http://"+api+"/openapi.yaml", nil)
				want := tt.notForwarded
				if xff != "" {
					req.Header.Set("X-Forwarded-For", "203.0.113.9, "+xff)
					want = tt.forwarded
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
				if res.StatusCode != want {
					t.Errorf("X-Forwarded-For %q: %d, want %d", xff, res.StatusCode, want)
				}
			}
		})
	}
}

// checkLimitsConfigured: the phone API's limits are read from
// VOUCH_INGEST_MAX_*: a head the default 8 KiB admits is refused under a
// 6 KiB setting.
func checkLimitsConfigured(t *testing.T, w *world) {
	head := func(addr string, n int) int {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "GET /openapi.yaml HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n\r\n", strings.Repeat("a", n))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%d-byte header: %v", n, err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tt := range []struct {
		env  []string
		want int
	}{
		{nil, 200},
		{[]string{"VOUCH_INGEST_MAX_HEADER_BYTES=6144"}, 431},
	} {
		ops, api := freeAddr(t), freeAddr(t)
		p := w.role(fmt.Sprintf("ingest-%d", tt.want), append([]string{"VOUCH_OPS_LISTEN=" + ops, "VOUCH_INGEST_ADDR=" + api}, tt.env...), "ingest")
		w.waitHTTP(p, "http://"+ops+"/healthz")
		w.waitPort(p, api)
		if got := head(api, 7<<10); got != tt.want {
			t.Errorf("%v: a 7 KiB header: %d, want %d", tt.env, got, tt.want)
		}
		p.stop()
	}
}
