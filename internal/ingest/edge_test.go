//go:build !mutation

package ingest_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/vouch-nl/vouch/docs"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// fakeClock is a clock tests move.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func listLogs(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "access-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	sort.Strings(m)
	return m
}

// TestAccessLogRotatesAndDeletes: a file per UTC hour, each deleted once
// its hour began 48 hours ago, by a write or by Prune on a quiet server.
func TestAccessLogRotatesAndDeletes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := &fakeClock{t: time.Date(2026, 3, 1, 10, 30, 0, 0, time.UTC)}
	l, err := ingest.NewAccessLog(dir, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.Log("192.0.2.1", "phone/1"))
	must(l.Log("192.0.2.2", `odd "agent"`))
	clock.add(time.Hour)
	must(l.Log("192.0.2.3", "phone/1"))
	if diff := cmp.Diff([]string{"access-2026030110.log", "access-2026030111.log"}, listLogs(t, dir)); diff != "" {
		t.Fatalf("files (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile(filepath.Join(dir, "access-2026030110.log"))
	must(err)
	var lines []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]string
		must(json.Unmarshal([]byte(line), &m))
		lines = append(lines, m)
	}
	want := []map[string]string{{"ip": "192.0.2.1", "user_agent": "phone/1"}, {"ip": "192.0.2.2", "user_agent": `odd "agent"`}}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	// 47 hours after 10:00 of the first hour's file: kept.
	clock.add(46*time.Hour - 30*time.Minute) // 2026-03-03 09:00
	must(l.Log("192.0.2.4", "phone/1"))
	if got := listLogs(t, dir); !slices.Contains(got, "access-2026030110.log") {
		t.Errorf("the file of 10:00 was deleted 47 hours after: %v", got)
	}
	// 48 hours after: deleted by the next rotation.
	clock.add(time.Hour) // 10:00
	must(l.Log("192.0.2.5", "phone/1"))
	if diff := cmp.Diff([]string{"access-2026030111.log", "access-2026030309.log", "access-2026030310.log"}, listLogs(t, dir)); diff != "" {
		t.Errorf("after 48 hours (-want +got):\n%s", diff)
	}
	// A quiet server: Prune alone deletes.
	clock.add(time.Hour)
	must(l.Prune())
	if diff := cmp.Diff([]string{"access-2026030309.log", "access-2026030310.log"}, listLogs(t, dir)); diff != "" {
		t.Errorf("after Prune (-want +got):\n%s", diff)
	}
	// Other files in the directory are not the log's to delete.
	must(os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o600))
	clock.add(100 * time.Hour)
	must(l.Prune())
	if got := listLogs(t, dir); len(got) != 0 {
		t.Errorf("left %v", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Errorf("deleted another file: %v", err)
	}
}

// TestAccessLogHoldsNoPayload: the server's access log has the client's IP
// and user agent, and nothing of the request.
func TestAccessLogHoldsNoPayload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	w := newWorld(t, func(c *ingest.Config) { c.AccessLogDir = dir })
	p := newPhone(t)
	w.pickup(p.pickupReq(time.Now()), false)
	files := listLogs(t, dir)
	if len(files) != 1 || files[0] != ingest.AccessLogName(time.Now()) {
		t.Fatalf("files %v, want this hour's", files)
	}
	b, err := os.ReadFile(filepath.Join(dir, files[0]))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(b)), `{"ip":"127.0.0.1","user_agent":"vouch-test-phone"}`; got != want {
		t.Errorf("access log %q, want %q", got, want)
	}
	if strings.Contains(string(b), base64.StdEncoding.EncodeToString(p.pub)) {
		t.Error("the access log holds the phone's key")
	}
}

