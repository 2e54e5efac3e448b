package ingest

// The fast layer: the phone API's decisions through fakes of what it
// consumes — the buckets and the stream (jetstream interfaces) and the
// clock — with a software PKI in place of the SoftHSM cards. It needs no
// NATS and no cards, so a mutation run
// (`gremlins unleash --tags mutation ./internal/ingest`, which leaves out
// the tests of the real parts) finishes within a session. The tests of the
// real parts stay the judge of the whole.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// t0 is the fast layer's present.
var t0 = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// ---- fakes at the interfaces ingest consumes ----

type fakeEntry struct {
	key string
	val []byte
	op  jetstream.KeyValueOp
}

func (e *fakeEntry) Bucket() string                  { return "fake" }
func (e *fakeEntry) Key() string                     { return e.key }
func (e *fakeEntry) Value() []byte                   { return e.val }
func (e *fakeEntry) Revision() uint64                { return 1 }
func (e *fakeEntry) Created() time.Time              { return t0 }
func (e *fakeEntry) Delta() uint64                   { return 0 }
func (e *fakeEntry) Operation() jetstream.KeyValueOp { return e.op }

// fakeKV is a bucket in memory; getErr and createErr fail those calls.
type fakeKV struct {
	jetstream.KeyValue
	mu        sync.Mutex
	m         map[string][]byte
	creates   int
	getErr    error
	createErr error
	// createLost creates that many entries whose answers are lost.
	createLost int
	ttl        time.Duration
	watcher    *fakeWatcher
	watchErr   error
}

func newFakeKV() *fakeKV { return &fakeKV{m: map[string][]byte{}} }

func (k *fakeKV) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.getErr != nil {
		return nil, k.getErr
	}
	v, ok := k.m[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return &fakeEntry{key: key, val: v}, nil
}

func (k *fakeKV) Create(_ context.Context, key string, value []byte, _ ...jetstream.KVCreateOpt) (uint64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.creates++
	if k.createErr != nil {
		return 0, k.createErr
	}
	if _, ok := k.m[key]; ok {
		return 0, jetstream.ErrKeyExists
	}
	k.m[key] = bytes.Clone(value)
	if k.createLost > 0 {
		// Written, but the answer was lost in a leader election.
		k.createLost--
		return 0, nats.ErrTimeout
	}
	return 1, nil
}

func (k *fakeKV) get(key string) []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.m[key]
}

type fakeStatus struct {
	jetstream.KeyValueStatus
	ttl time.Duration
}

func (s fakeStatus) TTL() time.Duration { return s.ttl }

func (k *fakeKV) Status(context.Context) (jetstream.KeyValueStatus, error) {
	return fakeStatus{ttl: k.ttl}, nil
}

func (k *fakeKV) WatchAll(context.Context, ...jetstream.WatchOpt) (jetstream.KeyWatcher, error) {
	if k.watchErr != nil {
		return nil, k.watchErr
	}
	return k.watcher, nil
}

type fakeWatcher struct {
	ch      chan jetstream.KeyValueEntry
	stopped bool
}

func (w *fakeWatcher) Updates() <-chan jetstream.KeyValueEntry { return w.ch }
func (w *fakeWatcher) Stop() error                             { w.stopped = true; return nil }

type published struct {
	subject string
	data    []byte
	id      string // Nats-Msg-Id
}

// fakeJS is the stream and the bucket manager.
type fakeJS struct {
	jetstream.JetStream
	mu     sync.Mutex
	pubs   []published
	pubErr error
	// failFirst fails that many tries of a publish with ErrNoStreamResponse
	// (no leader yet), lost is how many of them landed all the same
	// (their answers lost), and tries counts them.
	failFirst, lost, tries int
	tryIDs                 []string

	buckets map[string]*fakeKV
	created []jetstream.KeyValueConfig
	updated []jetstream.KeyValueConfig
	kvErr   error
}

func (j *fakeJS) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.pubErr != nil {
		return nil, j.pubErr
	}
	id := m.Header.Get(jetstream.MsgIDHeader)
	j.tries++
	j.tryIDs = append(j.tryIDs, id)
	if j.tries <= j.failFirst {
		if j.tries <= j.lost {
			j.pubs = append(j.pubs, published{m.Subject, bytes.Clone(m.Data), id})
		}
		return nil, jetstream.ErrNoStreamResponse
	}
	j.pubs = append(j.pubs, published{m.Subject, bytes.Clone(m.Data), id})
	return &jetstream.PubAck{}, nil
}

// stored is how many messages the stream keeps of what was published:
// one per message id (its dedupe window, which covers every retry).
func (j *fakeJS) stored() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	ids := map[string]bool{}
	for _, p := range j.pubs {
		ids[p.id] = true
	}
	return len(ids)
}

// Stream answers for a stream that exists (DoOn asks when a publish finds
// no responders).
func (j *fakeJS) Stream(context.Context, string) (jetstream.Stream, error) { return nil, nil }

func (j *fakeJS) published() []published {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]published(nil), j.pubs...)
}

func (j *fakeJS) KeyValue(_ context.Context, bucket string) (jetstream.KeyValue, error) {
	if j.kvErr != nil {
		return nil, j.kvErr
	}
	kv, ok := j.buckets[bucket]
	if !ok {
		return nil, jetstream.ErrBucketNotFound
	}
	return kv, nil
}

func (j *fakeJS) CreateKeyValue(_ context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	j.created = append(j.created, cfg)
	kv := newFakeKV()
	kv.ttl = cfg.TTL
	return kv, nil
}

func (j *fakeJS) UpdateKeyValue(_ context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	j.updated = append(j.updated, cfg)
	kv := newFakeKV()
	kv.ttl = cfg.TTL
	return kv, nil
}

// ---- a software PKI: a card with an RSA key and the attestation key ----

type softCard struct {
	trust   protocol.Trust
	caKeys  map[*x509.Certificate]*ecdsa.PrivateKey // the root's and the issuing CA's, for CRLs
	cardKey *rsa.PrivateKey
	card    *x509.Certificate
	id      uzi.Identity
	attKey  *ecdsa.PrivateKey
}

var (
	pkiOnce  sync.Once
	pkiCard  *softCard
	pkiDecoy *decoy
	pkiErr   error
)

// fixtures are made once: RSA keys take a while.
func fixtures(t testing.TB) (*softCard, *decoy) {
	t.Helper()
	pkiOnce.Do(func() {
		prof, err := uzi.ProfileByName("test")
		if err != nil {
			pkiErr = err
			return
		}
		if pkiCard, pkiErr = newSoftCard(prof); pkiErr != nil {
			return
		}
		pkiDecoy, pkiErr = newDecoy(pkiCard.trust, t0)
	})
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pkiCard, pkiDecoy
}

func newSoftCard(prof uzi.Profile) (*softCard, error) {
	nb, na := t0.Add(-24*time.Hour), t0.Add(365*24*time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fast layer root"}, NotBefore: nb, NotAfter: na,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	root, _ := x509.ParseCertificate(der)
	rootKey := caKey
	if caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	der, err = x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "fast layer CA"},
		NotBefore: nb, NotAfter: na, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		root, &caKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	c := &softCard{caKeys: map[*x509.Certificate]*ecdsa.PrivateKey{root: rootKey, ca: caKey}}
	if c.cardKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	name := prof.OIDCA(uzi.CardCareProvider) + "-1-900000001-Z-99999999-" + prof.VouchProfessions()[0] + ".000-99999999"
	san, err := uzi.SANExtension(name)
	if err != nil {
		return nil, err
	}
	policy, err := x509.ParseOID(prof.Policy(uzi.PurposeVouch))
	if err != nil {
		return nil, err
	}
	der, err = x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "fast layer card"},
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageContentCommitment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		Policies: []x509.OID{policy}, ExtraExtensions: []pkix.Extension{san}}, ca, &c.cardKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	c.card, _ = x509.ParseCertificate(der)
	if c.id, err = uzi.FromCertificate(c.card); err != nil {
		return nil, err
	}
	if c.attKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	c.trust = protocol.Trust{Roots: []*x509.Certificate{root}, IssuingCAs: map[uzi.CardType][]*x509.Certificate{uzi.CardCareProvider: {ca}},
		AttestationKeys: []*ecdsa.PublicKey{&c.attKey.PublicKey}, Jurisdiction: "NL", Profile: prof}
	return c, nil
}

