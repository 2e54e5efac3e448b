package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// fakeAPI implements the phone API's contract minimally, and checks what
// the phone sends as ingest would: strict JSON, padding, the chaff
// header, the phone's signature.
type fakeAPI struct {
	t       *testing.T
	mu      sync.Mutex
	pending int      // pickups answered "pending" before "ready"
	bundle  []byte   // what "ready" hands out
	fail    int      // uploads answered 503 first
	uploads [][]byte // every upload body received
	got     []phoneapi.UploadRequest
	pickups int
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	if r.Method != http.MethodPost || r.Header.Get(phoneapi.HeaderChaff) != phoneapi.ChaffReal {
		f.t.Errorf("%s %s with %s %q", r.Method, r.URL.Path, phoneapi.HeaderChaff, r.Header.Get(phoneapi.HeaderChaff))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	now := time.Now()
	switch r.URL.Path {
	case phoneapi.PathPickup:
		var req phoneapi.PickupRequest
		if err := dec.Decode(&req); err != nil || len(body)%phoneapi.PickupRequestBlock != 0 {
			f.t.Errorf("pickup body of %d bytes: %v", len(body), err)
		}
		at := time.Unix(req.Time, 0)
		if !protocol.VerifyPhone(req.PublicKey, protocol.PickupMessage(req.PublicKey, at), req.Signature, at, now) {
			f.t.Error("pickup signature does not verify")
		}
		f.pickups++
		resp := phoneapi.PickupResponse{Status: phoneapi.StatusPending}
		if f.pickups > f.pending {
			resp = phoneapi.PickupResponse{Status: phoneapi.StatusReady, Bundle: f.bundle}
		}
		writePadded(w, http.StatusOK, &resp, &resp.Padding, phoneapi.PickupResponseBlock)
	case phoneapi.PathUploads:
		f.uploads = append(f.uploads, body)
		if len(f.uploads) <= f.fail {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var req phoneapi.UploadRequest
		if err := dec.Decode(&req); err != nil || len(body)%phoneapi.UploadRequestBlock != 0 {
			f.t.Errorf("upload body of %d bytes: %v", len(body), err)
		}
		keys := make([]exposure.Key, len(req.Keys))
		for i, k := range req.Keys {
			copy(keys[i].Data[:], k.Key)
			keys[i].RollingStart, keys[i].RollingPeriod, keys[i].TransmissionRisk = k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk
		}
		at := time.Unix(req.Time, 0)
		u := protocol.Upload{Bundle: req.Bundle, Phone: ed25519.PublicKey(req.PublicKey), At: at, Keys: keys}
		if !protocol.VerifyPhone(req.PublicKey, u.Marshal(), req.Signature, at, now) {
			f.t.Error("upload signature does not verify")
		}
		if err := exposure.Validate(keys, now, exposure.DefaultMaxAgeDays); err != nil {
			f.t.Errorf("uploaded keys break GAEN's rules: %v", err)
		}
		f.got = append(f.got, req)
		resp := phoneapi.UploadResponse{Status: phoneapi.StatusPublished}
		writePadded(w, http.StatusOK, &resp, &resp.Padding, phoneapi.UploadResponseBlock)
	default:
		http.NotFound(w, r)
	}
}

func writePadded(w http.ResponseWriter, status int, v any, pad *string, block int) {
	b, _ := json.Marshal(v)
	*pad = phoneapi.Padding(phoneapi.PadLen(len(b), block))
	b, _ = json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// conflict answers every request as a replayed upload.
type conflict struct{}

func (conflict) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp := phoneapi.ErrorResponse{Error: "authorization-used", Message: "this authorization was used"}
	writePadded(w, http.StatusConflict, &resp, &resp.Padding, phoneapi.UploadResponseBlock)
}
