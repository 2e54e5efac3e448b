//go:build !mutation

package ingest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestBucketKeyIsTheBackOffices: ingest looks bundles up where the back
// office puts them.
func TestBucketKeyIsTheBackOffices(t *testing.T) {
	t.Parallel()
	p := newPhone(t)
	code := p.code()
	if got, want := ingest.AuthorizationKey(code), backoffice.BucketKey(code); got != want {
		t.Fatalf("ingest looks up %q, the back office puts %q", got, want)
	}
}

func TestPickup(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)

	status, pending := w.pickup(p.pickupReq(time.Now()), false)
	var res phoneapi.PickupResponse
	if status != http.StatusOK || json.Unmarshal(pending, &res) != nil || res.Status != phoneapi.StatusPending || res.Bundle != nil {
		t.Fatalf("before vouching: %d %.80s, want 200 pending", status, pending)
	}

	bundle, _ := w.bundle(p, bundleOpts{})
	if err := w.auths.PutAll(t.Context(), []bus.KeyValue{{Key: backoffice.BucketKey(p.code()), Value: bundle}}); err != nil {
		t.Fatal(err)
	}
	status, ready := w.pickup(p.pickupReq(time.Now()), false)
	res = phoneapi.PickupResponse{}
	if status != http.StatusOK || json.Unmarshal(ready, &res) != nil || res.Status != phoneapi.StatusReady || !bytes.Equal(res.Bundle, bundle) {
		t.Fatalf("after vouching: %d %.80s, want 200 ready with the bundle", status, ready)
	}
	// Chaff for the same phone is pending: it neither reveals nor changes.
	status, chaff := w.pickup(p.pickupReq(time.Now()), true)
	res = phoneapi.PickupResponse{}
	if status != http.StatusOK || json.Unmarshal(chaff, &res) != nil || res.Status != phoneapi.StatusPending {
		t.Fatalf("chaff: %d %.80s, want 200 pending", status, chaff)
	}
	if len(pending) != phoneapi.PickupResponseBlock || len(ready) != len(pending) || len(chaff) != len(pending) {
		t.Errorf("sizes: pending %d, ready %d, chaff %d; want all %d", len(pending), len(ready), len(chaff), phoneapi.PickupResponseBlock)
	}

	// Refusals, padded to the same block.
	stale := p.pickupReq(time.Now().Add(-10 * time.Minute))
	forged := p.pickupReq(time.Now())
	forged.Signature[0] ^= 1
	other := newPhone(t)
	stolen := p.pickupReq(time.Now())
	stolen.PublicKey = other.pub // someone who saw the code has no key
	for _, tt := range []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"stale", padRequest(&stale, phoneapi.PickupRequestBlock), http.StatusForbidden, "time-skew"},
		{"forged", padRequest(&forged, phoneapi.PickupRequestBlock), http.StatusForbidden, "phone-signature-invalid"},
		{"another key", padRequest(&stolen, phoneapi.PickupRequestBlock), http.StatusForbidden, "phone-signature-invalid"},
		{"unknown field", []byte(`{"public_key":"","time":1,"signature":"","padding":"","extra":1}`), http.StatusBadRequest, "malformed"},
		{"two objects", []byte(`{"padding":""}{"padding":""}`), http.StatusBadRequest, "malformed"},
		{"oversize", bytes.Repeat([]byte(" "), phoneapi.MaxPickupRequestSize+1), http.StatusRequestEntityTooLarge, "too-large"},
	} {
		status, body := w.post(phoneapi.PathPickup, tt.body, false)
		if status != tt.status || errorCode(body) != tt.code || len(body) != phoneapi.PickupResponseBlock {
			t.Errorf("%s: %d %q (%d bytes), want %d %q padded to %d", tt.name, status, errorCode(body), len(body), tt.status, tt.code, phoneapi.PickupResponseBlock)
		}
	}
}