// bundle is a bundle vouched at t0 for phone under authorization aid.
func (c *softCard) bundle(t testing.TB, phone ed25519.PublicKey, aid [protocol.AuthorizationIDLen]byte, onset string) []byte {
	t.Helper()
	st, err := protocol.NewStatement("NL", aid, phonecode.FromPublicKey(phone), t0.Add(-time.Minute), onset, c.card.Raw)
	if err != nil {
		t.Fatal(err)
	}
	enc, sig, err := protocol.SignStatement(c.cardKey, st)
	if err != nil {
		t.Fatal(err)
	}
	aenc, asig, err := protocol.Attest(c.attKey, enc, c.id, protocol.LicenseActive, st.ExpiresAt, t0.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	return (&protocol.Bundle{Statement: enc, StatementSignature: sig, Cert: c.card.Raw, Attestation: aenc, AttestationSignature: asig}).Marshal()
}

// ---- the service on fakes ----

type unit struct {
	t       testing.TB
	s       *Service
	e       *echo.Echo
	card    *softCard
	auths   *fakeKV
	used    *fakeKV
	chaff   *fakeKV
	js      *fakeJS
	reg     *prometheus.Registry
	logs    *bytes.Buffer
	mu      sync.Mutex
	now     time.Time
	records map[string]registrysync.LicenseRecord
}

func (u *unit) clock() time.Time { u.mu.Lock(); defer u.mu.Unlock(); return u.now }
func (u *unit) set(t time.Time)  { u.mu.Lock(); defer u.mu.Unlock(); u.now = t }

func newUnit(t testing.TB, tune func(*Config)) *unit {
	t.Helper()
	card, d := fixtures(t)
	cfg := Config{}
	if tune != nil {
		tune(&cfg)
	}
	n, err := cfg.Validate()
	if err != nil {
		t.Fatal(err)
	}
	v, err := protocol.NewVerifier(card.trust)
	if err != nil {
		t.Fatal(err)
	}
	u := &unit{t: t, card: card, auths: newFakeKV(), used: newFakeKV(), chaff: newFakeKV(), js: &fakeJS{},
		reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}, now: t0}
	log := slog.New(slog.NewTextHandler(u.logs, nil))
	lic := newLicenses(nil, log)
	lic.loaded.Store(true)
	u.s = &Service{cfg: cfg, nets: n, log: log, now: u.clock, verifier: v, js: u.js, auths: u.auths, used: u.used,
		retry:      bus.Retry{Attempts: 5, Within: 2 * time.Second, Attempt: time.Second, Wait: time.Millisecond, MaxWait: 5 * time.Millisecond},
		chaffMarks: u.chaff, licenses: lic, decoy: d, metrics: newMetrics(u.reg)}
	u.e = echo.New()
	u.s.Register(u.e)
	return u
}

type phone struct {
	pub  ed25519.PublicKey
	priv ed25519.PrivateKey
}

func newPhoneKey(t testing.TB) phone {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return phone{pub, priv}
}

func (p phone) pickupBody(at time.Time) []byte {
	b, _ := json.Marshal(phoneapi.PickupRequest{PublicKey: p.pub, Time: at.Unix(), Signature: ed25519.Sign(p.priv, protocol.PickupMessage(p.pub, at))})
	return b
}

// goodKeys are n keys GAEN accepts at t0: one a day, before today.
func goodKeys(n int) []exposure.Key {
	keys := make([]exposure.Key, n)
	day := t0.Truncate(24 * time.Hour)
	for i := range keys {
		keys[i].Data[0], keys[i].Data[1] = byte(i+1), 0xAA
		keys[i].RollingStart = exposure.IntervalNumber(day.Add(-time.Duration(i+1) * 24 * time.Hour))
		keys[i].RollingPeriod = exposure.MaxRollingPeriod
	}
	return keys
}

func (p phone) uploadBody(bundle []byte, at time.Time, keys []exposure.Key) []byte {
	u := protocol.Upload{Bundle: bundle, Phone: p.pub, At: time.Unix(at.Unix(), 0), Keys: keys}
	req := phoneapi.UploadRequest{Bundle: bundle, PublicKey: p.pub, Time: at.Unix(), Signature: ed25519.Sign(p.priv, u.Marshal())}
	for _, k := range keys {
		req.Keys = append(req.Keys, phoneapi.Key{Key: bytes.Clone(k.Data[:]), RollingStartIntervalNumber: k.RollingStart,
			RollingPeriod: k.RollingPeriod, TransmissionRisk: k.TransmissionRisk})
	}
	b, _ := json.Marshal(req)
	return b
}

type answer struct {
	status int
	body   []byte
	header http.Header
}

func (a answer) code() string {
	var er phoneapi.ErrorResponse
	_ = json.Unmarshal(a.body, &er)
	return er.Error
}

func (u *unit) do(method, path string, body []byte, chaff string, ip string) answer {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	if chaff != "" {
		req.Header.Set(phoneapi.HeaderChaff, chaff)
	}
	if ip == "" {
		ip = "192.0.2.1"
	}
	req.RemoteAddr = ip + ":1234"
	rec := httptest.NewRecorder()
	u.e.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Body.Bytes(), rec.Header()}
}

func (u *unit) pickup(body []byte, chaff string) answer {
	return u.do(http.MethodPost, phoneapi.PathPickup, body, chaff, "")
}

func (u *unit) upload(body []byte, chaff string) answer {
	return u.do(http.MethodPost, phoneapi.PathUploads, body, chaff, "")
}

// counter is the value of a counter vector's series.
func counter(t *testing.T, reg *prometheus.Registry, name, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "result", result) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

func aidOf(b byte) (aid [protocol.AuthorizationIDLen]byte) {
	for i := range aid {
		aid[i] = b
	}
	return aid
}

// ---- pickup ----

func TestUnitPickup(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	p := newPhoneKey(t)
	decode := func(a answer) phoneapi.PickupResponse {
		t.Helper()
		var r phoneapi.PickupResponse
		if err := json.Unmarshal(a.body, &r); err != nil {
			t.Fatalf("%d %s: %v", a.status, a.body, err)
		}
		if len(a.body)%phoneapi.PickupResponseBlock != 0 || a.header.Get(echo.HeaderCacheControl) != "no-store" {
			t.Errorf("answer of %d bytes, Cache-Control %q: want a multiple of %d, no-store", len(a.body), a.header.Get(echo.HeaderCacheControl), phoneapi.PickupResponseBlock)
		}
		return r
	}
	if a := u.pickup(p.pickupBody(t0), "0"); a.status != http.StatusOK || decode(a).Status != phoneapi.StatusPending || decode(a).Bundle != nil {
		t.Errorf("not vouched yet: %d %s, want 200 pending without a bundle", a.status, a.body)
	}
	bundle := []byte("the vouched bundle")
	u.auths.m[AuthorizationKey(phonecode.FromPublicKey(p.pub))] = bundle
	if a := u.pickup(p.pickupBody(t0), "0"); a.status != http.StatusOK || decode(a).Status != phoneapi.StatusReady || !bytes.Equal(decode(a).Bundle, bundle) {
		t.Errorf("vouched: %d %s, want 200 ready with the bundle", a.status, a.body)
	}
	if a := u.pickup(p.pickupBody(t0), "1"); a.status != http.StatusOK || decode(a).Status != phoneapi.StatusPending || decode(a).Bundle != nil {
		t.Errorf("chaff of a vouched phone: %d %s, want 200 pending", a.status, a.body)
	}
	if got := counter(t, u.reg, "vouch_ingest_pickups_total", "accepted"); got != 3 {
		t.Errorf("accepted pickups counted %v, want 3", got)
	}
}

func TestUnitPickupRefused(t *testing.T) {
	t.Parallel()
	p := newPhoneKey(t)
	other := newPhoneKey(t)
	wrongSig, _ := json.Marshal(phoneapi.PickupRequest{PublicKey: p.pub, Time: t0.Unix(), Signature: ed25519.Sign(other.priv, protocol.PickupMessage(p.pub, t0))})
	shortKey, _ := json.Marshal(phoneapi.PickupRequest{PublicKey: p.pub[:31], Time: t0.Unix(), Signature: make([]byte, 64)})
	shortSig, _ := json.Marshal(phoneapi.PickupRequest{PublicKey: p.pub, Time: t0.Unix(), Signature: make([]byte, 63)})
	for _, tt := range []struct {
		name   string
		body   []byte
		chaff  string
		busErr error
		status int
		code   string
		result string
	}{
		{"no chaff header", p.pickupBody(t0), "", nil, 400, "malformed", "refused"},
		{"chaff header 2", p.pickupBody(t0), "2", nil, 400, "malformed", "refused"},
		{"not JSON", []byte("nope"), "0", nil, 400, "malformed", "refused"},
		{"short key", shortKey, "0", nil, 400, "malformed", "refused"},
		{"short signature", shortSig, "0", nil, 400, "malformed", "refused"},
		{"too large", append(p.pickupBody(t0), bytes.Repeat([]byte(" "), phoneapi.MaxPickupRequestSize)...), "0", nil, 413, "too-large", "refused"},
		{"wrong signature", wrongSig, "0", nil, 403, "phone-signature-invalid", "refused"},
		{"6 minutes late", p.pickupBody(t0.Add(-6 * time.Minute)), "0", nil, 403, "time-skew", "refused"},
		{"6 minutes early", p.pickupBody(t0.Add(6 * time.Minute)), "0", nil, 403, "time-skew", "refused"},
		{"bus down", p.pickupBody(t0), "0", errors.New("timeout"), 503, "unavailable", "unavailable"},
		{"bus down, chaff", p.pickupBody(t0), "1", errors.New("timeout"), 503, "unavailable", "unavailable"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, nil)
			u.auths.getErr = tt.busErr
			a := u.pickup(tt.body, tt.chaff)
			if a.status != tt.status || a.code() != tt.code || len(a.body) != phoneapi.PickupResponseBlock {
				t.Errorf("%d %s (%d bytes), want %d %s padded to %d", a.status, a.body, len(a.body), tt.status, tt.code, phoneapi.PickupResponseBlock)
			}
			if got := counter(t, u.reg, "vouch_ingest_pickups_total", tt.result); got != 1 {
				t.Errorf("%s pickups counted %v, want 1", tt.result, got)
			}
		})
	}
}

