package federate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/federate"
)

// TestConfigBounds: the documented ranges of VOUCH_FEDERATE_MAX_FILES
// (1..100000) and VOUCH_FEDERATE_MAX_KEYS (1..100000000) hold at both ends,
// and an unset variable takes its default.
func TestConfigBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  federate.Config
		ok   bool
	}{
		{"one file a pull", federate.Config{MaxFiles: 1}, true},
		{"most files a pull", federate.Config{MaxFiles: 100000}, true},
		{"too many files", federate.Config{MaxFiles: 100001}, false},
		{"negative files", federate.Config{MaxFiles: -1}, false},
		{"one key a pull", federate.Config{MaxKeys: 1}, true},
		{"most keys a pull", federate.Config{MaxKeys: 100000000}, true},
		{"too many keys", federate.Config{MaxKeys: 100000001}, false},
		{"negative keys", federate.Config{MaxKeys: -5}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			if err := cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tt.cfg, err, tt.ok)
			}
		})
	}
	var cfg federate.Config
	if err := cfg.Validate(); err != nil || cfg.MaxFiles != 500 || cfg.MaxKeys != 2000000 {
		t.Errorf("defaults: %+v, %v; want 500 files and 2000000 keys", cfg, err)
	}
	set := federate.Config{MaxFiles: 7, MaxKeys: 9}
	if err := set.Validate(); err != nil || set.MaxFiles != 7 || set.MaxKeys != 9 {
		t.Errorf("set values: %+v, %v; want them kept", set, err)
	}
}