func TestUploadPublishes(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	onset := time.Now().UTC().AddDate(0, 0, -3).Format(time.DateOnly)
	bundle, aid := w.bundle(p, bundleOpts{onset: onset})
	ks := keys(t, 14)
	before := time.Now()
	status, body := w.upload(p.uploadReq(bundle, ks, time.Now()), false)
	var res phoneapi.UploadResponse
	if status != http.StatusOK || json.Unmarshal(body, &res) != nil || res.Status != phoneapi.StatusPublished {
		t.Fatalf("upload: %d %s", status, body)
	}
	if len(body) != phoneapi.UploadResponseBlock {
		t.Errorf("response %d bytes, want %d", len(body), phoneapi.UploadResponseBlock)
	}
	recs, ids := w.messages()
	if len(recs) != 1 {
		t.Fatalf("%d messages on the stream, want 1", len(recs))
	}
	if ids[0] != hex.EncodeToString(aid[:]) {
		t.Errorf("message id %q, want the authorization id %x", ids[0], aid)
	}
	want := &exposure.Record{AuthorizationID: aid, Received: exposure.Coarse(before), SymptomOnset: onset, Keys: toKeys(ks)}
	if d := time.Since(before); exposure.Coarse(time.Now()) != want.Received {
		t.Skipf("the hour turned during the test (%s)", d) // the record's hour is either
	}
	if diff := cmp.Diff(want, recs[0]); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
}

func TestUploadRetryAndReplay(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{})
	req := p.uploadReq(bundle, keys(t, 3), time.Now())
	for i := range 2 { // the same upload again: a retry after a lost answer
		if status, body := w.upload(req, false); status != http.StatusOK {
			t.Fatalf("upload %d: %d %s", i, status, body)
		}
	}
	// Another upload with the same authorization: a replay.
	replay := p.uploadReq(bundle, keys(t, 3), time.Now())
	status, body := w.upload(replay, false)
	if status != http.StatusConflict || errorCode(body) != "replay" || len(body) != phoneapi.UploadResponseBlock {
		t.Errorf("replay: %d %s, want 409 replay", status, body)
	}
	recs, _ := w.messages()
	if len(recs) != 1 {
		t.Fatalf("%d messages on the stream, want 1", len(recs))
	}
	if diff := cmp.Diff(toKeys(req.Keys), recs[0].Keys); diff != "" {
		t.Errorf("published keys (-first upload +got):\n%s", diff)
	}
}