// Within 5 minutes either way is on time.
func TestUnitPickupClockSkewBounds(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	p := newPhoneKey(t)
	for _, d := range []time.Duration{-protocol.PhoneClockSkew, protocol.PhoneClockSkew} {
		if a := u.pickup(p.pickupBody(t0.Add(d)), "0"); a.status != http.StatusOK {
			t.Errorf("signed %v from now: %d %s, want 200", d, a.status, a.body)
		}
	}
	if err := checkPhone(p.pub, nil, nil, t0.Add(protocol.PhoneClockSkew+time.Second), t0); err != errStale {
		t.Errorf("checkPhone 5m1s early: %v, want time-skew", err)
	}
	if err := checkPhone(p.pub, nil, nil, t0.Add(-protocol.PhoneClockSkew-time.Second), t0); err != errStale {
		t.Errorf("checkPhone 5m1s late: %v, want time-skew", err)
	}
}

// ---- upload ----

func recordsOf(t *testing.T, pubs []published, subject string) []*exposure.Record {
	t.Helper()
	var out []*exposure.Record
	for _, p := range pubs {
		if p.subject != subject {
			continue
		}
		r, err := exposure.UnmarshalRecord(p.data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestUnitUploadPublishes(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	p := newPhoneKey(t)
	aid := aidOf(7)
	bundle := u.card.bundle(t, p.pub, aid, t0.Add(-48*time.Hour).Format(time.DateOnly))
	keys := goodKeys(3)
	u.set(t0.Add(90 * time.Minute))
	a := u.upload(p.uploadBody(bundle, t0.Add(90*time.Minute), keys), "0")
	var res phoneapi.UploadResponse
	if a.status != http.StatusOK || json.Unmarshal(a.body, &res) != nil || res.Status != phoneapi.StatusPublished || len(a.body) != phoneapi.UploadResponseBlock {
		t.Fatalf("%d %s, want 200 published padded", a.status, a.body)
	}
	recs := recordsOf(t, u.js.published(), exposure.Subject)
	if len(recs) != 1 || len(u.js.published()) != 1 {
		t.Fatalf("published %v, want one record on %s", u.js.published(), exposure.Subject)
	}
	r := recs[0]
	if r.AuthorizationID != aid || !r.Received.Equal(t0.Add(time.Hour)) || r.SymptomOnset != "2026-12-05" || len(r.Keys) != 3 || r.Keys[2] != keys[2] {
		t.Errorf("record %+v: want the authorization, the hour received, the onset and the keys", r)
	}
	sum := uploadSum(&protocol.Upload{Bundle: bundle, Phone: p.pub, Keys: keys})
	if got := u.used.get(hex.EncodeToString(aid[:])); !bytes.Equal(got, sum[:]) {
		t.Errorf("used mark %x, want the upload's sum %x", got, sum)
	}
	if u.chaff.creates != 0 {
		t.Errorf("a first upload wrote %d chaff marks", u.chaff.creates)
	}
	if got := counter(t, u.reg, "vouch_ingest_uploads_total", "accepted"); got != 1 {
		t.Errorf("accepted uploads counted %v, want 1", got)
	}
}

// A retry of a marked upload publishes again, however late; another upload
// with the authorization is a replay.
func TestUnitUploadRetryAndReplay(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	p := newPhoneKey(t)
	aid := aidOf(9)
	bundle := u.card.bundle(t, p.pub, aid, "")
	keys := goodKeys(2)
	if a := u.upload(p.uploadBody(bundle, t0, keys), "0"); a.status != http.StatusOK {
		t.Fatalf("first: %d %s", a.status, a.body)
	}
	mark := bytes.Clone(u.used.get(hex.EncodeToString(aid[:])))
	// 20 hours later: the signed time is stale, the keys older; the
	// same upload still publishes, and writes where a first one would.
	u.set(t0.Add(20 * time.Hour))
	if a := u.upload(p.uploadBody(bundle, t0, keys), "0"); a.status != http.StatusOK {
		t.Errorf("identical retry: %d %s, want 200", a.status, a.body)
	}
	if a := u.upload(p.uploadBody(bundle, t0.Add(20*time.Hour), keys), "0"); a.status != http.StatusOK {
		t.Errorf("retry signed again: %d %s, want 200", a.status, a.body)
	}
	if u.chaff.creates != 2 || u.used.creates != 1 || !bytes.Equal(u.used.get(hex.EncodeToString(aid[:])), mark) {
		t.Errorf("retries: %d chaff writes, %d used creates; want 2 and 1, the mark unchanged", u.chaff.creates, u.used.creates)
	}
	if got := recordsOf(t, u.js.published(), exposure.Subject); len(got) != 3 || got[2].AuthorizationID != aid {
		t.Errorf("%d records published, want 3 of the authorization", len(got))
	}
	// Other keys, or another order: a replay.
	u.set(t0)
	for name, ks := range map[string][]exposure.Key{"other keys": goodKeys(3), "reordered": {keys[1], keys[0]}} {
		if a := u.upload(p.uploadBody(bundle, t0, ks), "0"); a.status != http.StatusConflict || a.code() != "replay" || len(a.body) != phoneapi.UploadResponseBlock {
			t.Errorf("%s: %d %s, want 409 replay padded", name, a.status, a.body)
		}
	}
	if got := counter(t, u.reg, "vouch_ingest_uploads_total", "refused"); got != 2 {
		t.Errorf("refused counted %v, want 2", got)
	}
}

// Two identical uploads at once: the second finds the first's mark
// created between its lookup and its create, and publishes too.
func TestUnitMarkUsedRace(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	ctx := context.Background()
	if err := u.s.markUsed(ctx, "a", []byte("sum")); err != nil {
		t.Fatal(err)
	}
	if err := u.s.markUsed(ctx, "a", []byte("sum")); err != nil {
		t.Errorf("the same upload again: %v, want nil", err)
	}
	if err := u.s.markUsed(ctx, "a", []byte("other")); err != errReplay {
		t.Errorf("another upload: %v, want replay", err)
	}
	u.used.createErr = errors.New("bus down")
	var ae *apiError
	if err := u.s.markUsed(ctx, "b", []byte("sum")); !errors.As(err, &ae) || ae.status != 503 {
		t.Errorf("create fails: %v, want 503", err)
	}
	u.used.createErr, u.used.getErr = nil, errors.New("bus down")
	if err := u.s.markUsed(ctx, "a", []byte("sum")); !errors.As(err, &ae) || ae.status != 503 {
		t.Errorf("lookup after an existing key fails: %v, want 503", err)
	}
	retry, err := u.s.marked(ctx, "a", []byte("sum"))
	if err == nil || retry {
		t.Errorf("marked with the bus down: %v %v, want an error", retry, err)
	}
	u.used.getErr = nil
	for _, tt := range []struct {
		id, sum string
		want    bool
	}{{"a", "sum", true}, {"a", "other", false}, {"z", "sum", false}} {
		if got, err := u.s.marked(ctx, tt.id, []byte(tt.sum)); got != tt.want || err != nil {
			t.Errorf("marked(%s, %s) = %v %v, want %v", tt.id, tt.sum, got, err, tt.want)
		}
	}
}

func TestUnitUploadRefused(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	p := newPhoneKey(t)
	other := newPhoneKey(t)
	bundle := card.bundle(t, p.pub, aidOf(3), "")
	ok := goodKeys(2)
	badPeriod := goodKeys(2)
	badPeriod[1].RollingPeriod = 0
	tooOld := goodKeys(1)
	tooOld[0].RollingStart = exposure.IntervalNumber(t0.Add(-16 * 24 * time.Hour))
	raw := func(mut func(*phoneapi.UploadRequest)) []byte {
		var r phoneapi.UploadRequest
		_ = json.Unmarshal(p.uploadBody(bundle, t0, ok), &r)
		mut(&r)
		b, _ := json.Marshal(r)
		return b
	}
	for _, tt := range []struct {
		name   string
		body   []byte
		chaff  string
		status int
		code   string
	}{
		{"no chaff header", p.uploadBody(bundle, t0, ok), "", 400, "malformed"},
		{"trailing data", append(p.uploadBody(bundle, t0, ok), []byte("{}")...), "0", 400, "malformed"},
		{"short phone key", raw(func(r *phoneapi.UploadRequest) { r.PublicKey = r.PublicKey[:31] }), "0", 400, "malformed"},
		{"short signature", raw(func(r *phoneapi.UploadRequest) { r.Signature = r.Signature[:63] }), "0", 400, "malformed"},
		{"no bundle", raw(func(r *phoneapi.UploadRequest) { r.Bundle = nil }), "0", 400, "malformed"},
		{"bundle too large", raw(func(r *phoneapi.UploadRequest) { r.Bundle = make([]byte, protocol.MaxBundleSize+1) }), "0", 400, "malformed"},
		{"short key", raw(func(r *phoneapi.UploadRequest) { r.Keys[1].Key = r.Keys[1].Key[:15] }), "0", 400, "malformed"},
		{"31 keys", p.uploadBody(bundle, t0, goodKeys(31)), "0", 400, "keys-invalid"},
		{"no keys", p.uploadBody(bundle, t0, nil), "0", 400, "keys-invalid"},
		{"period 0", p.uploadBody(bundle, t0, badPeriod), "0", 400, "keys-invalid"},
		{"16 days old", p.uploadBody(bundle, t0, tooOld), "0", 400, "keys-invalid"},
		{"period 0, chaff", p.uploadBody(bundle, t0, badPeriod), "1", 400, "keys-invalid"},
		{"too large", append(p.uploadBody(bundle, t0, ok), bytes.Repeat([]byte(" "), phoneapi.MaxUploadRequestSize)...), "0", 413, "too-large"},
		{"signed by another", raw(func(r *phoneapi.UploadRequest) {
			u := protocol.Upload{Bundle: bundle, Phone: p.pub, At: t0, Keys: ok}
			r.Signature = ed25519.Sign(other.priv, u.Marshal())
		}), "0", 403, "phone-signature-invalid"},
		{"6 minutes late", p.uploadBody(bundle, t0.Add(-6*time.Minute), ok), "0", 403, "time-skew"},
		{"6 minutes early", p.uploadBody(bundle, t0.Add(6*time.Minute), ok), "0", 403, "time-skew"},
		{"6 minutes late, chaff", p.uploadBody(bundle, t0.Add(-6*time.Minute), ok), "1", 403, "time-skew"},
		{"another phone's bundle", other.uploadBody(bundle, t0, ok), "0", 403, string(protocol.ReasonCodeMismatch)},
		{"not a bundle", p.uploadBody([]byte("garbage"), t0, ok), "0", 403, string(protocol.ReasonMalformed)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, nil)
			a := u.upload(tt.body, tt.chaff)
			if a.status != tt.status || a.code() != tt.code || len(a.body) != phoneapi.UploadResponseBlock {
				t.Errorf("%d %s (%d bytes), want %d %s padded to %d", a.status, a.body, len(a.body), tt.status, tt.code, phoneapi.UploadResponseBlock)
			}
			if n := len(u.js.published()); n != 0 || u.used.creates != 0 {
				t.Errorf("refused, yet %d published and %d marks", n, u.used.creates)
			}
			if got := counter(t, u.reg, "vouch_ingest_uploads_total", "refused"); got != 1 {
				t.Errorf("refused counted %v, want 1", got)
			}
		})
	}
}

// The keys-invalid message names the rule, for a phone's developer.
func TestUnitUploadKeysMessage(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	p := newPhoneKey(t)
	bundle := u.card.bundle(t, p.pub, aidOf(4), "")
	var er phoneapi.ErrorResponse
	_ = json.Unmarshal(u.upload(p.uploadBody(bundle, t0, goodKeys(31)), "0").body, &er)
	if er.Message != exposure.ErrTooManyKeys.Error() {
		t.Errorf("31 keys: message %q, want %q", er.Message, exposure.ErrTooManyKeys)
	}
	// 30 keys are allowed by the decoder (3 a day is still GAEN's).
	keys := goodKeys(30)
	for i := range keys {
		keys[i].RollingStart = goodKeys(10)[i/3].RollingStart
		keys[i].RollingPeriod = exposure.MaxRollingPeriod
	}
	if a := u.upload(p.uploadBody(bundle, t0, keys), "0"); a.status != http.StatusOK {
		t.Errorf("30 keys: %d %s, want 200", a.status, a.body)
	}
	// The days published follow the configuration.
	u10 := newUnit(t, func(c *Config) { c.MaxAgeDays = 10 })
	old := goodKeys(12)[11:]
	if a := u10.upload(p.uploadBody(u.card.bundle(t, p.pub, aidOf(5), ""), t0, old), "0"); a.code() != "keys-invalid" {
		t.Errorf("12-day-old key at 10 days: %d %s, want keys-invalid", a.status, a.body)
	}
}

func TestUnitUploadLicense(t *testing.T) {
	t.Parallel()
	card, d := fixtures(t)
	before, after := t0.Add(-time.Hour), t0.Add(time.Hour)
	for _, tt := range []struct {
		name   string
		rec    *registrysync.LicenseRecord
		status int
	}{
		{"no record: as attested", nil, 200},
		{"active", &registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true}, 200},
		{"active within its validity", &registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true, ValidFrom: &before, ValidUntil: &after}, 200},
		{"valid from now", &registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true, ValidFrom: &t0}, 200},
		{"valid until now", &registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true, ValidUntil: &t0}, 403},
		{"not yet valid", &registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true, ValidFrom: &after}, 403},
		{"expired", &registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true, ValidUntil: &before}, 403},
		{"suspended", &registrysync.LicenseRecord{Status: directory.LicenseSuspended, MayVouch: true}, 403},
		{"may not vouch", &registrysync.LicenseRecord{Status: directory.LicenseActive}, 403},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, nil)
			if tt.rec != nil {
				u.s.licenses.records[card.id.UZI] = *tt.rec
				// The decoy's card holder has the same record: chaff
				// passes all the same.
				u.s.licenses.records[d.uzi] = *tt.rec
			}
			p := newPhoneKey(t)
			a := u.upload(p.uploadBody(card.bundle(t, p.pub, aidOf(6), ""), t0, goodKeys(1)), "0")
			if a.status != tt.status || (tt.status == 403 && a.code() != string(protocol.ReasonLicenseNotActive)) {
				t.Errorf("%d %s, want %d", a.status, a.body, tt.status)
			}
			if c := u.upload(p.uploadBody(card.bundle(t, p.pub, aidOf(6), ""), t0, goodKeys(1)), "1"); c.status != 200 {
				t.Errorf("chaff: %d %s, want 200", c.status, c.body)
			}
		})
	}
}

