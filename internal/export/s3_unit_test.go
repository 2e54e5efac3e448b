package export

// The fast layer of the bucket origin: the target's name, the keys of the
// objects, its settings, the headers (the directory origin's) and the
// reading of the store's refusals. TestS3* (s3_test.go) run it against a
// real gateway.

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/vouch-nl/vouch/internal/cdn"
)

func TestParseTarget(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, bucket, prefix string
		ok                 bool
	}{
		{"s3://vouch-export", "vouch-export", "", true},
		{"s3://vouch-export/", "vouch-export", "", true},
		{"s3://vouch-export/nl/v1/", "vouch-export", "nl/v1", true},
		{"s3://a.b-c/x_y.z", "a.b-c", "x_y.z", true},
		{"https://vouch-export/nl", "", "", false},
		{"vouch-export/nl", "", "", false},
		{"s3://", "", "", false},
		{"s3://ab", "", "", false},                         // too short
		{"s3://" + strings.Repeat("a", 64), "", "", false}, // too long
		{"s3://Vouch", "", "", false},                      // upper case
		{"s3://-vouch", "", "", false},
		{"s3://vouch-", "", "", false},
		{"s3://vo..uch", "", "", false},
		{"s3://vouch_x", "", "", false},
		{"s3://vouch/../x", "", "", false},
		{"s3://vouch/.hidden", "", "", false},
		{"s3://vouch/a//b", "", "", false},
		{"s3://vouch/a b", "", "", false},
		{"s3://vouch/a%2fb", "", "", false},
	} {
		b, p, err := ParseTarget(c.in)
		if (err == nil) != c.ok || b != c.bucket || p != c.prefix {
			t.Errorf("ParseTarget(%q) = %q, %q, %v; want %q, %q, ok %v", c.in, b, p, err, c.bucket, c.prefix, c.ok)
		}
	}
}

// TestObjectKey: the prefix's URL serves the tree the directory does.
func TestObjectKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ prefix, rel, want string }{
		{"", IndexName, "index.txt"},
		{"", "exports/ab.zip", "exports/ab.zip"},
		{"nl/v1", IndexName, "nl/v1/index.txt"},
		{"nl/v1", "exports/ab.zip", "nl/v1/exports/ab.zip"},
	} {
		if got := objectKey(c.prefix, c.rel); got != c.want {
			t.Errorf("objectKey(%q, %q) = %q, want %q", c.prefix, c.rel, got, c.want)
		}
	}
}

func s3TestConfig() Config {
	return Config{Dir: "/srv/export", Period: time.Hour, Region: "NL", KeyURIs: []string{"x"}, KeyIDs: []string{"204"},
		KeyVersions: []string{"v1"}, Lease: time.Minute,
		Target: "s3://vouch-export/nl", S3Endpoint: "https://s3.example.org", S3AccessKey: "AK", S3SecretKey: "SK"}
}

func TestValidateTarget(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string // in the error; "" for none
	}{
		{"complete", func(*Config) {}, ""},
		{"no target, no S3 settings needed", func(c *Config) {
			*c = s3TestConfig()
			c.Target, c.S3Endpoint, c.S3AccessKey, c.S3SecretKey = "", "", "", ""
		}, ""},
		{"bad target", func(c *Config) { c.Target = "gs://x" }, "VOUCH_EXPORT_TARGET"},
		{"no endpoint", func(c *Config) { c.S3Endpoint = "" }, "VOUCH_EXPORT_S3_ENDPOINT"},
		{"endpoint without scheme", func(c *Config) { c.S3Endpoint = "s3.example.org" }, "VOUCH_EXPORT_S3_ENDPOINT"},
		{"no access key", func(c *Config) { c.S3AccessKey = " " }, "VOUCH_EXPORT_S3_ACCESS_KEY"},
		{"no secret key", func(c *Config) { c.S3SecretKey = "" }, "VOUCH_EXPORT_S3_SECRET_KEY"},
		{"max age under a second", func(c *Config) { c.CacheMaxAge = time.Millisecond }, "VOUCH_CDN_MAX_AGE"},
	} {
		cfg := s3TestConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: Validate() = %v, want an error naming %q", c.name, err, c.want)
		}
	}
	cfg := s3TestConfig()
	if err := cfg.Validate(); err != nil || cfg.CacheMaxAge != defaultCacheMaxAge {
		t.Errorf("CacheMaxAge unset: %v, %v; want the origin's default %v", err, cfg.CacheMaxAge, defaultCacheMaxAge)
	}
}

// TestValidateTargetWorkingCopy: without VOUCH_EXPORT_DIR, the bucket's
// working copy is in the cache directory, one per bucket and prefix; with
// neither a directory nor a target, nothing is published.
func TestValidateTargetWorkingCopy(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	cfg := s3TestConfig()
	cfg.Dir = ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(cache, "vouch", "export", "vouch-export", "nl"); cfg.Dir != want {
		t.Errorf("working copy %q, want %q", cfg.Dir, want)
	}
	cfg = s3TestConfig()
	cfg.Dir, cfg.Target = "", ""
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "VOUCH_EXPORT_DIR") {
		t.Errorf("neither directory nor target: %v", err)
	}
}

