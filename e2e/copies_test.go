package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/registry"
)

// TestBackofficeCopies: two `vouch backoffice` processes behind nginx
// (round robin). A clinician signs in through the proxy and is served by
// both copies: a vouch prepared on one is signed on the other. A burst of
// sign-in attempts from one address, and of vouches from one card, is
// allowed the configured burst once between the copies, not once each.
func TestBackofficeCopies(t *testing.T) {
	const (
		burst    = 5  // VOUCH_*_PER_MINUTE=1: a burst of 5, one token a minute after
		attempts = 30 // from one address, through the proxy
	)
	w := newWorld(t, testenv.DatabaseURL(t))
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	proxy := freeAddr(t)
	origin := "http://" + proxy
	var upstreams []string
	for i := range 2 {
		addr, ops := freeAddr(t), freeAddr(t)
		p := w.role(fmt.Sprintf("backoffice-%d", i+1), []string{
			"VOUCH_HTTP_ADDR=" + addr, "VOUCH_OPS_LISTEN=" + ops,
			"VOUCH_BACKOFFICE_ORIGIN=" + origin, "VOUCH_TRUSTED_PROXIES=127.0.0.1/32",
			"VOUCH_SIGNIN_PER_MINUTE=1", "VOUCH_VOUCH_PER_MINUTE=1",
			"VOUCH_REGISTRY_URL=" + l.URL, "VOUCH_REGISTRY_BIND_DN=" + l.BindDN, "VOUCH_REGISTRY_BIND_PASSWORD=" + l.BindPassword,
			"VOUCH_REGISTRY_BASE_DN=ou=people," + l.BaseDN,
		}, "backoffice")
		// One after the other: each logs in to the back end's token,
		// which SoftHSM rewrites at every login.
		w.waitHTTP(p, "http://"+ops+"/readyz")
		upstreams = append(upstreams, addr)
	}
	copiesNginx(t, filepath.Join(w.dir, "nginx"), proxy, upstreams)

	// The clinician signs in through the proxy, from 127.0.0.1.
	gp := copiesCard(t, w, "gp")
	c := copiesClient(t, origin, "127.0.0.1")
	st, r, _ := c.post("/api/challenge", map[string]any{"purpose": "sign-in"})
	if st != http.StatusOK || r["origin"] != origin {
		t.Fatalf("challenge: %d %v", st, r)
	}
	ch := copiesBytes(t, r, "challenge")
	st, r, _ = c.post("/api/signin", map[string]any{"challenge": ch, "authCert": gp.auth.Certificate().Raw,
		"signCert": gp.sign.Certificate().Raw, "signature": copiesSign(t, gp.auth, protocol.LoginMessage(origin, ch))})
	if st != http.StatusOK {
		t.Fatalf("sign-in through the proxy: %d %v", st, r)
	}
	// Served by both copies: the vouch page, signed in, from each.
	served := map[string]int{}
	for range 4 {
		// Signed out, the page is a redirect to /signin.
		st, _, from := c.get("/vouch")
		if st != http.StatusOK {
			t.Fatalf("the vouch page from %s: %d, want 200 (signed in)", from, st)
		}
		served[from]++
	}
	if len(served) != 2 {
		t.Fatalf("the signed-in pages came from %v, want both copies %v", served, upstreams)
	}
	// A vouch prepared on one copy and signed on the other.
	vouchStart := time.Now()
	_, code := copiesPhone(t)
	st, r, prepFrom := c.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
	if st != http.StatusOK {
		t.Fatalf("prepare on %s: %d %v", prepFrom, st, r)
	}
	st, r, signFrom := c.post("/api/vouch/sign", map[string]any{"signature": copiesSign(t, gp.sign, copiesBytes(t, r, "statement"))})
	if st != http.StatusOK || signFrom == prepFrom {
		t.Fatalf("prepared on %s, signed on %s: %d %v; want 200 from the other copy", prepFrom, signFrom, st, r)
	}
	t.Logf("signed in through the proxy; pages from %v; prepared on %s, signed on %s", served, prepFrom, signFrom)

	// Sign-in attempts from one address (127.0.0.2, which nginx puts in
	// X-Forwarded-For), some at once: the burst once between the copies.
	bad := copiesClient(t, origin, "127.0.0.2")
	start := time.Now()
	codes, from := copiesBurst(t, attempts, func() (int, string) {
		st, _, from := bad.post("/api/challenge", map[string]any{"purpose": "sign-in"})
		return st, from
	})
	t.Logf("%d sign-in attempts from one address: %d answered 200, %d answered 429; by copy %v",
		attempts, codes[http.StatusOK], codes[http.StatusTooManyRequests], from)
	// A token a minute comes back: on a machine so loaded that the burst
	// took minutes, that many more.
	if ok := codes[http.StatusOK]; ok < burst || ok > burst+copiesMinutes(start) || codes[http.StatusTooManyRequests] != attempts-ok {
		t.Errorf("sign-in attempts: %v, want %d allowed and %d refused (429) between both copies", codes, burst, attempts-burst)
	}
	if len(from) != 2 {
		t.Errorf("the attempts reached %v, want both copies", from)
	}
	// The clinician's own address is another bucket.
	if st, r, _ := c.post("/api/challenge", map[string]any{"purpose": "unlock"}); st != http.StatusOK {
		t.Errorf("the clinician's challenge after another address's burst: %d %v", st, r)
	}

	// Vouches of one card: the prepare and sign above took two tokens.
	codes, from = copiesBurst(t, 12, func() (int, string) {
		_, code := copiesPhone(t)
		st, _, from := c.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
		return st, from
	})
	t.Logf("12 vouches prepared by one card: %d answered 200, %d answered 429; by copy %v",
		codes[http.StatusOK], codes[http.StatusTooManyRequests], from)
	if ok := codes[http.StatusOK]; ok < burst-2 || ok > burst-2+copiesMinutes(vouchStart) || codes[http.StatusTooManyRequests] != 12-ok {
		t.Errorf("vouches of one card: %v, want %d allowed and %d refused (429) between both copies", codes, burst-2, 12-(burst-2))
	}
}