// An upload through a leader election of the cluster: the publish finds no
// leader for a while, or its first try lands and the answer is lost, or the
// used mark's create lands unanswered; ingest tries again with the same
// message id and answers 200 with the keys stored once. Only when the
// retries are spent is it 503, with the mark kept for the phone's retry.
func TestUnitUploadThroughElection(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	for _, tt := range []struct {
		name            string
		chaff           string
		failFirst, lost int
		createLost      int
		status, tries   int
		published       int
	}{
		{"no leader for two tries", "0", 2, 0, 0, 200, 3, 1},
		{"the first try landed, its answer lost", "0", 1, 1, 0, 200, 2, 1},
		{"the mark's create landed, its answer lost", "0", 0, 0, 1, 200, 1, 1},
		{"chaff through an election", "1", 2, 0, 0, 200, 3, 1},
		{"retries spent", "0", 1000, 0, 0, 503, 5, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, nil)
			u.js.failFirst, u.js.lost, u.used.createLost = tt.failFirst, tt.lost, tt.createLost
			p := newPhoneKey(t)
			aid := aidOf(21)
			body := p.uploadBody(card.bundle(t, p.pub, aid, ""), t0, goodKeys(2))
			a := u.upload(body, tt.chaff)
			if a.status != tt.status {
				t.Fatalf("%d %s, want %d", a.status, a.body, tt.status)
			}
			if u.js.tries != tt.tries || u.js.stored() != tt.published {
				t.Errorf("%d tries, %d stored; want %d and %d", u.js.tries, u.js.stored(), tt.tries, tt.published)
			}
			want := hex.EncodeToString(aid[:])
			for i, id := range u.js.tryIDs {
				if tt.chaff == "0" && id != want || id != u.js.tryIDs[0] {
					t.Errorf("try %d with message id %q, want %q at every try", i, id, u.js.tryIDs[0])
				}
			}
			if tt.status != 503 {
				return
			}
			if u.used.get(want) == nil {
				t.Error("the used mark is gone after a 503: the phone's retry would be refused")
			}
			u.js.failFirst = 0
			if a := u.upload(body, "0"); a.status != 200 || u.js.stored() != 1 {
				t.Errorf("the phone's retry: %d %s, %d stored", a.status, a.body, u.js.stored())
			}
		})
	}
}