// TestValidName: a site name becomes the origin of its keys; it is 1..64
// characters without spaces or '/', and never this site's own "padding".
func TestValidName(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{
		"be":                    true,
		strings.Repeat("x", 64): true,
		strings.Repeat("x", 65): false,
		"":                      false,
		"padding":               false,
		"site a":                false,
		"site\ta":               false,
		"site\na":               false,
		"site\ra":               false,
		"site/a":                false,
	} {
		if err := federate.ValidName(name); (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

// TestPullTakesExactlyTheKeyLimit: a pull imports files up to MaxKeys keys
// inclusive; a single file larger than the limit is left for later, whole.
func TestPullTakesExactlyTheKeyLimit(t *testing.T) {
	t.Parallel()
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	files := map[string][]byte{}
	var paths []string
	for i := range 4 {
		name := fmt.Sprintf("%d.zip", i)
		files[name] = signed(t, partner, []export.Key{dayKey(2, 1), dayKey(3, 1), dayKey(4, 1)}, nil)
		paths = append(paths, name)
	}
	site := federate.Site{Name: "be", BaseURL: serve(t, paths, files), Keys: []*ecdsa.PublicKey{&partner.PublicKey}}

	a := newSite(t, "site-a")
	res, err := newPuller(t, a, federate.Config{MaxKeys: 6}).Pull(t.Context(), site)
	if !errors.Is(err, federate.ErrLimit) || res.Imported != 2 || res.Keys != 6 || res.Deferred != 2 {
		t.Fatalf("pull of 3-key files at 6 keys a pull: %+v, %v; want 2 files in, 2 deferred", res, err)
	}
	if n := a.count(t, "true"); n != 6 {
		t.Errorf("%d keys stored, want 6", n)
	}

	b := newSite(t, "site-b")
	res, err = newPuller(t, b, federate.Config{MaxKeys: 2}).Pull(t.Context(), site)
	if !errors.Is(err, federate.ErrLimit) || res.Imported != 0 || res.Deferred != 4 || res.Refused != 0 {
		t.Fatalf("pull of 3-key files at 2 keys a pull: %+v, %v; want all 4 deferred", res, err)
	}
	if n := b.count(t, "true"); n != 0 {
		t.Errorf("%d keys stored from a file over the limit", n)
	}

	// At exactly as many files as the limit, nothing waits.
	c := newSite(t, "site-c")
	if res, err = newPuller(t, c, federate.Config{MaxFiles: 4}).Pull(t.Context(), site); err != nil || res.Imported != 4 || res.Deferred != 0 {
		t.Fatalf("pull of 4 files at 4 a pull: %+v, %v", res, err)
	}
}

// TestPullIndexAtItsLimit: an index of exactly export.MaxIndexSize bytes is
// read whole (its last path included); one byte more is refused.
func TestPullIndexAtItsLimit(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	file := signed(t, partner, []export.Key{dayKey(2, 1)}, nil)
	const last = "last.zip"
	index := func(size int) []byte {
		// Blank lines are skipped; the file's path ends the index.
		return append([]byte(strings.Repeat("\n", size-len(last))), last...)
	}
	for _, tt := range []struct {
		size int
		ok   bool
	}{{export.MaxIndexSize, true}, {export.MaxIndexSize + 1, false}} {
		idx := index(tt.size)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/index.txt":
				w.Write(idx)
			case "/" + last:
				w.Write(file)
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(srv.Close)
		res, err := newPuller(t, a, federate.Config{}).Pull(t.Context(),
			federate.Site{Name: fmt.Sprintf("be%d", tt.size), BaseURL: srv.URL, Keys: []*ecdsa.PublicKey{&partner.PublicKey}})
		if tt.ok && (err != nil || res.Listed != 1 || res.Imported != 1) {
			t.Errorf("index of %d bytes: %+v, %v; want its file imported", tt.size, res, err)
		}
		if !tt.ok && (err == nil || res.Listed != 0) {
			t.Errorf("index of %d bytes: %+v, %v; want it refused", tt.size, res, err)
		}
	}
}

// TestPullAcceptsTodaysKey: a key whose rolling period began in the
// current interval is a key a phone may upload now, not a future one.
func TestPullAcceptsTodaysKey(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := dayKey(0, export.ReportConfirmedTest)
	now.RollingStart = exposure.IntervalNumber(time.Now())
	now.HasOnset = false
	url := serve(t, []string{"n.zip"}, map[string][]byte{"n.zip": signed(t, partner, []export.Key{now}, nil)})
	res, err := newPuller(t, a, federate.Config{}).Pull(t.Context(), federate.Site{Name: "be", BaseURL: url, Keys: []*ecdsa.PublicKey{&partner.PublicKey}})
	if err != nil || res.Keys != 1 {
		t.Fatalf("pull of a key starting this interval: %+v, %v; want it stored", res, err)
	}
}

// TestPullUnreachable: an index or file the site does not serve (a 404, a
// server error) is an error, and a missing file is refused, not recorded.
func TestPullUnreachable(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys := []*ecdsa.PublicKey{&partner.PublicKey}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	p := newPuller(t, a, federate.Config{})
	if res, err := p.Pull(t.Context(), federate.Site{Name: "be", BaseURL: down.URL, Keys: keys}); err == nil || !strings.Contains(err.Error(), "503") || res.Listed != 0 {
		t.Errorf("pull from a site answering 503: %+v, %v", res, err)
	}
	url := serve(t, []string{"gone.zip", "ok.zip"}, map[string][]byte{"ok.zip": signed(t, partner, []export.Key{dayKey(2, 1)}, nil)})
	res, err := p.Pull(t.Context(), federate.Site{Name: "be", BaseURL: url, Keys: keys})
	if err == nil || !strings.Contains(err.Error(), "404") || res.Refused != 1 || res.Imported != 1 {
		t.Errorf("pull with a missing file: %+v, %v; want it refused and the other imported", res, err)
	}
}

// TestPullCancelled: a pull whose context ends while it fetches returns the
// context's error and counts no refusal: the site did nothing wrong.
func TestPullCancelled(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/index.txt" {
			w.Write([]byte("1.zip\n2.zip\n"))
			return
		}
		cancel()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	res, err := newPuller(t, a, federate.Config{}).Pull(ctx, federate.Site{Name: "be", BaseURL: srv.URL, Keys: []*ecdsa.PublicKey{&partner.PublicKey}})
	if !errors.Is(err, context.Canceled) || res.Refused != 0 || res.Imported != 0 {
		t.Errorf("cancelled pull: %+v, %v; want context.Canceled and no refusal", res, err)
	}
}

// TestPullOverHTTPS: partner sites publish over https; a pull from one
// imports its files, and a URL of another scheme is refused before any
// request.
func TestPullOverHTTPS(t *testing.T) {
	t.Parallel()
	a := newSite(t, "site-a")
	partner, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	file := signed(t, partner, []export.Key{dayKey(2, 1)}, nil)
	requests := 0
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		if r.URL.Path == "/index.txt" {
			w.Write([]byte("1.zip\n"))
			return
		}
		w.Write(file)
	}))
	t.Cleanup(srv.Close)
	p, err := federate.New(a.db, srv.Client(), federate.Config{})
	if err != nil {
		t.Fatal(err)
	}
	keys := []*ecdsa.PublicKey{&partner.PublicKey}
	if res, err := p.Pull(t.Context(), federate.Site{Name: "be", BaseURL: srv.URL, Keys: keys}); err != nil || res.Keys != 1 {
		t.Fatalf("pull over https: %+v, %v", res, err)
	}
	for _, u := range []string{strings.Replace(srv.URL, "https", "ftp", 1), strings.Replace(srv.URL, "https", "gopher", 1)} {
		before := requests
		if _, err := p.Pull(t.Context(), federate.Site{Name: "be", BaseURL: u, Keys: keys}); err == nil || !strings.Contains(err.Error(), "not an http(s) URL") || requests != before {
			t.Errorf("pull from %s: %v; want it refused as not http(s)", u, err)
		}
	}
}
