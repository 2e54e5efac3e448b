package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/cdn"
	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
)

// origin is an export directory behind the real origin, counting requests.
type testOrigin struct {
	t    *testing.T
	dir  string
	url  string
	mu   sync.Mutex
	hits map[string]int
}

func newTestOrigin(t *testing.T) *testOrigin {
	o := &testOrigin{t: t, dir: t.TempDir(), hits: map[string]int{}}
	os.MkdirAll(filepath.Join(o.dir, "exports"), 0o755)
	h, err := cdn.NewHandler(o.dir, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hits[r.URL.Path]++
		o.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	o.url = srv.URL
	return o
}

// add writes an export of keys signed by key and returns its name.
func (o *testOrigin) add(key *ecdsa.PrivateKey, keys []exposure.Key) string {
	var ek []export.Key
	for _, k := range keys {
		ek = append(ek, export.Key{Key: k})
	}
	var b bytes.Buffer
	now := time.Now().UTC().Truncate(time.Hour)
	if err := export.Write(&b, now.Add(-14*24*time.Hour), now, "NL", 1, 1, ek, []export.Signer{{Signer: key, Version: "v1", ID: "204"}}); err != nil {
		o.t.Fatal(err)
	}
	sum := sha256.Sum256(b.Bytes())
	name := "exports/" + hex.EncodeToString(sum[:]) + ".zip"
	if err := os.WriteFile(filepath.Join(o.dir, name), b.Bytes(), 0o644); err != nil {
		o.t.Fatal(err)
	}
	return name
}

func (o *testOrigin) index(names ...string) {
	if err := os.WriteFile(filepath.Join(o.dir, "index.txt"), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		o.t.Fatal(err)
	}
}

func (o *testOrigin) count(name string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits["/"+name]
}

func writePub(t *testing.T, k *ecdsa.PrivateKey) string {
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "export.pub")
	os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
	return f
}

// TestSync fetches the index, then only the files it has not fetched and
// verified before; a file signed by another key is refused, not
// remembered, and asked for again next time; matches are the published
// keys among those observed.
func TestSync(t *testing.T) {
	t.Parallel()
	o := newTestOrigin(t)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keysA, _ := randomKeys(3, time.Now())
	keysB, _ := randomKeys(2, time.Now())
	keysC, _ := randomKeys(4, time.Now())
	a, b := o.add(signer, keysA), o.add(signer, keysB)
	o.index(a, b)

	dir := t.TempDir()
	seen := filepath.Join(dir, "seen.txt")
	notPublished, _ := randomKeys(1, time.Now())
	writeKeys(seen, []exposure.Key{keysB[1], notPublished[0], keysC[2]})
	state := filepath.Join(dir, "state")
	pub := writePub(t, signer)
	sync := func() (string, error) {
		var out bytes.Buffer
		err := realMain(context.Background(), []string{"sync", "-cdn", o.url, "-export-key", pub, "-seen", seen, "-state", state}, &out)
		return out.String(), err
	}

	out, err := sync()
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	wantMatch := "match   " + hex.EncodeToString(keysB[1].Data[:])
	if !strings.Contains(out, wantMatch) || !strings.Contains(out, "2 files listed, 2 new, 5 keys new, 1 matches") {
		t.Errorf("first sync:\n%s", out)
	}

	c := o.add(signer, keysC)
	o.index(a, b, c)
	out, err = sync()
	if err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	if !strings.Contains(out, "3 files listed, 1 new, 4 keys new, 1 matches") || !strings.Contains(out, hex.EncodeToString(keysC[2].Data[:])) || strings.Contains(out, wantMatch) {
		t.Errorf("second sync:\n%s", out)
	}
	for name, want := range map[string]int{"index.txt": 2, a: 1, b: 1, c: 1} {
		if got := o.count(name); got != want {
			t.Errorf("%s fetched %d times, want %d", name, got, want)
		}
	}

	forged := o.add(stranger, keysA)
	o.index(a, b, c, forged)
	for range 2 {
		out, err = sync()
		if err == nil || !strings.Contains(out, "REFUSED "+forged) {
			t.Errorf("forged export: %v\n%s", err, out)
		}
	}
	if got := o.count(forged); got != 2 {
		t.Errorf("the refused file was fetched %d times, want 2 (not remembered)", got)
	}
	if got := o.count(a); got != 1 {
		t.Errorf("%s fetched again", a)
	}

	// The index is not trusted either.
	o.index(a, "../../etc/passwd")
	if out, err = sync(); err == nil || !strings.Contains(err.Error(), "not a plain file name") {
		t.Errorf("index with a traversal: %v\n%s", err, out)
	}
	if err := realMain(context.Background(), []string{"sync", "-cdn", o.url, "-state", state}, &bytes.Buffer{}); err == nil {
		t.Error("sync without an export key")
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	k, _ := randomKeys(4, time.Now())
	got := match([]exposure.Key{k[0], k[1], k[0], k[2]}, []exposure.Key{k[0], k[2], k[3]})
	if len(got) != 2 || got[0] != k[0] || got[1] != k[2] {
		t.Errorf("match: %v", got)
	}
}

// TestAwaitPublished is simulate -cdn's end: it syncs until every
// uploaded key is in a verified export, and gives up at its deadline.
func TestAwaitPublished(t *testing.T) {
	t.Parallel()
	o := newTestOrigin(t)
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keys, _ := randomKeys(6, time.Now())
	first := o.add(signer, keys[:2])
	o.index(first)
	go func() {
		time.Sleep(500 * time.Millisecond)
		o.index(first, o.add(signer, keys[2:]))
	}()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := awaitPublished(ctx, &out, o.url, []*ecdsa.PublicKey{&signer.PublicKey}, keys); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "published 2 of 6") || !strings.HasSuffix(out.String(), "published 6 of 6 uploaded keys\n") {
		t.Errorf("output:\n%s", out.String())
	}
	other, _ := randomKeys(1, time.Now())
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := awaitPublished(ctx, &bytes.Buffer{}, o.url, []*ecdsa.PublicKey{&signer.PublicKey}, append(keys, other...)); err == nil || !strings.Contains(err.Error(), "only 6 of 7") {
		t.Errorf("a key never published: %v", err)
	}
}
