//go:build !mutation

package ingest_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// world is the phone API on real parts: an embedded JetStream bus, the
// SoftHSM test cards and the back end's attestation key, over HTTP. The
// CRLs reach it only through the bus, as the registry sync puts them.
type world struct {
	t        *testing.T
	man      *testpki.Manifest
	mod      *p11.Module
	bus      *bus.Bus
	tr       protocol.Trust
	idOf     *protocol.Verifier // no revocation: to learn a card's identity, even a revoked one's
	att      *p11.Signer
	cards    map[string]*p11.Signer
	licenses *bus.Bucket
	auths    *bus.Bucket
	svc      *ingest.Service
	srv      *httptest.Server
	echo     *echo.Echo
	cfg      ingest.Config
	logs     *lockedBuffer
	now      func() time.Time     // the service's clock; nil: time.Now
	metrics  *prometheus.Registry // the service's and its server's metrics
	cancel   context.CancelFunc
	done     chan struct{}
}

var cardsMu sync.Mutex // p11 sessions are opened one at a time

func newWorld(t *testing.T, tune func(*ingest.Config)) *world {
	t.Helper()
	return newWorldAt(t, nil, tune)
}

// newWorldAt is a world whose service reads the time from now.
func newWorldAt(t *testing.T, now func() time.Time, tune func(*ingest.Config)) *world {
	t.Helper()
	w := &world{t: t, man: testenv.Cards(t), cards: map[string]*p11.Signer{}, now: now}
	w.bus = testenv.Bus(t)
	mod, err := p11.Open(w.man.Module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	w.mod = mod
	files := w.man.TrustFiles()
	tcfg := trust.Config{Roots: files.Roots, CAs: files.CAs(), Jurisdiction: "NL", Profile: "test",
		AttestationKeys: []string{w.man.Backend.AttestationPub}}
	if w.tr, err = tcfg.Load(time.Now()); err != nil {
		t.Fatal(err)
	}
	if w.idOf, err = protocol.NewVerifier(w.tr); err != nil {
		t.Fatal(err)
	}
	w.att = w.signer(w.man.Backend.AttestationURI, w.man.Backend.PIN)
	w.putCRLs(files.CRLs)
	if w.licenses, err = w.bus.Bucket(t.Context(), "vouch-licenses", registrysync.BucketDescription); err != nil {
		t.Fatal(err)
	}
	if w.auths, err = w.bus.ExpiringBucket(t.Context(), "authorizations", "test", protocol.MaxValidity); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.man.Cards {
		w.setLicense(c.UZI, registrysync.LicenseRecord{Status: "active", MayVouch: true, ChangedAt: time.Now()})
	}
	w.cfg = ingest.Config{RatePerSecond: 10000, RateBurst: 10000, BusTimeout: 3 * time.Second}
	if tune != nil {
		tune(&w.cfg)
	}
	w.start()
	return w
}

// start starts the service and waits until it is ready.
func (w *world) start() {
	t := w.t
	w.logs = &lockedBuffer{}
	log := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.metrics = prometheus.NewRegistry()
	svc, err := ingest.New(t.Context(), w.cfg, ingest.Deps{Trust: w.tr, Bus: w.bus, Log: log,
		Metrics: w.metrics, Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	w.svc = svc
	srv := server.New(server.Config{}, log, w.metrics, nil)
	svc.Register(srv.Echo())
	w.echo = srv.Echo()
	w.srv = httptest.NewServer(srv.Echo())
	t.Cleanup(w.srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel, w.done = cancel, make(chan struct{})
	go func() { svc.Run(ctx); close(w.done) }()
	t.Cleanup(func() { cancel(); <-w.done })
	w.eventually("ready", func() bool {
		for _, c := range svc.Checks() {
			if c.Check(t.Context()) != nil {
				return false
			}
		}
		return true
	})
}

func (w *world) eventually(what string, ok func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			w.t.Fatalf("not %s after 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLicense waits until the service decides uziNo's license as want.
func (w *world) waitLicense(uziNo string, want bool) {
	w.t.Helper()
	w.eventually("license decided", func() bool {
		ok, err := w.svc.MayVouch(uziNo, time.Now())
		return err == nil && ok == want
	})
}

// putCRLs puts CRL files in the bus's bucket as the registry sync does.
func (w *world) putCRLs(files []string) {
	w.t.Helper()
	b, err := w.bus.Bucket(w.t.Context(), registrysync.CRLBucket, registrysync.CRLBucketDescription)
	if err != nil {
		w.t.Fatal(err)
	}
	// Another test process's testenv.Cards rewrites the CRL files in
	// place: a read may meet one half written, so read until all parse.
	var entries []bus.KeyValue
	var err2 error
	for try := 0; try < 50; try++ {
		entries, err2 = nil, nil
		ders, err := revocation.Files(files).CRLs(w.t.Context())
		if err != nil {
			err2 = err
		}
		for _, der := range ders {
			crl, err := revocation.Parse(der, w.tr.CAs(), time.Now())
			if err != nil {
				err2 = err
				break
			}
			k := crl.IssuerKey()
			entries = append(entries, bus.KeyValue{Key: hex.EncodeToString(k[:]), Value: der})
		}
		if err2 == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err2 != nil {
		w.t.Fatal(err2)
	}
	if err := b.PutAll(w.t.Context(), entries); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) setLicense(uziNo string, rec registrysync.LicenseRecord) {
	w.t.Helper()
	v, _ := json.Marshal(rec)
	if err := w.licenses.PutAll(w.t.Context(), []bus.KeyValue{{Key: uziNo, Value: v}}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) signer(uri, pin string) *p11.Signer {
	w.t.Helper()
	u, err := p11.ParseURI(uri)
	if err != nil {
		w.t.Fatal(err)
	}
	cardsMu.Lock()
	defer cardsMu.Unlock()
	g, err := w.mod.Signer(u, pin)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(g.Close)
	return g
}

func (w *world) card(name string) *p11.Signer {
	w.t.Helper()
	if g, ok := w.cards[name]; ok {
		return g
	}
	for _, c := range w.man.Cards {
		if c.Name == name {
			g := w.signer(c.SignURI, c.PIN)
			pin := c.PIN
			g.SetPINPrompt(func() ([]byte, error) { return []byte(pin), nil })
			w.cards[name] = g
			return g
		}
	}
	w.t.Fatalf("no card %q", name)
	return nil
}

// phone is a phone's key pair.
type phone struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newPhone(t *testing.T) phone {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return phone{pub, priv}
}

func (p phone) code() phonecode.Code { return phonecode.FromPublicKey(p.pub) }

// bundleOpts vary a bundle.
type bundleOpts struct {
	card         string // default "gp"
	jurisdiction string // default "NL"
	onset        string
}

// bundle has a card vouch for p and the back end attest it.
func (w *world) bundle(p phone, o bundleOpts) (raw []byte, aid [16]byte) {
	w.t.Helper()
	if o.card == "" {
		o.card = "gp"
	}
	if o.jurisdiction == "" {
		o.jurisdiction = "NL"
	}
	card := w.card(o.card)
	cert := card.Certificate()
	now := time.Now()
	id, err := w.idOf.VerifyCard(cert.Raw, uzi.PurposeVouch, now)
	if err != nil {
		w.t.Fatalf("card %s: %v", o.card, err)
	}
	if _, err := rand.Read(aid[:]); err != nil {
		w.t.Fatal(err)
	}
	st, err := protocol.NewStatement(o.jurisdiction, aid, p.code(), now, o.onset, cert.Raw)
	if err != nil {
		w.t.Fatal(err)
	}
	enc, sig, err := protocol.SignStatement(card, st)
	if err != nil {
		w.t.Fatal(err)
	}
	aenc, asig, err := protocol.Attest(w.att, enc, id, protocol.LicenseActive, st.ExpiresAt, now)
	if err != nil {
		w.t.Fatal(err)
	}
	return (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: cert.Raw, Attestation: aenc, AttestationSignature: asig}).Marshal(), aid
}

// keys are n valid keys, one a day back from today.
func keys(t *testing.T, n int) []phoneapi.Key {
	t.Helper()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	out := make([]phoneapi.Key, n)
	for i := range out {
		k := make([]byte, exposure.KeySize)
		if _, err := rand.Read(k); err != nil {
			t.Fatal(err)
		}
		out[i] = phoneapi.Key{Key: k, RollingStartIntervalNumber: exposure.IntervalNumber(today.Add(-time.Duration(i) * 24 * time.Hour)),
			RollingPeriod: exposure.MaxRollingPeriod, TransmissionRisk: 4}
	}
	return out
}

func toKeys(ks []phoneapi.Key) []exposure.Key {
	out := make([]exposure.Key, len(ks))
	for i, k := range ks {
		copy(out[i].Data[:], k.Key)
		out[i].RollingStart, out[i].RollingPeriod, out[i].TransmissionRisk = k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk
	}
	return out
}

// uploadReq is p's signed upload of ks with bundle at at.
func (p phone) uploadReq(bundle []byte, ks []phoneapi.Key, at time.Time) phoneapi.UploadRequest {
	u := protocol.Upload{Bundle: bundle, Phone: p.pub, At: time.Unix(at.Unix(), 0), Keys: toKeys(ks)}
	return phoneapi.UploadRequest{Bundle: bundle, PublicKey: p.pub, Time: at.Unix(), Keys: ks, Signature: ed25519.Sign(p.priv, u.Marshal())}
}

func (p phone) pickupReq(at time.Time) phoneapi.PickupRequest {
	return phoneapi.PickupRequest{PublicKey: p.pub, Time: at.Unix(), Signature: ed25519.Sign(p.priv, protocol.PickupMessage(p.pub, time.Unix(at.Unix(), 0)))}
}

// padRequest pads a request as a phone does.
func padRequest(v any, block int) []byte {
	b, _ := json.Marshal(v)
	n := phoneapi.PadLen(len(b), block)
	switch r := v.(type) {
	case *phoneapi.PickupRequest:
		r.Padding = phoneapi.Padding(n)
	case *phoneapi.UploadRequest:
		r.Padding = phoneapi.Padding(n)
	}
	b, _ = json.Marshal(v)
	return b
}

// post sends body to path and returns the status and the raw response.
func (w *world) post(path string, body []byte, chaff bool) (int, []byte) {
	w.t.Helper()
	req, err := http.NewRequest(http.MethodPost, w.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "vouch-test-phone")
	req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
	if chaff {
		req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffFake)
	}
	res, err := w.srv.Client().Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	return res.StatusCode, b
}

func (w *world) upload(req phoneapi.UploadRequest, chaff bool) (int, []byte) {
	w.t.Helper()
	return w.post(phoneapi.PathUploads, padRequest(&req, phoneapi.UploadRequestBlock), chaff)
}

func (w *world) pickup(req phoneapi.PickupRequest, chaff bool) (int, []byte) {
	w.t.Helper()
	return w.post(phoneapi.PathPickup, padRequest(&req, phoneapi.PickupRequestBlock), chaff)
}

// errorCode is the code of an ErrorResponse body; "" when it is not one.
func errorCode(b []byte) string {
	var e phoneapi.ErrorResponse
	if json.Unmarshal(b, &e) != nil {
		return ""
	}
	return e.Error
}

// messages are the records on the keys stream, with their message ids.
func (w *world) messages() (recs []*exposure.Record, ids []string) {
	w.t.Helper()
	ctx := w.t.Context()
	js := w.bus.JetStream()
	s, err := js.Stream(ctx, exposure.Stream)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			w.t.Fatal(err)
		}
		r, err := exposure.UnmarshalRecord(m.Data)
		if err != nil {
			w.t.Fatal(err)
		}
		recs = append(recs, r)
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return recs, ids
}

func ed25519GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// lockedBuffer collects logs written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