func TestUnitUploadUnavailable(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	for _, tt := range []struct {
		name   string
		chaff  string
		break_ func(u *unit)
		mark   bool // the used mark stays
	}{
		{"licenses not loaded", "0", func(u *unit) { u.s.licenses.loaded.Store(false) }, false},
		{"licenses not loaded, chaff", "1", func(u *unit) { u.s.licenses.loaded.Store(false) }, false},
		{"used lookup fails", "0", func(u *unit) { u.used.getErr = errors.New("down") }, false},
		{"used lookup fails, chaff", "1", func(u *unit) { u.used.getErr = errors.New("down") }, false},
		{"mark fails", "0", func(u *unit) { u.used.createErr = errors.New("down") }, false},
		{"chaff write fails", "1", func(u *unit) { u.chaff.createErr = errors.New("down") }, false},
		{"publish fails", "0", func(u *unit) { u.js.pubErr = errors.New("down") }, true},
		{"publish fails, chaff", "1", func(u *unit) { u.js.pubErr = errors.New("down") }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, nil)
			tt.break_(u)
			p := newPhoneKey(t)
			body := p.uploadBody(card.bundle(t, p.pub, aidOf(8), ""), t0, goodKeys(2))
			a := u.upload(body, tt.chaff)
			if a.status != 503 || a.code() != "unavailable" || len(a.body) != phoneapi.UploadResponseBlock {
				t.Errorf("%d %s, want 503 unavailable padded", a.status, a.body)
			}
			if got := counter(t, u.reg, "vouch_ingest_uploads_total", "unavailable"); got != 1 {
				t.Errorf("unavailable counted %v, want 1", got)
			}
			if strings.Contains(string(a.body), "down") {
				t.Errorf("the cause reached the phone: %s", a.body)
			}
			aid := aidOf(8)
			if got := u.used.get(hex.EncodeToString(aid[:])) != nil; got != tt.mark {
				t.Errorf("used mark present %v, want %v", got, tt.mark)
			}
			if tt.mark {
				// The phone's retry publishes once the bus is back.
				u.js.pubErr = nil
				u.set(t0.Add(time.Hour))
				if a := u.upload(body, "0"); a.status != 200 {
					t.Errorf("retry after the outage: %d %s", a.status, a.body)
				}
			}
		})
	}
}

// Chaff does the work of an upload and leaves nothing a reader sees: no
// used mark, nothing on the keys' subject.
func TestUnitUploadChaff(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	p := newPhoneKey(t)
	aid := aidOf(10)
	bundle := u.card.bundle(t, p.pub, aid, "")
	body := p.uploadBody(bundle, t0, goodKeys(2))
	for range 2 {
		if a := u.upload(body, "1"); a.status != 200 || len(a.body) != phoneapi.UploadResponseBlock {
			t.Fatalf("chaff: %d %s", a.status, a.body)
		}
	}
	if len(u.used.m) != 0 || u.chaff.creates != 2 || len(u.chaff.m) != 2 {
		t.Errorf("chaff: %d used marks, %d chaff writes to %d keys; want 0, 2, 2", len(u.used.m), u.chaff.creates, len(u.chaff.m))
	}
	recs := recordsOf(t, u.js.published(), ChaffSubject)
	if len(recs) != 2 || len(u.js.published()) != 2 || recs[0].AuthorizationID == aid || recs[0].AuthorizationID == recs[1].AuthorizationID {
		t.Errorf("chaff published %d records (%d on its subject), want 2 of random ids", len(u.js.published()), len(recs))
	}
	// The real upload after it is a first upload.
	if a := u.upload(body, "0"); a.status != 200 || len(u.used.m) != 1 {
		t.Errorf("real after chaff: %d %s, %d marks", a.status, a.body, len(u.used.m))
	}
	// A bundle that does not parse marks nothing and looks up a random id.
	if a := u.upload(p.uploadBody([]byte("junk"), t0, goodKeys(2)), "1"); a.status != 200 {
		t.Errorf("chaff with junk for a bundle: %d %s, want 200 (the decoy is verified)", a.status, a.body)
	}
}

func TestStatementOf(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	p := newPhoneKey(t)
	aid := aidOf(11)
	if st := statementOf(card.bundle(t, p.pub, aid, "")); st == nil || st.AuthorizationID != aid {
		t.Errorf("statementOf a bundle: %v", st)
	}
	if st := statementOf([]byte("junk")); st != nil {
		t.Errorf("statementOf junk: %v", st)
	}
	b, _ := protocol.ParseBundle(card.bundle(t, p.pub, aid, ""))
	b.Statement = []byte("junk")
	if st := statementOf(b.Marshal()); st != nil {
		t.Errorf("statementOf a bundle with a junk statement: %v", st)
	}
}

func TestUploadSumLeavesOutTheTime(t *testing.T) {
	t.Parallel()
	u := protocol.Upload{Bundle: []byte("b"), Phone: make([]byte, 32), At: t0, Keys: goodKeys(2)}
	a := uploadSum(&u)
	if !u.At.Equal(t0) {
		t.Error("uploadSum changed the upload")
	}
	u.At = t0.Add(time.Hour)
	if uploadSum(&u) != a {
		t.Error("another time: another sum")
	}
	u.Keys = u.Keys[:1]
	if uploadSum(&u) == a {
		t.Error("other keys: the same sum")
	}
	c := protocol.Upload{Bundle: []byte("b"), Phone: make([]byte, 32), At: time.Unix(0, 0), Keys: goodKeys(2)}
	if a != sha256.Sum256(c.Marshal()) {
		t.Error("the sum is not of the canonical upload at time 0")
	}
}

// ---- decoding ----

func TestDecodeStrict(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in, want string
	}{
		{`{"time":1}`, ""},
		{"  \n{\"time\":1}\n ", ""},
		{``, "not a JSON object"},
		{`[1]`, "not a JSON object"},
		{`{"time":1}{}`, "data after the JSON object"},
		{`{"time":1} x`, "data after the JSON object"},
		{`{"time":"1"}`, `JSON field "time" has the wrong type`},
		{`{"nope":1}`, "unknown JSON field"},
		{`{"time":1`, "JSON cut short"},
		{`{"time":1,}`, "JSON syntax error at offset 11"},
		{`{"public_key":"!!"}`, "not valid JSON (a value of the wrong form)"},
	} {
		var v phoneapi.PickupRequest
		err := decodeStrict([]byte(tt.in), &v)
		if got := ""; err != nil {
			got = err.Error()
			if got != tt.want {
				t.Errorf("%q: %q, want %q", tt.in, got, tt.want)
			}
		} else if tt.want != "" {
			t.Errorf("%q: accepted, want %q", tt.in, tt.want)
		}
	}
	if err := jsonCause(io.EOF); err.Error() != "JSON cut short" {
		t.Errorf("jsonCause(EOF) = %v", err)
	}
}

func TestDecodeUploadKeys(t *testing.T) {
	t.Parallel()
	p := newPhoneKey(t)
	keys := goodKeys(2)
	keys[1].TransmissionRisk = 5
	d, err := decodeUpload(p.uploadBody([]byte("b"), t0, keys))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.upload.Keys) != 2 || d.upload.Keys[1] != keys[1] || d.upload.Keys[0] != keys[0] || !d.upload.At.Equal(t0) {
		t.Errorf("decoded %+v, want the keys and the time", d.upload)
	}
	if !ed25519.Verify(p.pub, d.canon, d.sig) {
		t.Error("canon is not what the phone signed")
	}
	if _, err := decodeUpload(p.uploadBody(make([]byte, protocol.MaxBundleSize), t0, keys)); err != nil {
		t.Errorf("a bundle of the largest size: %v", err)
	}
	if _, err := decodeUpload(p.uploadBody([]byte("b"), t0, goodKeys(exposure.MaxKeysPerUpload+1))); !errors.Is(err, exposure.ErrTooManyKeys) {
		t.Errorf("31 keys: %v", err)
	}
}

// ---- the edge ----

func TestUnitEdgeRefusals(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
		size         int
	}{
		{http.MethodGet, phoneapi.PathUploads, 405, "method-not-allowed", phoneapi.UploadResponseBlock},
		{http.MethodGet, phoneapi.PathPickup, 405, "method-not-allowed", phoneapi.PickupResponseBlock},
		{http.MethodPost, "/v1/nothing", 404, "not-found", phoneapi.UploadResponseBlock},
	} {
		a := u.do(tt.method, tt.path, nil, "0", "")
		if a.status != tt.status || a.code() != tt.code || len(a.body) != tt.size {
			t.Errorf("%s %s: %d %s (%d bytes), want %d %s padded to %d", tt.method, tt.path, a.status, a.body, len(a.body), tt.status, tt.code, tt.size)
		}
	}
	// Outside the phone API, echo's own answer.
	if a := u.do(http.MethodGet, "/elsewhere", nil, "", ""); a.status != 404 || a.code() != "" {
		t.Errorf("/elsewhere: %d %s, want echo's 404", a.status, a.body)
	}
	if a := u.do(http.MethodGet, phoneapi.PathOpenAPI, nil, "", ""); a.status != 200 || a.header.Get("Content-Type") != "application/yaml" || len(a.body) == 0 {
		t.Errorf("openapi: %d %q", a.status, a.header.Get("Content-Type"))
	}
	for path, want := range map[string]int{phoneapi.PathPickup: phoneapi.PickupResponseBlock, phoneapi.PathUploads: phoneapi.UploadResponseBlock,
		"/v1/x/y": phoneapi.UploadResponseBlock, "/v2": 0, "/": 0} {
		c := u.e.NewContext(httptest.NewRequest(http.MethodGet, path, nil), httptest.NewRecorder())
		c.SetPath("/*")
		if got := blockOf(c); got != want {
			t.Errorf("blockOf(%s) = %d, want %d", path, got, want)
		}
	}
}