func TestUploadRefused(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{})
	now := time.Now()
	today := now.UTC().Truncate(24 * time.Hour)
	start := exposure.IntervalNumber(today)
	key := func(start, period, risk int32) phoneapi.Key {
		k := keys(t, 1)[0]
		k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk = start, period, risk
		return k
	}
	signed := func(ks []phoneapi.Key) []byte {
		r := p.uploadReq(bundle, ks, now)
		return padRequest(&r, phoneapi.UploadRequestBlock)
	}
	foreign, _ := w.bundle(p, bundleOpts{jurisdiction: "DE"})
	tampered := bytes.Clone(bundle)
	tampered[len(tampered)/3] ^= 0x01
	otherPhone := newPhone(t)
	othersBundle, _ := w.bundle(otherPhone, bundleOpts{})
	forged := p.uploadReq(bundle, keys(t, 2), now)
	forged.Signature[5] ^= 1
	stale := p.uploadReq(bundle, keys(t, 2), now.Add(-6*time.Minute))
	dup := keys(t, 1)[0]
	raw := func(r phoneapi.UploadRequest) []byte { return padRequest(&r, phoneapi.UploadRequestBlock) }
	withField := func(r phoneapi.UploadRequest) []byte {
		b, _ := json.Marshal(r)
		return append(b[:len(b)-1], []byte(`,"uploaded_by":"me"}`)...)
	}
	for _, tt := range []struct {
		name   string
		body   []byte
		status int
		code   string
	}{
		{"forged phone signature", raw(forged), http.StatusForbidden, "phone-signature-invalid"},
		{"stale time", raw(stale), http.StatusForbidden, "time-skew"},
		{"foreign jurisdiction", raw(p.uploadReq(foreign, keys(t, 2), now)), http.StatusForbidden, "wrong-jurisdiction"},
		{"tampered bundle", raw(p.uploadReq(tampered, keys(t, 2), now)), http.StatusForbidden, ""},
		{"another phone's bundle", raw(p.uploadReq(othersBundle, keys(t, 2), now)), http.StatusForbidden, "code-mismatch"},
		{"no keys", signed(nil), http.StatusBadRequest, "keys-invalid"},
		{"31 keys", signed(keys(t, 31)), http.StatusBadRequest, "keys-invalid"},
		{"4 keys with one start", signed([]phoneapi.Key{key(start, 36, 1), key(start, 36, 1), key(start, 36, 1), key(start, 36, 1)}), http.StatusBadRequest, "keys-invalid"},
		{"period 0", signed([]phoneapi.Key{key(start, 0, 1)}), http.StatusBadRequest, "keys-invalid"},
		{"period 145", signed([]phoneapi.Key{key(start, 145, 1)}), http.StatusBadRequest, "keys-invalid"},
		{"risk 9", signed([]phoneapi.Key{key(start, 144, 9)}), http.StatusBadRequest, "keys-invalid"},
		{"risk -1", signed([]phoneapi.Key{key(start, 144, -1)}), http.StatusBadRequest, "keys-invalid"},
		{"older than 14 days", signed([]phoneapi.Key{key(start-15*144, 144, 1)}), http.StatusBadRequest, "keys-invalid"},
		{"in the future", signed([]phoneapi.Key{key(exposure.IntervalNumber(now.Add(3*time.Hour)), 144, 1)}), http.StatusBadRequest, "keys-invalid"},
		{"the same key twice", signed([]phoneapi.Key{dup, func() phoneapi.Key { d := dup; d.RollingStartIntervalNumber -= 144; return d }()}), http.StatusBadRequest, "keys-invalid"},
		{"key of 15 bytes", signed([]phoneapi.Key{func() phoneapi.Key { k := key(start, 144, 1); k.Key = k.Key[:15]; return k }()}), http.StatusBadRequest, "malformed"},
		{"unknown JSON field", withField(p.uploadReq(bundle, keys(t, 2), now)), http.StatusBadRequest, "malformed"},
		{"trailing data", append(raw(p.uploadReq(bundle, keys(t, 2), now)), "{}"...), http.StatusBadRequest, "malformed"},
		{"an array", []byte(`[]`), http.StatusBadRequest, "malformed"},
		{"oversize body", append(raw(p.uploadReq(bundle, keys(t, 2), now)), bytes.Repeat([]byte(" "), phoneapi.MaxUploadRequestSize)...), http.StatusRequestEntityTooLarge, "too-large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := w.post(phoneapi.PathUploads, tt.body, false)
			if status != tt.status || (tt.code != "" && errorCode(body) != tt.code) || errorCode(body) == "" {
				t.Errorf("%d %s, want %d %q", status, body, tt.status, tt.code)
			}
			if len(body) != phoneapi.UploadResponseBlock {
				t.Errorf("refusal of %d bytes, want %d", len(body), phoneapi.UploadResponseBlock)
			}
		})
	}
	if recs, _ := w.messages(); len(recs) != 0 {
		t.Errorf("%d messages on the stream after refusals, want none", len(recs))
	}
	// None of them used the authorization up: the good upload goes through.
	if status, body := w.upload(p.uploadReq(bundle, keys(t, 2), time.Now()), false); status != http.StatusOK {
		t.Errorf("the good upload after the refusals: %d %s", status, body)
	}
}