// TestS3HeadersAreTheOrigins: the objects carry the Content-Type and
// Cache-Control the directory origin (internal/cdn) sends for the same
// files, at the same VOUCH_CDN_MAX_AGE.
func TestS3HeadersAreTheOrigins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	zip := ExportsDir + "/" + strings.Repeat("ab", 32) + ".zip"
	for _, n := range []string{IndexName, zip} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, n)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, maxAge := range []time.Duration{time.Hour, defaultCacheMaxAge} {
		h, err := cdn.NewHandler(dir, maxAge, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ name, ctype, cache string }{
			{IndexName, indexContentType, indexCacheCtl},
			{zip, zipContentType, immutableCacheControl(maxAge)},
		} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/"+c.name, nil))
			if got := rec.Header().Get("Content-Type"); got != c.ctype {
				t.Errorf("%s: the origin sends Content-Type %q, the bucket %q", c.name, got, c.ctype)
			}
			if got := rec.Header().Get("Cache-Control"); got != c.cache {
				t.Errorf("%s, max age %v: the origin sends Cache-Control %q, the bucket %q", c.name, maxAge, got, c.cache)
			}
		}
		h.Close()
	}
}

func TestS3Refusals(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err                  error
		precondition, absent bool
	}{
		{nil, false, false},
		{minio.ErrorResponse{StatusCode: http.StatusPreconditionFailed, Code: "PreconditionFailed"}, true, false},
		{minio.ErrorResponse{Code: "PreconditionFailed"}, true, false},
		{minio.ErrorResponse{StatusCode: http.StatusNotFound, Code: "NoSuchKey"}, false, true},
		{minio.ErrorResponse{StatusCode: http.StatusForbidden, Code: "AccessDenied"}, false, false},
		{errors.New("connection refused"), false, false},
	} {
		if got := isPreconditionFailed(c.err); got != c.precondition {
			t.Errorf("isPreconditionFailed(%v) = %v", c.err, got)
		}
		if c.err != nil {
			if got := isNotFound(c.err); got != c.absent {
				t.Errorf("isNotFound(%v) = %v", c.err, got)
			}
		}
	}
}

func TestNewS3TargetRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		edit func(*Config)
	}{
		{"endpoint with a path", func(c *Config) { c.S3Endpoint = "https://s3.example.org/bucket" }},
		{"endpoint of another scheme", func(c *Config) { c.S3Endpoint = "ftp://s3.example.org" }},
		{"no credentials", func(c *Config) { c.S3SecretKey = "" }},
		{"missing CA file", func(c *Config) { c.S3CAFile = filepath.Join(t.TempDir(), "none.pem") }},
		{"CA file without a certificate", func(c *Config) {
			f := filepath.Join(t.TempDir(), "ca.pem")
			os.WriteFile(f, []byte("not PEM"), 0o600)
			c.S3CAFile = f
		}},
	} {
		cfg := s3TestConfig()
		c.edit(&cfg)
		if _, err := newS3Target(cfg, nil, 0); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	s, err := newS3Target(s3TestConfig(), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.String(); got != "s3://vouch-export/nl at https://s3.example.org" || strings.Contains(got, "SK") {
		t.Errorf("String() = %q", got)
	}
}

// condStore stands in for an S3-compatible store that honours only the
// conditions it is told to. The real gateway refuses both
// (TestS3IndexConflict); this shows that the target refuses to publish to
// a store that ignores either.
type condStore struct {
	mu                 sync.Mutex
	objs               map[string]bool
	noneMatch, ifMatch bool
	puts               int
}

func (c *condStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		c.puts++
		io.Copy(io.Discard, r.Body)
		if c.noneMatch && r.Header.Get("If-None-Match") == "*" && c.objs[r.URL.Path] ||
			c.ifMatch && r.Header.Get("If-Match") != "" && r.Header.Get("If-Match") != `"e1"` {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusPreconditionFailed)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`)
			return
		}
		c.objs[r.URL.Path] = true
		w.Header().Set("ETag", `"e1"`)
	case http.MethodHead:
		if !c.objs[r.URL.Path] {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
	default:
		w.WriteHeader(http.StatusNotImplemented)
	}
}

func TestS3RefusesStoreWithoutConditionalWrites(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name               string
		noneMatch, ifMatch bool
		ok                 bool
	}{
		{"both honoured", true, true, true},
		{"If-None-Match ignored", false, true, false},
		{"If-Match ignored", true, false, false},
		{"both ignored", false, false, false},
	} {
		store := &condStore{objs: map[string]bool{}, noneMatch: c.noneMatch, ifMatch: c.ifMatch}
		srv := httptest.NewServer(store)
		cfg := s3TestConfig()
		cfg.S3Endpoint = srv.URL
		tg, err := newS3Target(cfg, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tg.IndexVersion(t.Context())
		if c.ok != (err == nil) || !c.ok && !errors.Is(err, ErrNoConditionalWrites) {
			t.Errorf("%s: IndexVersion() = %q, %v", c.name, v, err)
		}
		if c.ok {
			// Shown once per process: the next run asks nothing more.
			n := store.puts
			if _, err := tg.IndexVersion(t.Context()); err != nil || store.puts != n {
				t.Errorf("%s: second run: %v, %d more PUTs", c.name, err, store.puts-n)
			}
		}
		srv.Close()
	}
}