// A failure inside the server is a 500 without its cause, logged with it.
func TestUnitRefuseInternal(t *testing.T) {
	t.Parallel()
	u := newUnit(t, nil)
	for _, tt := range []struct {
		err    error
		status int
		code   string
	}{
		{errors.New("secret cause"), 500, "internal"},
		{echo.NewHTTPError(http.StatusServiceUnavailable, "secret cause"), 500, "internal"},
		{echo.NewHTTPError(http.StatusInternalServerError, "secret cause"), 500, "internal"},
		{echo.NewHTTPError(499), 499, ""},
		{echo.NewHTTPError(http.StatusRequestEntityTooLarge), 413, "too-large"},
		{echo.NewHTTPError(http.StatusUnsupportedMediaType), 415, "unsupported-media-type"},
		{errReplay, 409, "replay"},
		// The listener's "busy" (no body slot in time) is the phone's 503.
		{&server.Error{Status: http.StatusServiceUnavailable, Code: "busy", Cause: errors.New("secret cause")}, 503, "unavailable"},
		{&server.Error{Status: http.StatusBadGateway, Code: "x"}, 500, "internal"},
	} {
		rec := httptest.NewRecorder()
		c := u.e.NewContext(httptest.NewRequest(http.MethodPost, phoneapi.PathUploads, nil), rec)
		u.s.refuse(c, tt.err, phoneapi.UploadResponseBlock)
		a := answer{rec.Code, rec.Body.Bytes(), rec.Header()}
		if a.status != tt.status || a.code() != tt.code || len(a.body) != phoneapi.UploadResponseBlock || strings.Contains(string(a.body), "secret") {
			t.Errorf("%v: %d %s, want %d %s padded, no cause", tt.err, a.status, a.body, tt.status, tt.code)
		}
	}
	if !strings.Contains(u.logs.String(), "level=ERROR") || !strings.Contains(u.logs.String(), "secret cause") {
		t.Errorf("the 500's cause is not in the log: %s", u.logs)
	}
	// An answer already sent is left alone.
	rec := httptest.NewRecorder()
	c := u.e.NewContext(httptest.NewRequest(http.MethodPost, phoneapi.PathUploads, nil), rec)
	_ = c.String(202, "sent")
	u.s.refuse(c, errReplay, phoneapi.UploadResponseBlock)
	if rec.Body.String() != "sent" {
		t.Errorf("refuse wrote over a committed answer: %q", rec.Body)
	}
	// A refusal below 500 logs at info.
	logs := u.logs.Len()
	c = u.e.NewContext(httptest.NewRequest(http.MethodPost, phoneapi.PathUploads, nil), httptest.NewRecorder())
	u.s.refuse(c, errReplay, phoneapi.UploadResponseBlock)
	if line := u.logs.String()[logs:]; !strings.Contains(line, "level=INFO") {
		t.Errorf("a refusal logged as %q, want INFO", line)
	}
}

func TestPadded(t *testing.T) {
	t.Parallel()
	for _, v := range []any{&phoneapi.PickupResponse{Status: "ready", Bundle: make([]byte, 5000)}, &phoneapi.UploadResponse{Status: "published"},
		&phoneapi.ErrorResponse{Error: "x", Message: strings.Repeat("m", 600)}} {
		b, err := padded(v, 512)
		if err != nil || len(b)%512 != 0 || !json.Valid(b) {
			t.Errorf("%T: %d bytes, %v", v, len(b), err)
		}
	}
	if _, err := padded(&phoneapi.UploadResponse{}, 512); err != nil {
		t.Error(err)
	}
	rec := httptest.NewRecorder()
	writePadded(echo.New().NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec), 200, make(chan int), 512)
	if rec.Code != 500 || rec.Body.Len() != 0 {
		t.Errorf("an answer that does not encode: %d %q, want an empty 500", rec.Code, rec.Body)
	}
}

func TestUnitRateLimit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		rate  float64
		burst int
		retry string
	}{{0.01, 2, "100"}, {0.5, 1, "2"}, {0.3, 1, "4"}, {5, 1, "1"}} {
		u := newUnit(t, func(c *Config) { c.RatePerSecond, c.RateBurst = tt.rate, tt.burst })
		p := newPhoneKey(t)
		for i := range tt.burst {
			if a := u.pickup(p.pickupBody(t0), "0"); a.status != 200 {
				t.Fatalf("request %d: %d %s", i, a.status, a.body)
			}
		}
		a := u.pickup(p.pickupBody(t0), "0")
		if a.status != 429 || a.code() != "rate-limited" || a.header.Get("Retry-After") != tt.retry || len(a.body) != phoneapi.PickupResponseBlock {
			t.Errorf("rate %v: %d %s, Retry-After %q; want 429 rate-limited, %s", tt.rate, a.status, a.code(), a.header.Get("Retry-After"), tt.retry)
		}
		if a := u.do(http.MethodPost, phoneapi.PathUploads, nil, "0", ""); a.status != 429 || len(a.body) != phoneapi.UploadResponseBlock {
			t.Errorf("upload past the burst: %d, %d bytes", a.status, len(a.body))
		}
		// Another address has its own share.
		if a := u.do(http.MethodPost, phoneapi.PathPickup, p.pickupBody(t0), "0", "192.0.2.2"); a.status != 200 {
			t.Errorf("another client: %d", a.status)
		}
	}
}

func TestUnitIPFilter(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		tune func(*Config)
		ip   string
		xff  string
		ok   bool
	}{
		{"open", nil, "192.0.2.1", "", true},
		{"unparsable peer", nil, "not-an-ip", "", false},
		{"denied", func(c *Config) { c.DenyCIDRs = []string{"192.0.2.0/24"} }, "192.0.2.1", "", false},
		{"not allowed", func(c *Config) { c.AllowCIDRs = []string{"10.0.0.0/8"} }, "192.0.2.1", "", false},
		{"allowed", func(c *Config) { c.AllowCIDRs = []string{"10.0.0.0/8", "192.0.2.1/32"} }, "192.0.2.1", "", true},
		{"allowed, mapped", func(c *Config) { c.AllowCIDRs = []string{"192.0.2.1/32"} }, "::ffff:192.0.2.1", "", true},
		{"allowed but denied", func(c *Config) {
			c.AllowCIDRs = []string{"192.0.2.0/24"}
			c.DenyCIDRs = []string{"10.0.0.0/8", "192.0.2.1/32"}
		}, "192.0.2.1", "", false},
		{"forged forwarded", func(c *Config) { c.AllowCIDRs = []string{"10.0.0.0/8"} }, "192.0.2.1", "10.1.2.3", false},
		{"proxy's client", func(c *Config) {
			c.AllowCIDRs = []string{"10.0.0.0/8"}
			c.TrustedProxies = []string{"192.0.2.0/24"}
		}, "192.0.2.1", "10.1.2.3", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := newUnit(t, tt.tune)
			p := newPhoneKey(t)
			req := httptest.NewRequest(http.MethodPost, phoneapi.PathPickup, bytes.NewReader(p.pickupBody(t0)))
			req.Header.Set(phoneapi.HeaderChaff, "0")
			if tt.xff != "" {
				req.Header.Set(echo.HeaderXForwardedFor, tt.xff)
			}
			if strings.Contains(tt.ip, ":") {
				req.RemoteAddr = "[" + tt.ip + "]:1234"
			} else {
				req.RemoteAddr = tt.ip + ":1234"
			}
			rec := httptest.NewRecorder()
			u.e.ServeHTTP(rec, req)
			a := answer{rec.Code, rec.Body.Bytes(), rec.Header()}
			if tt.ok && a.status != 200 {
				t.Errorf("%d %s, want 200", a.status, a.body)
			}
			if !tt.ok && (a.status != 403 || a.code() != "forbidden" || len(a.body) != phoneapi.PickupResponseBlock) {
				t.Errorf("%d %s, want 403 forbidden padded", a.status, a.body)
			}
		})
	}
}

// ---- configuration ----