func TestUploadLicense(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	uziOf := func(name string) string {
		for _, c := range w.man.Cards {
			if c.Name == name {
				return c.UZI
			}
		}
		t.Fatalf("no card %s", name)
		return ""
	}
	gp := uziOf("gp")
	try := func(p phone, bundle []byte) (int, string) {
		status, body := w.upload(p.uploadReq(bundle, keys(t, 2), time.Now()), false)
		return status, errorCode(body)
	}
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{})
	// Suspended since vouching: refused, with the protocol's reason.
	w.setLicense(gp, registrysync.LicenseRecord{Status: "suspended", ChangedAt: time.Now()})
	w.waitLicense(gp, false)
	if s, code := try(p, bundle); s != http.StatusForbidden || code != "license-not-active" {
		t.Errorf("suspended: %d %q, want 403 license-not-active", s, code)
	}
	// Active again: the refusal did not use the authorization up.
	w.setLicense(gp, registrysync.LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
	w.waitLicense(gp, true)
	if s, code := try(p, bundle); s != http.StatusOK {
		t.Errorf("active again: %d %q, want 200", s, code)
	}
	// Valid until yesterday: refused.
	yesterday := time.Now().Add(-24 * time.Hour)
	w.setLicense(gp, registrysync.LicenseRecord{Status: "active", MayVouch: true, ValidUntil: &yesterday, ChangedAt: time.Now()})
	p2 := newPhone(t)
	b2, _ := w.bundle(p2, bundleOpts{})
	w.waitLicense(gp, false)
	if s, code := try(p2, b2); s != http.StatusForbidden || code != "license-not-active" {
		t.Errorf("after the license's end: %d %q, want 403 license-not-active", s, code)
	}
	if recs, _ := w.messages(); len(recs) != 1 {
		t.Errorf("%d messages, want 1", len(recs))
	}
}

func TestUploadMissingLicense(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{card: "doctor"})
	for _, c := range w.man.Cards {
		if c.Name == "doctor" {
			kv, err := w.bus.JetStream().KeyValue(t.Context(), "vouch-licenses")
			if err != nil {
				t.Fatal(err)
			}
			// A refusal first, so that its deletion is seen to take effect.
			if _, err := kv.Put(t.Context(), c.UZI, []byte(`{"status":"suspended","may_vouch":false,"changed_at":"2026-01-01T00:00:00Z"}`)); err != nil {
				t.Fatal(err)
			}
			w.waitLicense(c.UZI, false)
			if err := kv.Delete(t.Context(), c.UZI); err != nil {
				t.Fatal(err)
			}
			w.waitLicense(c.UZI, true)
		}
	}
	// No record is "as attested" (docs/registry.md): the sync writes only
	// changes and those who may not vouch.
	if s, body := w.upload(p.uploadReq(bundle, keys(t, 2), time.Now()), false); s != http.StatusOK {
		t.Errorf("no license record: %d %s, want 200", s, body)
	}
	if recs, _ := w.messages(); len(recs) != 1 {
		t.Errorf("%d messages, want 1", len(recs))
	}
}

// An unreadable record refuses: it must not read as "no change".
func TestUploadUnreadableLicense(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{card: "doctor"})
	kv, err := w.bus.JetStream().KeyValue(t.Context(), "vouch-licenses")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range w.man.Cards {
		if c.Name == "doctor" {
			if _, err := kv.Put(t.Context(), c.UZI, []byte("{not json")); err != nil {
				t.Fatal(err)
			}
			w.waitLicense(c.UZI, false)
		}
	}
	if s, body := w.upload(p.uploadReq(bundle, keys(t, 2), time.Now()), false); s != http.StatusForbidden || errorCode(body) != "license-not-active" {
		t.Errorf("unreadable license record: %d %s, want 403 license-not-active", s, body)
	}
	if recs, _ := w.messages(); len(recs) != 0 {
		t.Errorf("%d messages, want none", len(recs))
	}
}