// copiesMinutes is the tokens a bucket of one a minute got back since
// start.
func copiesMinutes(start time.Time) int { return int(time.Since(start) / time.Minute) }

// copiesNginx runs nginx on addr as a round-robin proxy to upstreams, with
// its configuration, pid and temporary files in dir; each answer names
// the copy that gave it (X-Upstream).
func copiesNginx(t *testing.T, dir, addr string, upstreams []string) {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		bin = "/usr/sbin/nginx"
		if _, serr := os.Stat(bin); serr != nil {
			t.Fatalf("nginx (Debian package nginx; make deps): %v", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	var servers strings.Builder
	for _, u := range upstreams {
		fmt.Fprintf(&servers, "server %s;\n", u)
	}
	conf := fmt.Sprintf(`%[1]s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path %[2]s/body;
	proxy_temp_path %[2]s/proxy;
	fastcgi_temp_path %[2]s/fastcgi;
	uwsgi_temp_path %[2]s/uwsgi;
	scgi_temp_path %[2]s/scgi;
	upstream backoffice { %[4]s }
	server {
		listen %[3]s;
		location / {
			proxy_pass http://backoffice;
			proxy_set_header Host $http_host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_next_upstream off;
			add_header X-Upstream $upstream_addr always;
		}
	}
}
`, user, dir, addr, servers.String())
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "nginx.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("nginx: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx's error log:\n%s", tail(b, 4000))
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx stopped:\n%s", tail(b, 4000))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("nginx does not listen on " + addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// copiesBurst sends n requests, four at a time, and counts the answers by
// status and the copies that gave them.
func copiesBurst(t *testing.T, n int, send func() (int, string)) (codes map[int]int, from map[string]int) {
	t.Helper()
	codes, from = map[int]int{}, map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan struct{}, n)
	for range n {
		work <- struct{}{}
	}
	close(work)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				st, up := send()
				mu.Lock()
				codes[st]++
				from[up]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return codes, from
}

// copiesCardKeys are a test card's two keys, as the card agent uses them.
type copiesCardKeys struct{ auth, sign *p11.Signer }

func copiesCard(t *testing.T, w *world, name string) copiesCardKeys {
	t.Helper()
	mod, err := p11.Open(w.man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	open := func(uri, pin string) *p11.Signer {
		u, err := p11.ParseURI(uri)
		if err != nil {
			t.Fatal(err)
		}
		s, err := mod.Signer(u, pin)
		if err != nil {
			t.Fatalf("%s: %v", uri, err)
		}
		s.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
		t.Cleanup(s.Close)
		return s
	}
	for _, c := range w.man.Cards {
		if c.Name == name {
			return copiesCardKeys{auth: open(c.AuthURI, c.PIN), sign: open(c.SignURI, c.PIN)}
		}
	}
	t.Fatalf("no test card %q", name)
	return copiesCardKeys{}
}

func copiesSign(t *testing.T, k crypto.Signer, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func copiesPhone(t *testing.T) (ed25519.PublicKey, phonecode.Code) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, phonecode.FromPublicKey(pub)
}

func copiesBytes(t *testing.T, r map[string]any, k string) []byte {
	t.Helper()
	s, _ := r[k].(string)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) == 0 {
		t.Fatalf("%s: %q, %v", k, s, err)
	}
	return b
}

// copiesHTTP is one browser (its cookies) at one source address.
type copiesHTTP struct {
	t      *testing.T
	base   string
	client *http.Client
}

func copiesClient(t *testing.T, base, from string) *copiesHTTP {
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	return &copiesHTTP{t: t, base: base, client: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport:     &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 8},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request and returns the status, the body and the copy that
// answered.
func (c *copiesHTTP) do(method, path string, body []byte) (int, []byte, string) {
	req, err := http.NewRequestWithContext(context.Background(), method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Error(err)
		return 0, nil, ""
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept-Language", "en")
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Error(err)
		return 0, nil, ""
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp.Header.Get("X-Upstream")
}

func (c *copiesHTTP) post(path string, v any) (int, map[string]any, string) {
	b, _ := json.Marshal(v)
	st, out, from := c.do(http.MethodPost, path, b)
	var r map[string]any
	if err := json.Unmarshal(out, &r); err != nil {
		c.t.Errorf("%s: %d %q is not JSON", path, st, out)
	}
	return st, r, from
}

func (c *copiesHTTP) get(path string) (int, string, string) {
	st, out, from := c.do(http.MethodGet, path, nil)
	return st, string(out), from
}