// TestOpenAPIMatchesTheRoutes checks docs/openapi.yaml against the real
// route table, both ways, and its schemas against phoneapi's types.
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	var doc struct {
		Paths      map[string]map[string]any `yaml:"paths"`
		Components struct {
			Schemas map[string]struct {
				Required   []string       `yaml:"required"`
				Properties map[string]any `yaml:"properties"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(docs.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	var routed []string
	for _, r := range w.echo.Routes() {
		// The shared server's static pages are not the phone API's.
		if r.Path == "/" || r.Path == "/static/*" {
			continue
		}
		routed = append(routed, r.Method+" "+r.Path)
	}
	slices.Sort(documented)
	slices.Sort(routed)
	routed = slices.Compact(routed)
	if diff := cmp.Diff(documented, routed); diff != "" {
		t.Errorf("routes (-openapi.yaml +server):\n%s", diff)
	}
	types := map[string]any{
		"PickupRequest": phoneapi.PickupRequest{}, "PickupResponse": phoneapi.PickupResponse{}, "Key": phoneapi.Key{},
		"UploadRequest": phoneapi.UploadRequest{}, "UploadResponse": phoneapi.UploadResponse{}, "ErrorResponse": phoneapi.ErrorResponse{},
	}
	for name, v := range types {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.yaml has no schema %s", name)
			continue
		}
		var fields []string
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			tag, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
			fields = append(fields, tag)
		}
		var props []string
		for p := range schema.Properties {
			props = append(props, p)
		}
		slices.Sort(fields)
		slices.Sort(props)
		if diff := cmp.Diff(fields, props); diff != "" {
			t.Errorf("schema %s (-phoneapi +openapi.yaml):\n%s", name, diff)
		}
		for _, r := range schema.Required {
			if !slices.Contains(fields, r) {
				t.Errorf("schema %s requires %q, which phoneapi.%s lacks", name, r, name)
			}
		}
	}
	if len(doc.Components.Schemas) != len(types) {
		t.Errorf("openapi.yaml has %d schemas, the test checks %d", len(doc.Components.Schemas), len(types))
	}
	res, err := http.Get(w.srv.URL + phoneapi.PathOpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	served, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(served) != string(docs.OpenAPI) {
		t.Errorf("GET /openapi.yaml: %d, %d bytes; want 200 and the document", res.StatusCode, len(served))
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		cfg     ingest.Config
		wantErr string
	}{
		{"defaults", ingest.Config{}, ""},
		{"below the floor", ingest.Config{MaxAgeDays: exposure.FloorMaxAgeDays - 1}, "VOUCH_KEYS_MAX_AGE_DAYS must be at least 10"},
		{"at the floor", ingest.Config{MaxAgeDays: exposure.FloorMaxAgeDays}, ""},
		{"bad CIDR", ingest.Config{AllowCIDRs: []string{"10.0.0.0/33"}}, "VOUCH_INGEST_ALLOW_CIDRS"},
		{"bad deny CIDR", ingest.Config{DenyCIDRs: []string{"example.org"}}, "VOUCH_INGEST_DENY_CIDRS"},
		{"short stream age", ingest.Config{StreamMaxAge: time.Minute}, "VOUCH_KEYS_STREAM_MAX_AGE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			_, err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("got %v, want an error naming %q", err, tt.wantErr)
			}
			if tt.wantErr == "" && (cfg.MaxAgeDays < exposure.FloorMaxAgeDays || cfg.Addr == "" || cfg.LicenseBucket != "vouch-licenses" ||
				cfg.AuthorizationBucket != "authorizations" || cfg.StreamMaxAge != 72*time.Hour) {
				t.Errorf("defaults not filled: %+v", cfg)
			}
		})
	}
}

func TestIPFilter(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		tune  func(*ingest.Config)
		allow bool
	}{
		{"denied", func(c *ingest.Config) { c.DenyCIDRs = []string{"127.0.0.0/8"} }, false},
		{"not allowed", func(c *ingest.Config) { c.AllowCIDRs = []string{"10.0.0.0/8"} }, false},
		{"allowed", func(c *ingest.Config) { c.AllowCIDRs = []string{"127.0.0.1/32"} }, true},
		{"allowed but denied", func(c *ingest.Config) { c.AllowCIDRs = []string{"127.0.0.0/8"}; c.DenyCIDRs = []string{"127.0.0.1/32"} }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, tt.tune)
			p := newPhone(t)
			status, body := w.pickup(p.pickupReq(time.Now()), false)
			if tt.allow {
				if status != http.StatusOK {
					t.Errorf("%d %s, want 200", status, body)
				}
				return
			}
			if status != http.StatusForbidden || errorCode(body) != "forbidden" || len(body) != phoneapi.PickupResponseBlock {
				t.Errorf("%d %s (%d bytes), want 403 forbidden padded", status, body, len(body))
			}
			// A forged X-Forwarded-For does not get past it.
			req, _ := http.NewRequest(http.MethodGet, w.srv.URL+"/healthz", nil)
			req.Header.Set("X-Forwarded-For", "10.1.2.3")
			res, err := w.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != http.StatusForbidden {
				t.Errorf("healthz with a forged X-Forwarded-For: %d, want 403", res.StatusCode)
			}
		})
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ingest.Config) { c.RatePerSecond, c.RateBurst = 0.01, 3 })
	p := newPhone(t)
	for i := range 3 {
		if status, body := w.pickup(p.pickupReq(time.Now()), false); status != http.StatusOK {
			t.Fatalf("request %d: %d %s", i, status, body)
		}
	}
	status, body := w.pickup(p.pickupReq(time.Now()), false)
	if status != http.StatusTooManyRequests || errorCode(body) != "rate-limited" || len(body) != phoneapi.PickupResponseBlock {
		t.Errorf("past the burst: %d %s (%d bytes), want 429 rate-limited padded", status, body, len(body))
	}
	// It says when to come back: one request's share of the rate.
	req, _ := http.NewRequest(http.MethodPost, w.srv.URL+phoneapi.PathPickup, nil)
	res, err := w.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got := res.Header.Get("Retry-After"); res.StatusCode != http.StatusTooManyRequests || got != "100" {
		t.Errorf("past the burst: %d, Retry-After %q, want 429 and 100 (seconds at 0.01/s)", res.StatusCode, got)
	}
	status, body = w.post(phoneapi.PathUploads, []byte(`{}`), true)
	if status != http.StatusTooManyRequests || len(body) != phoneapi.UploadResponseBlock {
		t.Errorf("upload past the burst: %d (%d bytes), want 429 padded to %d", status, len(body), phoneapi.UploadResponseBlock)
	}
}

func FuzzUploadDecode(f *testing.F) {
	p := phone{}
	var err error
	if p.pub, p.priv, err = ed25519GenerateKey(); err != nil {
		f.Fatal(err)
	}
	ks := make([]phoneapi.Key, 2)
	for i := range ks {
		ks[i] = phoneapi.Key{Key: make([]byte, 16), RollingStartIntervalNumber: int32(2900000 + i*144), RollingPeriod: 144, TransmissionRisk: 1}
		ks[i].Key[0] = byte(i)
	}
	good := p.uploadReq([]byte("a bundle"), ks, time.Unix(1760000000, 0))
	b, _ := json.Marshal(good)
	f.Add(b)
	f.Add(padRequest(&good, phoneapi.UploadRequestBlock))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"keys":[{"key":"AAAAAAAAAAAAAAAAAAAAAA=="}]} {}`))
	f.Add([]byte(`{"bundle":"","unknown":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		canon, err := ingest.DecodeUpload(data)
		if err != nil {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var req phoneapi.UploadRequest
		if err := json.Unmarshal(data, &req); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		// What the phone signs, derived independently of the decoder.
		u := protocol.Upload{Bundle: req.Bundle, Phone: req.PublicKey, At: time.Unix(req.Time, 0), Keys: toKeys(req.Keys)}
		if string(u.Marshal()) != string(canon) {
			t.Fatalf("the decoder's canonical upload is not the request's")
		}
		if len(req.Keys) > exposure.MaxKeysPerUpload || len(req.PublicKey) != 32 || len(req.Signature) != 64 {
			t.Fatalf("accepted an upload of the wrong shape: %d keys, key %d, signature %d", len(req.Keys), len(req.PublicKey), len(req.Signature))
		}
		for _, k := range req.Keys {
			if len(k.Key) != exposure.KeySize {
				t.Fatalf("accepted a key of %d bytes", len(k.Key))
			}
		}
		again, err := ingest.DecodeUpload(data)
		if err != nil || string(again) != string(canon) {
			t.Fatal("decoding is not deterministic")
		}
	})
}