func TestUploadRevokedCard(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{card: "revoked"})
	status, body := w.upload(p.uploadReq(bundle, keys(t, 2), time.Now()), false)
	if status != http.StatusForbidden || errorCode(body) != "cert-revoked" {
		t.Errorf("revoked card: %d %s, want 403 cert-revoked", status, body)
	}
	if recs, _ := w.messages(); len(recs) != 0 {
		t.Errorf("%d messages, want none", len(recs))
	}
}

// TestUploadBusDown: when the bus does not acknowledge, the phone gets 503
// and nothing is lost: its retry of the same upload publishes once.
func TestUploadBusDown(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, aid := w.bundle(p, bundleOpts{})
	req := p.uploadReq(bundle, keys(t, 5), time.Now())
	// The stream gone: the mark is made, the publish is not acknowledged.
	if err := w.bus.JetStream().DeleteStream(t.Context(), exposure.Stream); err != nil {
		t.Fatal(err)
	}
	status, body := w.upload(req, false)
	if status != http.StatusServiceUnavailable || errorCode(body) != "unavailable" || len(body) != phoneapi.UploadResponseBlock {
		t.Fatalf("stream gone: %d %s, want 503 unavailable padded", status, body)
	}
	if _, err := w.bus.Stream(t.Context(), bus.StreamConfig{Name: exposure.Stream, Subjects: []string{exposure.Subject}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if recs, _ := w.messages(); len(recs) != 0 {
		t.Fatalf("%d messages after the 503, want none", len(recs))
	}
	if status, body := w.upload(req, false); status != http.StatusOK {
		t.Fatalf("retry: %d %s", status, body)
	}
	recs, ids := w.messages()
	if len(recs) != 1 || ids[0] != hex.EncodeToString(aid[:]) {
		t.Fatalf("%d messages (%q) after the retry, want 1", len(recs), ids)
	}

	// The bus stopped altogether: 503 for upload and pickup, promptly.
	p2 := newPhone(t)
	b2, _ := w.bundle(p2, bundleOpts{})
	w.bus.Close()
	start := time.Now()
	status, body = w.upload(p2.uploadReq(b2, keys(t, 2), time.Now()), false)
	if status != http.StatusServiceUnavailable || errorCode(body) != "unavailable" {
		t.Errorf("bus stopped: %d %s, want 503", status, body)
	}
	status, body = w.pickup(p2.pickupReq(time.Now()), false)
	if status != http.StatusServiceUnavailable || len(body) != phoneapi.PickupResponseBlock {
		t.Errorf("pickup with the bus stopped: %d (%d bytes), want 503 padded", status, len(body))
	}
	// Chaff too: during an outage it must not be the only thing answered 200.
	c := newPhone(t)
	status, body = w.upload(c.uploadReq(make([]byte, len(b2)), keys(t, 2), time.Now()), true)
	if status != http.StatusServiceUnavailable || len(body) != phoneapi.UploadResponseBlock {
		t.Errorf("chaff with the bus stopped: %d (%d bytes), want 503 padded", status, len(body))
	}
	if d := time.Since(start); d > 3*w.cfg.BusTimeout+time.Second {
		t.Errorf("answers took %s", d)
	}
}

func TestNotReadyWithoutCRLs(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	// A second service on a bus without CRLs: revocation is not ready and
	// every card is refused.
	svc, err := ingest.New(t.Context(), ingest.Config{}, ingest.Deps{Trust: w.tr, Bus: testenv.Bus(t), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Checks()["revocation"].Check(t.Context()); err == nil || !strings.Contains(err.Error(), "no current CRL") {
		t.Errorf("revocation readiness without CRLs: %v", err)
	}
}

// TestLogsHoldNoPayload: whatever is accepted or refused, the logs never
// hold a phone's key, an exposure key, a bundle or a field of a body.
func TestLogsHoldNoPayload(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	p := newPhone(t)
	bundle, _ := w.bundle(p, bundleOpts{})
	ks := keys(t, 3)
	ok := p.uploadReq(bundle, ks, time.Now())
	if status, body := w.upload(ok, false); status != http.StatusOK {
		t.Fatalf("upload: %d %s", status, body)
	}
	others := keys(t, 3)
	w.upload(p.uploadReq(bundle, others, time.Now()), false) // replay
	b, _ := json.Marshal(p.uploadReq(bundle, ks, time.Now()))
	w.post(phoneapi.PathUploads, append(b[:len(b)-1], []byte(`,"secret_field_name":1}`)...), false)
	w.post(phoneapi.PathUploads, []byte(`{"bundle": secret-garbage}`), false)
	tampered := bytes.Clone(bundle)
	tampered[40] ^= 1
	w.upload(p.uploadReq(tampered, ks, time.Now()), false)
	logs := w.logs.String()
	if !strings.Contains(logs, "replay") {
		t.Fatalf("the refusals were not logged at all:\n%s", logs)
	}
	secrets := []string{"secret_field_name", "secret-garbage", base64.StdEncoding.EncodeToString(p.pub), hex.EncodeToString(p.pub),
		base64.StdEncoding.EncodeToString(bundle[:48])}
	for _, k := range append(ks, others...) {
		secrets = append(secrets, base64.StdEncoding.EncodeToString(k.Key), hex.EncodeToString(k.Key))
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the logs hold %q", s)
		}
	}
}

// TestUploadRetryAfterLongOutage: the bus stays down for 10 minutes between
// the used mark and the publish. The phone's identical retry, long past the
// 5 minutes its signed time is good for, publishes; so does the same upload
// signed again; another upload with the authorization is still a replay.
func TestUploadRetryAfterLongOutage(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Now()}
	w := newWorldAt(t, clock.Now, nil)
	p := newPhone(t)
	bundle, aid := w.bundle(p, bundleOpts{})
	ks := keys(t, 5)
	req := p.uploadReq(bundle, ks, clock.Now())
	if err := w.bus.JetStream().DeleteStream(t.Context(), exposure.Stream); err != nil {
		t.Fatal(err)
	}
	if status, body := w.upload(req, false); status != http.StatusServiceUnavailable {
		t.Fatalf("stream gone: %d %s, want 503", status, body)
	}
	clock.add(10 * time.Minute)
	if _, err := w.bus.Stream(t.Context(), bus.StreamConfig{Name: exposure.Stream, Subjects: []string{exposure.Subject}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if status, body := w.upload(req, false); status != http.StatusOK {
		t.Fatalf("identical retry 10 minutes later: %d %s, want 200", status, body)
	}
	resigned := p.uploadReq(bundle, ks, clock.Now())
	if status, body := w.upload(resigned, false); status != http.StatusOK {
		t.Fatalf("the same keys signed again: %d %s, want 200", status, body)
	}
	other := p.uploadReq(bundle, keys(t, 5), clock.Now())
	if status, body := w.upload(other, false); status != http.StatusConflict || errorCode(body) != "replay" {
		t.Errorf("other keys with the authorization: %d %s, want 409 replay", status, body)
	}
	recs, ids := w.messages()
	if len(recs) != 1 || ids[0] != hex.EncodeToString(aid[:]) {
		t.Fatalf("%d messages (%q), want the upload's one", len(recs), ids)
	}
	if diff := cmp.Diff(toKeys(ks), recs[0].Keys); diff != "" {
		t.Errorf("published keys (-uploaded +got):\n%s", diff)
	}
	// A phone that is not the one vouched for cannot ride on the mark.
	thief := newPhone(t)
	stolen := thief.uploadReq(bundle, ks, clock.Now())
	if status, body := w.upload(stolen, false); status != http.StatusForbidden {
		t.Errorf("the bundle and keys from another phone: %d %s, want 403", status, body)
	}
}