func TestUnitConfigValidate(t *testing.T) {
	t.Parallel()
	var cfg Config
	n, err := cfg.Validate()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Addr: "127.0.0.1:8081", MaxAgeDays: 14, AuthorizationBucket: "authorizations", LicenseBucket: "vouch-licenses",
		StreamMaxAge: 72 * time.Hour, BusTimeout: 5 * time.Second, RatePerSecond: 5, RateBurst: 20}
	if cfg.Addr != want.Addr || cfg.MaxAgeDays != want.MaxAgeDays || cfg.AuthorizationBucket != want.AuthorizationBucket ||
		cfg.LicenseBucket != want.LicenseBucket || cfg.StreamMaxAge != want.StreamMaxAge || cfg.BusTimeout != want.BusTimeout ||
		cfg.RatePerSecond != want.RatePerSecond || cfg.RateBurst != want.RateBurst {
		t.Errorf("defaults %+v, want %+v", cfg, want)
	}
	if len(n.allow)+len(n.deny)+len(n.proxies) != 0 {
		t.Errorf("nets %+v, want none", n)
	}
	set := Config{Addr: ":1", MaxAgeDays: 10, AuthorizationBucket: "a", LicenseBucket: "l", StreamMaxAge: time.Hour, BusTimeout: time.Second,
		RatePerSecond: 0.5, RateBurst: 1, AllowCIDRs: []string{"10.1.2.3/8"}, DenyCIDRs: []string{"::1/128"}, TrustedProxies: []string{"192.0.2.0/24"}}
	kept := set
	if n, err = set.Validate(); err != nil {
		t.Fatal(err)
	}
	if set.Addr != kept.Addr || set.MaxAgeDays != 10 || set.AuthorizationBucket != "a" || set.LicenseBucket != "l" || set.StreamMaxAge != time.Hour ||
		set.BusTimeout != time.Second || set.RatePerSecond != 0.5 || set.RateBurst != 1 {
		t.Errorf("set values changed: %+v", set)
	}
	if len(n.allow) != 1 || n.allow[0].String() != "10.0.0.0/8" || len(n.deny) != 1 || len(n.proxies) != 1 {
		t.Errorf("nets %+v, want the masked CIDRs", n)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"9 days", Config{MaxAgeDays: 9}, "VOUCH_KEYS_MAX_AGE_DAYS must be at least 10, got 9"},
		{"31 days", Config{MaxAgeDays: 31}, "VOUCH_KEYS_MAX_AGE_DAYS must be at most 30, got 31"},
		{"negative rate", Config{RatePerSecond: -1}, "VOUCH_INGEST_RATE"},
		{"NaN rate", Config{RatePerSecond: math.NaN()}, "VOUCH_INGEST_RATE"},
		{"infinite rate", Config{RatePerSecond: math.Inf(1)}, "VOUCH_INGEST_RATE"},
		{"negative burst", Config{RateBurst: -1}, "VOUCH_INGEST_RATE_BURST at least 1"},
		{"short stream", Config{StreamMaxAge: time.Hour - time.Second}, "VOUCH_KEYS_STREAM_MAX_AGE must be at least 1h"},
		{"negative timeout", Config{BusTimeout: -1}, "VOUCH_INGEST_BUS_TIMEOUT must be positive"},
		{"bad allow", Config{AllowCIDRs: []string{"10.0.0.0/8", "x"}}, `VOUCH_INGEST_ALLOW_CIDRS: "x" is not a CIDR`},
		{"bad deny", Config{DenyCIDRs: []string{"10.0.0.1"}}, `VOUCH_INGEST_DENY_CIDRS: "10.0.0.1" is not a CIDR`},
		{"bad proxy", Config{TrustedProxies: []string{"y"}}, `VOUCH_INGEST_TRUSTED_PROXIES: "y" is not a CIDR`},
	} {
		_, err := tt.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	for _, ok := range []Config{{MaxAgeDays: 30}, {MaxAgeDays: 10}, {StreamMaxAge: time.Hour}} {
		if _, err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	if got := usedTTL(14); got != 15*24*time.Hour {
		t.Errorf("usedTTL(14) = %v, want 15 days", got)
	}
}

// ---- buckets ----

func TestOpenUsed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ttl := usedTTL(14)
	js := &fakeJS{buckets: map[string]*fakeKV{}}
	if _, err := openUsed(ctx, js, 0, ttl); err != nil || len(js.created) != 1 || js.created[0].TTL != ttl || js.created[0].Replicas != 1 ||
		js.created[0].History != 1 || js.created[0].Bucket != exposure.UsedBucket {
		t.Errorf("a new bucket: %v, created %+v", err, js.created)
	}
	// An older bucket with a shorter TTL is raised; a longer one is kept.
	for _, tt := range []struct {
		have    time.Duration
		updated bool
	}{{ttl - time.Second, true}, {ttl, false}, {ttl + time.Hour, false}} {
		old := newFakeKV()
		old.ttl = tt.have
		js := &fakeJS{buckets: map[string]*fakeKV{exposure.UsedBucket: old}}
		kv, err := openUsed(ctx, js, 3, ttl)
		if err != nil || (len(js.updated) == 1) != tt.updated || len(js.created) != 0 {
			t.Errorf("TTL %v: %v, updated %+v", tt.have, err, js.updated)
		}
		if tt.updated && js.updated[0].TTL != ttl && js.updated[0].Replicas != 3 {
			t.Errorf("updated to %+v", js.updated[0])
		}
		if !tt.updated && kv != old {
			t.Error("the bucket opened is not the one there")
		}
	}
	js = &fakeJS{kvErr: errors.New("down")}
	if _, err := openUsed(ctx, js, 1, ttl); err == nil || !strings.Contains(err.Error(), exposure.UsedBucket) {
		t.Errorf("bus down: %v", err)
	}
	if _, err := openBucket(ctx, js, jetstream.KeyValueConfig{Bucket: "b"}); err == nil || !strings.Contains(err.Error(), "bucket b") {
		t.Errorf("openBucket, bus down: %v", err)
	}
	js = &fakeJS{buckets: map[string]*fakeKV{"have": newFakeKV()}}
	if kv, err := openBucket(ctx, js, jetstream.KeyValueConfig{Bucket: "have"}); err != nil || kv != js.buckets["have"] || len(js.created) != 0 {
		t.Errorf("openBucket of an existing bucket: %v", err)
	}
	if _, err := openBucket(ctx, js, jetstream.KeyValueConfig{Bucket: "new"}); err != nil || len(js.created) != 1 || js.created[0].Bucket != "new" {
		t.Errorf("openBucket of a new bucket: %v %+v", err, js.created)
	}
}

// ---- licenses ----

func TestLicensesWatch(t *testing.T) {
	t.Parallel()
	kv := newFakeKV()
	w := &fakeWatcher{ch: make(chan jetstream.KeyValueEntry)}
	kv.watcher = w
	logs := &bytes.Buffer{}
	var logMu sync.Mutex
	l := newLicenses(kv, slog.New(slog.NewTextHandler(&lockedWriter{w: logs, mu: &logMu}, nil)))
	if _, err := l.mayVouch("1", t0); !errors.Is(err, errLicensesLoading) || l.ready(context.Background()) == nil {
		t.Errorf("before the replay: %v, want not loaded", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.watch(ctx) }()
	put := func(key string, rec any) {
		b, _ := json.Marshal(rec)
		if s, ok := rec.(string); ok {
			b = []byte(s)
		}
		w.ch <- &fakeEntry{key: key, val: b, op: jetstream.KeyValuePut}
	}
	del := func(key string) { w.ch <- &fakeEntry{key: key, op: jetstream.KeyValueDelete} }
	active := registrysync.LicenseRecord{Status: directory.LicenseActive, MayVouch: true}
	suspended := registrysync.LicenseRecord{Status: directory.LicenseSuspended}
	put("1", suspended)
	put("2", suspended)
	del("2")
	put("3", "not JSON")
	put("4", active)
	w.ch <- nil // the replay is complete
	put("5", suspended)
	put("4", suspended)
	put("1", active)
	put("6", "not JSON")
	del("5")
	w.ch <- &fakeEntry{key: "7", op: jetstream.KeyValuePurge}
	w.ch <- nil // a sync point: everything before was handled
	for uzi, want := range map[string]bool{"1": true, "2": true, "3": false, "4": false, "5": true, "6": false, "7": true, "8": true} {
		if got, err := l.mayVouch(uzi, t0); got != want || err != nil {
			t.Errorf("%s: %v %v, want %v", uzi, got, err, want)
		}
	}
	if l.ready(context.Background()) != nil {
		t.Error("not ready after the replay")
	}
	logMu.Lock()
	if c := strings.Count(logs.String(), "license states loaded"); c != 1 || !strings.Contains(logs.String(), "count=3") {
		t.Errorf("loaded logged %d times: %s", c, logs)
	}
	if c := strings.Count(logs.String(), "unreadable license record"); c != 2 {
		t.Errorf("unreadable logged %d times", c)
	}
	logMu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("watch ended with %v at ctx's end", err)
	}
	// A second watch replays again: what was deleted meanwhile goes.
	w2 := &fakeWatcher{ch: make(chan jetstream.KeyValueEntry, 4)}
	kv.watcher = w2
	w2.ch <- &fakeEntry{key: "9", val: []byte(`{"status":"revoked"}`), op: jetstream.KeyValuePut}
	w2.ch <- nil
	close(w2.ch)
	if err := l.watch(context.Background()); err == nil {
		t.Error("a closed watcher ended the watch without an error")
	}
	if got, _ := l.mayVouch("4", t0); !got {
		t.Error("a record gone from the replay survived it")
	}
	if got, _ := l.mayVouch("9", t0); got {
		t.Error("the replayed record is not in force")
	}
	if !w.stopped || !w2.stopped {
		t.Error("a watcher was not stopped")
	}
	kv.watchErr = errors.New("down")
	if err := l.watch(context.Background()); err == nil {
		t.Error("WatchAll failing: no error")
	}
}

