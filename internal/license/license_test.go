package license_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/uzi"
	"github.com/vouch-nl/vouch/registry"
)

func id(uziNumber string, typ uzi.CardType, role string) uzi.Identity {
	return uzi.Identity{OIDCA: uzi.TestOIDCA, Version: "1", UZI: uziNumber, CardType: typ, Subscriber: "90000001", Role: role, AGB: "01234567"}
}

var gp = id("900000001", uzi.CardCareProvider, "01.015")

type world struct {
	ldap   *testenv.LDAPServer
	sync   *registrysync.Syncer
	live   *license.Decider // asks the register, falls back to the mirror
	mirror *license.Decider // mirror only
	exec   func(q string, args ...any)
	db     *database.DB
}

func newWorld(t *testing.T) *world {
	t.Helper()
	l := testenv.LDAPWith(t, registry.ServerOptions{Fixtures: true})
	db := testenv.Database(t)
	b := testenv.Bus(t)
	dir, err := directory.New(directory.Config{URL: l.URL, BindDN: l.BindDN, BindPassword: l.BindPassword,
		BaseDN: "ou=people," + l.BaseDN, Filter: "(objectClass=vouchCareProvider)", Timeout: time.Second, PageSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	bucket, err := b.Bucket(context.Background(), "licenses", registrysync.BucketDescription)
	if err != nil {
		t.Fatal(err)
	}
	s, err := registrysync.New(context.Background(), registrysync.Config{Bucket: "licenses", FullInterval: time.Hour},
		dir, db, bucket, nil, log, registrysync.NewMetrics(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := license.Config{MaxMirrorAge: 24 * time.Hour}
	return &world{db: db, ldap: l, sync: s, live: license.New(cfg, dir, db, log), mirror: license.New(cfg, nil, db, log),
		exec: func(q string, args ...any) {
			if _, err := db.Pool().Exec(context.Background(), q, args...); err != nil {
				t.Fatal(err)
			}
		}}
}

func decide(t *testing.T, d *license.Decider, who uzi.Identity) license.Decision {
	t.Helper()
	dec, err := d.Decide(context.Background(), who)
	if err != nil && dec.Reason != license.ReasonUnavailable {
		t.Fatalf("Decide: %v", err)
	}
	return dec
}

// TestSuspensionFlipsTheDecision is the registry issue's "done when": a real
// slapd, a sync, a suspension in LDAP, an incremental sync, and the decision
// flips.
func TestSuspensionFlipsTheDecision(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if _, err := w.sync.Once(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*license.Decider{w.live, w.mirror} {
		if dec := decide(t, d, gp); !dec.Allowed || dec.Reason != license.ReasonActive {
			t.Fatalf("before: %+v", dec)
		}
	}
	w.ldap.LDIF(t, "dn: vouchUziNumber=900000001,ou=people,dc=registry,dc=test\nchangetype: modify\nreplace: vouchLicenseStatus\nvouchLicenseStatus: suspended")
	if dec := decide(t, w.live, gp); dec.Allowed || dec.Reason != license.ReasonSuspended || dec.Source != "register" {
		t.Errorf("live decision after suspension: %+v", dec)
	}
	if dec := decide(t, w.mirror, gp); !dec.Allowed {
		t.Errorf("the mirror knew before the sync: %+v", dec)
	}
	res, err := w.sync.Once(ctx)
	if err != nil || res.Kind != "incremental" {
		t.Fatalf("incremental sync: %+v %v", res, err)
	}
	if dec := decide(t, w.mirror, gp); dec.Allowed || dec.Reason != license.ReasonSuspended || dec.Source != "mirror" {
		t.Errorf("mirror decision after sync: %+v", dec)
	}
}

func TestFallbackAndStaleness(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if dec, err := w.mirror.Decide(ctx, gp); err == nil || dec.Allowed || dec.Reason != license.ReasonUnavailable {
		t.Errorf("never synced: %+v %v", dec, err)
	}
	if _, err := w.sync.Once(ctx); err != nil {
		t.Fatal(err)
	}
	w.ldap.Stop(t)
	if dec := decide(t, w.live, gp); !dec.Allowed || dec.Source != "mirror" {
		t.Errorf("register down, fresh mirror: %+v", dec)
	}
	w.exec(`update registry_sync_state set synced_at = now() - interval '25 hours'`)
	dec, err := w.live.Decide(ctx, gp)
	if err == nil || dec.Allowed || dec.Reason != license.ReasonUnavailable {
		t.Errorf("register down, stale mirror: %+v %v", dec, err)
	}
	if txt := dec.Reason.Text("nl"); txt == string(dec.Reason) || txt == dec.Reason.Text("en") {
		t.Errorf("no readable text for %s", dec.Reason)
	}
	w.ldap.Start(t)
	if dec := decide(t, w.live, gp); !dec.Allowed || dec.Source != "register" {
		t.Errorf("register back: %+v", dec)
	}
}

func TestReasons(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.ldap.LDIF(t,
		"dn: vouchUziNumber=100000001,ou=people,dc=registry,dc=test\nobjectClass: inetOrgPerson\nobjectClass: vouchCareProvider\ncn: X\nsn: X\nvouchUziNumber: 100000001\nvouchCardType: Z\nvouchRoleCode: 01.015\nvouchLicenseStatus: active\nvouchLicenseValidUntil: 20200101000000Z",
		"dn: vouchUziNumber=100000002,ou=people,dc=registry,dc=test\nobjectClass: inetOrgPerson\nobjectClass: vouchCareProvider\ncn: Y\nsn: Y\nvouchUziNumber: 100000002\nvouchCardType: Z\nvouchRoleCode: 30.000\nvouchLicenseStatus: active\nvouchLicenseValidFrom: 20990101000000Z",
		"dn: vouchUziNumber=100000003,ou=people,dc=registry,dc=test\nobjectClass: inetOrgPerson\nobjectClass: vouchCareProvider\ncn: Z\nsn: Z\nvouchUziNumber: 100000003\nvouchCardType: Z\nvouchRoleCode: 01.015\nvouchLicenseStatus: deceased",
	)
	if _, err := w.sync.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		who  uzi.Identity
		want license.Reason
	}{
		{"active GP", gp, license.ReasonActive},
		{"suspended clinician", id("900000024", uzi.CardCareProvider, "01.015"), license.ReasonSuspended},
		{"license expired", id("100000001", uzi.CardCareProvider, "01.015"), license.ReasonExpired},
		{"license not yet valid", id("100000002", uzi.CardCareProvider, "30.000"), license.ReasonNotYetValid},
		{"deceased", id("100000003", uzi.CardCareProvider, "01.015"), license.ReasonDeceased},
		{"not registered", id("123123123", uzi.CardCareProvider, "01.015"), license.ReasonNotRegistered},
		{"card says Z, register says N", id("900000010", uzi.CardCareProvider, "00.000"), license.ReasonCardMismatch},
		{"card claims another role", id("900000001", uzi.CardCareProvider, "30.000"), license.ReasonCardMismatch},
	}
	for _, tt := range tests {
		for name, d := range map[string]*license.Decider{"live": w.live, "mirror": w.mirror} {
			if dec := decide(t, d, tt.who); dec.Reason != tt.want || dec.Allowed != (tt.want == license.ReasonActive) {
				t.Errorf("%s (%s): %+v, want %s", tt.name, name, dec, tt.want)
			}
		}
	}
}

// TestForVouching: an active license lets only a care provider's card whose
// profession may vouch do so.
func TestForVouching(t *testing.T) {
	t.Parallel()
	allowed := func(typ, role string) license.Decision {
		return license.Decision{Allowed: true, Reason: license.ReasonActive, Entry: directory.Entry{CardType: typ, Role: role}}
	}
	professions := []string{"01", "30"}
	for _, tt := range []struct {
		name string
		in   license.Decision
		want license.Reason
	}{
		{"GP", allowed("Z", "01.015"), license.ReasonActive},
		{"nurse", allowed("Z", "30.000"), license.ReasonActive},
		{"pharmacist", allowed("Z", "17.000"), license.ReasonRoleMayNotVouch},
		{"staff", allowed("N", "00.000"), license.ReasonCardMayNotVouch},
		{"nameless", allowed("M", ""), license.ReasonCardMayNotVouch},
		{"suspended stays so", license.Decision{Reason: license.ReasonSuspended, Entry: directory.Entry{CardType: "Z", Role: "01.015"}}, license.ReasonSuspended},
	} {
		got := tt.in.ForVouching(professions)
		if got.Reason != tt.want || got.Allowed != (tt.want == license.ReasonActive) {
			t.Errorf("%s: %v %s, want %s", tt.name, got.Allowed, got.Reason, tt.want)
		}
		if got.Reason != license.ReasonActive && got.Reason.Text("nl") == got.Reason.Text("en") {
			t.Errorf("%s: no Dutch text", tt.name)
		}
	}
}

// TestNotAUZINumberAsksNobody: a value that is not a UZI number is refused
// before the register or the mirror is asked.
func TestNotAUZINumberAsksNobody(t *testing.T) {
	t.Parallel()
	d := license.New(license.Config{MaxMirrorAge: time.Hour}, nil, nil, slog.New(slog.DiscardHandler))
	for _, v := range []string{"", "12345678", "1234567890", "*)(uid=*", "*)(vouchUziNumber=*", "12345678a"} {
		dec, err := d.DecideHolder(context.Background(), v)
		if !errors.Is(err, license.ErrNotUZINumber) || dec.Allowed {
			t.Errorf("%q: %+v, %v", v, dec, err)
		}
	}
}

// TestInvalidRegisterEntryNeverFallsBack: when the register answers with
// something that is not one readable entry — here the UZI number listed
// twice — the decision refuses, although the mirror still says active.
func TestInvalidRegisterEntryNeverFallsBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if _, err := w.sync.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dec := decide(t, w.mirror, gp); !dec.Allowed {
		t.Fatalf("mirror before: %+v", dec)
	}
	w.ldap.LDIF(t, "dn: cn=twin,ou=people,dc=registry,dc=test\nobjectClass: inetOrgPerson\nobjectClass: vouchCareProvider\ncn: twin\nsn: twin\n"+
		"vouchUziNumber: 900000001\nvouchCardType: Z\nvouchRoleCode: 01.015\nvouchLicenseStatus: active")
	dec := decide(t, w.live, gp)
	if dec.Allowed || dec.Reason != license.ReasonRegisterEntryInvalid || dec.Source != "register" {
		t.Errorf("register lists the GP twice: %+v, want register-entry-invalid from the register", dec)
	}
}

// TestReasonTexts: every reason has its message in every catalogue, and
// every "license." message is a reason.
func TestReasonTexts(t *testing.T) {
	t.Parallel()
	cat := i18n.Default()
	known := map[string]bool{}
	for _, r := range license.Reasons() {
		known[r.MessageID()] = true
		for _, lang := range cat.Languages() {
			if !cat.Has(lang, r.MessageID()) {
				t.Errorf("reason %q has no text in %s", r, lang)
			}
		}
	}
	for _, id := range cat.IDs() {
		if strings.HasPrefix(id, "license.") && !known[id] {
			t.Errorf("catalogue message %q is no reason of license.Reasons()", id)
		}
	}
}
