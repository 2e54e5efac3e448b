package ingest

// Benchmarks of the upload path on the fast layer's fakes (issue 24): the
// handler against the bare verification of the same upload, in CPU and
// allocations per upload, which a loaded machine does not skew as it does
// wall-clock rates. The bus's round trips are the fakes', so what is
// measured is ingest's own work.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// cpuPerOp reports the process's CPU time (user and system, the
// collector's included) per operation as cpu-ns/op, once b's loop ends:
// the measure a shared machine's load leaves meaningful, where ns/op is
// wall-clock time.
func cpuPerOp(b *testing.B) {
	b.Helper()
	start := cpuNanos()
	b.Cleanup(func() { b.ReportMetric(float64(cpuNanos()-start)/float64(b.N), "cpu-ns/op") })
}

func cpuNanos() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchKeys is the keys of one upload, as bench/'s uploads (ten days).
const benchKeys = 10

// benchUpload is a padded upload of benchKeys keys, as a phone sends it,
// its bundle and the time it is sent at.
func benchUpload(b *testing.B, u *unit) (body []byte, req phoneapi.UploadRequest, at time.Time) {
	b.Helper()
	p := newPhoneKey(b)
	bundle := u.card.bundle(b, p.pub, aidOf(9), "")
	at = t0.Add(time.Minute)
	if err := json.Unmarshal(p.uploadBody(bundle, at, goodKeys(benchKeys)), &req); err != nil {
		b.Fatal(err)
	}
	return padBody(b, &req), req, at
}

// padBody is req padded to the upload block, as phoneclient sends it.
func padBody(b testing.TB, req *phoneapi.UploadRequest) []byte {
	b.Helper()
	req.Padding = ""
	raw, err := json.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	req.Padding = phoneapi.Padding(phoneapi.PadLen(len(raw), phoneapi.UploadRequestBlock))
	raw, _ = json.Marshal(req)
	return raw
}

// BenchmarkUnitUpload is one accepted upload through the handler and its
// edge (echo, the IP filter, the rate limiter), the mark removed after each
// so that every one is a first upload.
func BenchmarkUnitUpload(b *testing.B) {
	u := newUnit(b, func(c *Config) { c.RatePerSecond, c.RateBurst = 1e9, 1<<30 })
	body, _, at := benchUpload(b, u)
	u.set(at)
	aid := aidOf(9)
	id := hex.EncodeToString(aid[:])
	b.ReportAllocs()
	b.ResetTimer()
	cpuPerOp(b)
	for range b.N {
		req := httptest.NewRequest(http.MethodPost, phoneapi.PathUploads, bytes.NewReader(body))
		req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
		req.RemoteAddr = "192.0.2.1:1234"
		rec := httptest.NewRecorder()
		u.e.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("upload: %d %s", rec.Code, rec.Body)
		}
		u.used.mu.Lock()
		delete(u.used.m, id)
		u.used.mu.Unlock()
		u.js.mu.Lock()
		u.js.pubs, u.js.tryIDs = u.js.pubs[:0], u.js.tryIDs[:0]
		u.js.mu.Unlock()
	}
}

// BenchmarkUnitBare is the reference of bench/'s upload row: the bundle
// verified for the phone, the phone's signature over the upload and the
// key rules, on the same upload, nothing else.
func BenchmarkUnitBare(b *testing.B) {
	u := newUnit(b, nil)
	_, req, at := benchUpload(b, u)
	b.ReportAllocs()
	b.ResetTimer()
	cpuPerOp(b)
	for range b.N {
		if _, err := u.s.verifier.Verify(req.Bundle, req.PublicKey, at); err != nil {
			b.Fatal(err)
		}
		keys := make([]exposure.Key, len(req.Keys))
		for i, k := range req.Keys {
			copy(keys[i].Data[:], k.Key)
			keys[i].RollingStart, keys[i].RollingPeriod, keys[i].TransmissionRisk = k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk
		}
		pu := time.Unix(req.Time, 0)
		msg := (&protocol.Upload{Bundle: req.Bundle, Phone: req.PublicKey, At: pu, Keys: keys}).Marshal()
		if !protocol.VerifyPhone(req.PublicKey, msg, req.Signature, pu, at) {
			b.Fatal("phone signature")
		}
		if err := exposure.Validate(keys, at, 14); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeUpload is the decoding of a padded upload alone: by
// decodeUpload (the fast decoder) and by decodeUploadStrict (encoding/json,
// the decoder before it and still the reference).
func BenchmarkDecodeUpload(b *testing.B) {
	u := newUnit(b, nil)
	body, _, _ := benchUpload(b, u)
	for _, d := range []struct {
		name   string
		decode func([]byte) (*decodedUpload, error)
	}{{"fast", decodeUpload}, {"strict", decodeUploadStrict}} {
		b.Run(d.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			cpuPerOp(b)
			for range b.N {
				if _, err := d.decode(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