// run watches again after the watcher stopped.
func TestLicensesRunWatchesAgain(t *testing.T) {
	t.Parallel()
	kv := newFakeKV()
	kv.watchErr = errors.New("down")
	logs := &bytes.Buffer{}
	var mu sync.Mutex
	l := newLicenses(kv, slog.New(slog.NewTextHandler(&lockedWriter{w: logs, mu: &mu}, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.run(ctx); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := strings.Count(logs.String(), "license watcher stopped")
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watcher was tried %d times in 10 s", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not end with its context")
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// ---- odds and ends a phone's developer or an operator sees ----

func TestErrorCodesAndOutcome(t *testing.T) {
	t.Parallel()
	codes := ErrorCodes()
	for _, want := range []string{"malformed", "too-large", "replay", "rate-limited", "internal", "keys-invalid", "forbidden", "not-found",
		"method-not-allowed", string(protocol.ReasonLicenseNotActive), string(protocol.ReasonCodeMismatch)} {
		found := false
		for _, c := range codes {
			found = found || c == want
		}
		if !found {
			t.Errorf("ErrorCodes lacks %s", want)
		}
	}
	for i, c := range codes {
		if c == string(protocol.ReasonOK) || (i > 0 && codes[i-1] >= c) {
			t.Errorf("ErrorCodes not sorted and unique, or with ok: %v", codes)
			break
		}
	}
	for _, tt := range []struct {
		err  error
		want string
	}{{nil, "accepted"}, {errReplay, "refused"}, {errTooLarge, "refused"}, {unavailable(errors.New("x")), "unavailable"}, {errors.New("x"), "unavailable"},
		{&apiError{status: 499}, "refused"}, {&apiError{status: 500}, "unavailable"}} {
		if got := outcome(tt.err); got != tt.want {
			t.Errorf("outcome(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
	cause := errors.New("cause")
	e := &apiError{code: "c", cause: cause}
	if e.Error() != "c: cause" || !errors.Is(e, cause) || (&apiError{code: "c"}).Error() != "c" {
		t.Errorf("apiError: %q", e.Error())
	}
	var code phonecode.Code
	code[0], code[len(code)-1] = 0xAB, 0x01
	if got := AuthorizationKey(code); got != hex.EncodeToString(code[:]) || !strings.HasPrefix(got, "ab") {
		t.Errorf("AuthorizationKey = %s", got)
	}
	if got := httpCode(http.StatusMethodNotAllowed); got != "method-not-allowed" {
		t.Errorf("httpCode = %s", got)
	}
}

func TestChaffOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		h     string
		chaff bool
		ok    bool
	}{{"0", false, true}, {"1", true, true}, {"", false, false}, {"true", false, false}, {"01", false, false}} {
		c := echo.New().NewContext(httptest.NewRequest(http.MethodPost, "/", nil), httptest.NewRecorder())
		if tt.h != "" {
			c.Request().Header.Set(phoneapi.HeaderChaff, tt.h)
		}
		chaff, err := chaffOf(c)
		if chaff != tt.chaff || (err == nil) != tt.ok {
			t.Errorf("X-Chaff %q: %v %v", tt.h, chaff, err)
		}
	}
}

// ---- access log ----

func TestUnitAccessLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir() + "/logs"
	var mu sync.Mutex
	now := t0.Add(30 * time.Minute)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	move := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	l, err := NewAccessLog(dir, clock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v, want 0700", fi, err)
	}
	read := func(t time.Time) string {
		b, _ := os.ReadFile(filepath.Join(dir, AccessLogName(t)))
		return string(b)
	}
	// A stray file and one of another name are left alone.
	for _, name := range []string{"access-x.log", "other-2020010100.log", "access-2020010100.txt"} {
		_ = os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	if err := l.Log("192.0.2.1", "phone/1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Log("192.0.2.2", "phone/2"); err != nil {
		t.Fatal(err)
	}
	if got := read(t0); got != `{"ip":"192.0.2.1","user_agent":"phone/1"}`+"\n"+`{"ip":"192.0.2.2","user_agent":"phone/2"}`+"\n" {
		t.Errorf("this hour's file: %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(dir, AccessLogName(t0))); fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	move(time.Hour)
	_ = l.Log("192.0.2.3", "phone/3")
	if got := read(t0.Add(time.Hour)); got != `{"ip":"192.0.2.3","user_agent":"phone/3"}`+"\n" || strings.Contains(read(t0), "phone/3") {
		t.Errorf("the next hour: %q", got)
	}
	// 47 h after the first hour began, it stays; at 48 h it goes, by a
	// write's rotation or by Prune.
	move(46*time.Hour + 29*time.Minute) // t0+47h59m
	if err := l.Prune(); err != nil {
		t.Fatal(err)
	}
	if read(t0) == "" {
		t.Error("deleted before its hour began 48 h ago")
	}
	move(time.Minute) // t0+48h
	if err := l.Prune(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, AccessLogName(t0))); !os.IsNotExist(err) {
		t.Errorf("the file of 48 h ago is still there: %v", err)
	}
	if read(t0.Add(time.Hour)) == "" {
		t.Error("the next hour's file went too")
	}
	for _, name := range []string{"access-x.log", "other-2020010100.log", "access-2020010100.txt"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s was deleted", name)
		}
	}
	// A write an hour later rotates and deletes the next hour's file;
	// the current file is closed when its own hour is pruned.
	move(time.Hour)
	_ = l.Log("192.0.2.4", "phone/4")
	if _, err := os.Stat(filepath.Join(dir, AccessLogName(t0.Add(time.Hour)))); !os.IsNotExist(err) {
		t.Errorf("rotation did not prune: %v", err)
	}
	move(48 * time.Hour)
	_ = l.Prune()
	if l.f != nil {
		t.Error("the pruned current file is still open")
	}
	if err := l.Log("192.0.2.5", "phone/5"); err != nil || !strings.Contains(read(now), "phone/5") {
		t.Errorf("a write after its file was pruned: %v", err)
	}
	if err := l.Close(); err != nil || l.f != nil {
		t.Errorf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
	if got := AccessLogName(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))); got != "access-2026010202.log" {
		t.Errorf("AccessLogName = %s, want the UTC hour", got)
	}
	// The middleware logs the client and the agent after the answer.
	e := echo.New()
	var failed []error
	l2, _ := NewAccessLog(t.TempDir(), clock)
	e.Use(l2.middleware(func(err error) { failed = append(failed, err) }))
	e.GET("/", func(c echo.Context) error { return c.String(200, "ok") })
	req := httptest.NewRequest(http.MethodGet, "/?secret=1", nil)
	req.RemoteAddr, req.Header["User-Agent"] = "192.0.2.9:1", []string{"agent/9"}
	e.ServeHTTP(httptest.NewRecorder(), req)
	l2.Close()
	b, _ := os.ReadFile(filepath.Join(l2.dir, AccessLogName(now)))
	if string(b) != `{"ip":"192.0.2.9","user_agent":"agent/9"}`+"\n" || len(failed) != 0 {
		t.Errorf("middleware wrote %q, failures %v", b, failed)
	}
	_ = os.RemoveAll(l2.dir)
	e.ServeHTTP(httptest.NewRecorder(), req)
	if len(failed) != 1 {
		t.Errorf("a failed write was not reported: %v", failed)
	}
	if _, err := NewAccessLog("/proc/no/such", nil); err == nil {
		t.Error("NewAccessLog in an impossible place: no error")
	}
	l3, _ := NewAccessLog(t.TempDir(), nil)
	if l3.now == nil {
		t.Error("no default clock")
	}
}

// ---- revocation readiness ----

func TestCRLsReady(t *testing.T) {
	t.Parallel()
	card, _ := fixtures(t)
	c := &crls{set: revocation.NewSet(), cas: card.trust.CAs(), now: func() time.Time { return t0 }, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := c.ready(context.Background()); err == nil || !strings.Contains(err.Error(), "fast layer CA") {
		t.Errorf("no CRL: %v, want the CA named", err)
	}
	c.cas = nil
	if err := c.ready(context.Background()); err != nil {
		t.Errorf("no CA: %v", err)
	}
}
