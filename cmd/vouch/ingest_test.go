package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// TestIngestServes starts `vouch ingest` from its environment alone — no
// database — and has a phone ask for its bundle.
func TestIngestServes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	tcfg, _ := testTrust(t)
	setTrustEnv(t, tcfg)
	t.Setenv("VOUCH_ATTESTATION_KEYS", "../../testdata/bundle/attestation.pub.pem")
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none") // never opened
	t.Setenv("VOUCH_BUS_DIR", t.TempDir())
	t.Setenv("VOUCH_INGEST_ADDR", addr)
	// Readiness is on the operations listener.
	ops, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opsAddr := ops.Addr().String()
	ops.Close()
	t.Setenv("VOUCH_OPS_LISTEN", opsAddr)
	logs := t.TempDir()
	t.Setenv("VOUCH_INGEST_ACCESS_LOG_DIR", logs)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- realMain(ctx, []string{"ingest"}, &bytes.Buffer{}, &lockedWriter{w: io.Discard}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("vouch ingest: %v", err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + opsAddr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready in time: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	body, _ := json.Marshal(phoneapi.PickupRequest{PublicKey: pub, Time: now.Unix(),
		Signature: ed25519.Sign(priv, protocol.PickupMessage(pub, time.Unix(now.Unix(), 0)))})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+phoneapi.PathPickup, bytes.NewReader(body))
	req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var pr phoneapi.PickupResponse
	if res.StatusCode != http.StatusOK || json.Unmarshal(got, &pr) != nil || pr.Status != phoneapi.StatusPending || len(got) != phoneapi.PickupResponseBlock {
		t.Errorf("pickup: %d %.60s (%d bytes), want 200 pending padded", res.StatusCode, got, len(got))
	}
	if m, _ := filepath.Glob(filepath.Join(logs, "access-*.log")); len(m) != 1 {
		t.Errorf("access logs %v, want one", m)
	} else if b, _ := os.ReadFile(m[0]); !bytes.Contains(b, []byte(`"ip":"127.0.0.1"`)) {
		t.Errorf("access log %q", b)
	}
}
