//go:build !mutation

package backoffice_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/backoffice"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
)

func phone(t *testing.T) (ed25519.PublicKey, phonecode.Code) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, phonecode.FromPublicKey(pub)
}

// TestSignInAndVouch is the whole path: the GP's card signs in, vouches
// for a phone's code; the authorization is stored, in the public tier's
// bucket as a bundle that verifies as the phone will verify it, and every
// step has its audit row in an intact chain.
func TestSignInAndVouch(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()

	if st, loc := b.get("/vouch"); st != http.StatusSeeOther || loc != "/signin" {
		t.Fatalf("vouch page before sign-in: %d %s", st, loc)
	}
	st, r := b.signIn(gp)
	if st != http.StatusOK || r.str("redirect") != "/vouch" || r.str("role") != "clinician" || r.str("holder") != "A. Huisarts" {
		t.Fatalf("sign-in: %d %v", st, r)
	}
	if st, page := b.get("/vouch"); st != http.StatusOK || !contains(page, "A. Huisarts") || !contains(page, `data-uzi="900000001"`) {
		t.Fatalf("vouch page: %d", st)
	}

	pub, code := phone(t)
	st, r = b.vouch(gp, strings.ToLower(code.Compact()), time.Now().AddDate(0, 0, -3).Format(time.DateOnly))
	if st != http.StatusOK || r.str("code") != code.String() || r["published"] != true {
		t.Fatalf("vouch: %d %v", st, r)
	}
	valid, _ := time.Parse(time.RFC3339, r.str("validUntil"))
	if d := time.Until(valid); d < 23*time.Hour || d > 24*time.Hour+time.Minute {
		t.Errorf("valid until %s: not 24 h from now", valid)
	}

	raw, err := w.bucket.Get(t.Context(), backoffice.BucketKey(code))
	if err != nil || raw == nil {
		t.Fatalf("bucket: %v (%d bytes)", err, len(raw))
	}
	res, err := w.verifier.Verify(raw, pub, time.Now())
	if err != nil {
		t.Fatalf("the bundle the phone picks up does not verify: %v", err)
	}
	if res.Identity.UZI != "900000001" || res.Attestation.License != protocol.LicenseActive || !res.Statement.Consent {
		t.Errorf("bundle: %+v", res)
	}
	w.eventually(1, `select count(*) from authorizations where phone_code = $1 and published_at is not null`, code[:])
	if diff := cmp.Diff([]string{"sign-in", "vouch"}, w.auditActions()); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	var subject, actor, ua string
	if err := w.db.Pool().QueryRow(t.Context(), `select subject, actor, user_agent from audit_log where action = 'vouch'`).Scan(&subject, &actor, &ua); err != nil {
		t.Fatal(err)
	}
	if actor != "900000001" || ua != "backoffice-test" || len(subject) != 32 || contains(subject, code.Compact()[:8]) {
		t.Errorf("vouch row: actor %q, user agent %q, subject %q", actor, ua, subject)
	}
	if err := w.db.InTx(t.Context(), func(tx pgx.Tx) error {
		_, err := audit.Verify(t.Context(), tx, nil)
		return err
	}); err != nil {
		t.Errorf("audit chain: %v", err)
	}

	// Signed out, the session is gone from the database too.
	if st, _ := b.post("/api/signout", map[string]any{}); st != http.StatusOK {
		t.Fatalf("sign-out: %d", st)
	}
	if st, _ := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true}); st != http.StatusUnauthorized {
		t.Errorf("prepare after sign-out: %d, want 401", st)
	}
	if n := w.count(`select count(*) from backoffice_sessions`); n != 0 {
		t.Errorf("%d sessions after sign-out", n)
	}
}

// TestSignInRefusals: every card or challenge that must not sign in is
// refused with its reason, in the clinician's language, writes an audit row
// with that reason, and opens no session.
func TestSignInRefusals(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	tests := []struct {
		name   string
		card   string
		lang   string
		status int
		code   string
		text   string
		mutate func(b *browser, c *card) (int, reply)
	}{
		{name: "suspended clinician", card: "suspended", status: http.StatusForbidden, code: "license-suspended", text: "suspended"},
		{name: "suspended clinician, Dutch", card: "suspended", lang: "nl", status: http.StatusForbidden, code: "license-suspended", text: "geschorst"},
		{name: "revoked card", card: "revoked", status: http.StatusForbidden, code: "cert-revoked"},
		{name: "expired card", card: "expired", status: http.StatusForbidden, code: "cert-expired"},
		{name: "nameless card", card: "nameless", status: http.StatusForbidden, code: "card-nameless"},
		{name: "server card", card: "server", status: http.StatusForbidden, code: "card-server"},
		{name: "signature for another origin", card: "gp", status: http.StatusForbidden, code: "signature-invalid",
			mutate: func(b *browser, c *card) (int, reply) {
				ch := b.challenge("sign-in")
				return b.post("/api/signin", map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": c.signDER(),
					"signature": rsaSign(t, c.auth, protocol.LoginMessage("https://evil.example", ch))})
			}},
		{name: "replayed challenge", card: "gp", status: http.StatusUnauthorized, code: "challenge-invalid", text: "already used",
			mutate: func(b *browser, c *card) (int, reply) {
				ch := b.challenge("sign-in")
				req := map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": c.signDER(),
					"signature": rsaSign(t, c.auth, protocol.LoginMessage(w.origin, ch))}
				if st, r := b.post("/api/signin", req); st != http.StatusOK {
					t.Fatalf("first use: %d %v", st, r)
				}
				b.post("/api/signout", map[string]any{})
				return b.post("/api/signin", req)
			}},
		{name: "expired challenge", card: "gp", status: http.StatusUnauthorized, code: "challenge-invalid",
			mutate: func(b *browser, c *card) (int, reply) {
				ch := b.challenge("sign-in")
				w.clock.advance(backoffice.ChallengeLifetime + time.Second)
				defer w.clock.advance(-backoffice.ChallengeLifetime - time.Second)
				return b.post("/api/signin", map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": c.signDER(),
					"signature": rsaSign(t, c.auth, protocol.LoginMessage(w.origin, ch))})
			}},
		{name: "challenge the server never issued", card: "gp", status: http.StatusUnauthorized, code: "challenge-invalid",
			mutate: func(b *browser, c *card) (int, reply) {
				ch := make([]byte, 32)
				rand.Read(ch)
				b.bindChallenge(ch) // as if this browser had asked for it
				return b.post("/api/signin", map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": c.signDER(),
					"signature": rsaSign(t, c.auth, protocol.LoginMessage(w.origin, ch))})
			}},
		{name: "signed challenge posted by a browser without its cookie", card: "gp", status: http.StatusUnauthorized, code: "challenge-other-browser",
			mutate: func(b *browser, c *card) (int, reply) {
				ch := b.challenge("sign-in")
				return w.browser().post("/api/signin", map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": c.signDER(),
					"signature": rsaSign(t, c.auth, protocol.LoginMessage(w.origin, ch))})
			}},
		{name: "challenge for an unknown purpose", card: "gp", status: http.StatusBadRequest, code: "bad-request",
			mutate: func(b *browser, c *card) (int, reply) {
				return b.post("/api/challenge", map[string]string{"purpose": "sign-everything"})
			}},
		{name: "another card's signing certificate", card: "gp", status: http.StatusBadRequest, code: "sign-cert-invalid",
			mutate: func(b *browser, c *card) (int, reply) {
				ch := b.challenge("sign-in")
				return b.post("/api/signin", map[string]any{"challenge": ch, "authCert": c.authDER(), "signCert": w.card("nurse").signDER(),
					"signature": rsaSign(t, c.auth, protocol.LoginMessage(w.origin, ch))})
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := w.browser()
			if tt.lang != "" {
				b.lang = tt.lang
			}
			c := gp
			if tt.card != "gp" {
				c = w.card(tt.card)
			}
			sessions := w.count(`select count(*) from backoffice_sessions`)
			before := len(w.auditActions())
			var st int
			var r reply
			if tt.mutate != nil {
				st, r = tt.mutate(b, c)
			} else {
				st, r = b.signIn(c)
			}
			if st != tt.status || r.str("error") != tt.code || !contains(r.str("message"), tt.text) {
				t.Fatalf("got %d %v, want %d %s %q", st, r, tt.status, tt.code, tt.text)
			}
			if contains(r.str("message"), "backoffice:") || contains(r.str("message"), "x509") {
				t.Errorf("an internal error text reached the user: %q", r.str("message"))
			}
			if n := w.count(`select count(*) from backoffice_sessions`); n != sessions {
				t.Errorf("sessions %d → %d: a refused sign-in opened one", sessions, n)
			}
			if tt.code == "bad-request" {
				return // refused before it named anything to record
			}
			acts := w.auditActions()
			if len(acts) == before || lastOf(acts) != "sign-in-refused:"+tt.code {
				t.Errorf("audit rows %v, want sign-in-refused:%s last", acts[before:], tt.code)
			}
		})
	}
}

// TestStaffSignsInButNeverVouches: an N card signs in to the staff view,
// and its attempt to vouch is refused by the route table (it lacks
// clinician) and recorded.
func TestStaffSignsInButNeverVouches(t *testing.T) {
	w := newWorld(t, nil)
	for _, name := range []string{"staff", "pharmacist"} {
		t.Run(name, func(t *testing.T) {
			c := w.card(name)
			b := w.browser()
			st, r := b.signIn(c)
			if st != http.StatusOK || r.str("redirect") != "/staff" || r.str("role") != "staff" {
				t.Fatalf("sign-in: %d %v", st, r)
			}
			if st, page := b.get("/vouch"); st != http.StatusForbidden || !contains(page, "Not for your roles") {
				t.Errorf("vouch page for staff: %d %s", st, page)
			}
			_, code := phone(t)
			st, r = b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
			if st != http.StatusForbidden || r.str("error") != "role-missing" {
				t.Fatalf("staff vouch: %d %v", st, r)
			}
			if lastOf(w.auditActions()) != backoffice.ActionAccessRefused+":role-missing" {
				t.Errorf("audit: %v", w.auditActions())
			}
			st, page := b.get("/staff")
			if st != http.StatusOK || !contains(page, "access refused (role)") || !contains(page, "signed in") {
				t.Errorf("staff page does not show own activity: %d", st)
			}
		})
	}
	if n := w.count(`select count(*) from authorizations`); n != 0 {
		t.Errorf("%d authorizations from staff cards", n)
	}
}

// TestVouchRefusals: what the clinician entered wrongly is refused with a
// message that says what to do, recorded, and nothing is stored or asked of
// the card.
func TestVouchRefusals(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	_, code := phone(t)
	good := code.String()
	// Two neighbours swapped in group 3, found by the check character.
	swapped := []byte(good)
	for i := 10; i < 13; i++ {
		if swapped[i] != swapped[i+1] {
			swapped[i], swapped[i+1] = swapped[i+1], swapped[i]
			break
		}
	}
	today := time.Now().In(mustZone(t))
	tests := []struct {
		name    string
		code    string
		consent bool
		onset   string
		status  int
		errCode string
		text    string
	}{
		{"typo in a group", string(swapped), true, "", http.StatusBadRequest, "code-check", "typing error"},
		{"too short", good[:10], true, "", http.StatusBadRequest, "code-length", "16 characters"},
		{"character that is in no code", strings.Replace(good, good[:1], "U", 1), true, "", http.StatusBadRequest, "code-character", "character"},
		{"no consent", good, false, "", http.StatusBadRequest, "no-consent", "consent"},
		{"onset tomorrow", good, true, today.AddDate(0, 0, 1).Format(time.DateOnly), http.StatusBadRequest, "onset-future", "future"},
		{"onset 29 days ago", good, true, today.AddDate(0, 0, -29).Format(time.DateOnly), http.StatusBadRequest, "onset-too-old", "28 days"},
		{"onset not a date", good, true, "3 days ago", http.StatusBadRequest, "onset-invalid", "not a date"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, r := b.post("/api/vouch/prepare", map[string]any{"code": tt.code, "consent": tt.consent, "onset": tt.onset})
			if st != tt.status || r.str("error") != tt.errCode || !contains(r.str("message"), tt.text) {
				t.Fatalf("got %d %v, want %d %s %q", st, r, tt.status, tt.errCode, tt.text)
			}
			if lastOf(w.auditActions()) != "vouch-refused:"+tt.errCode {
				t.Errorf("audit: %v", w.auditActions())
			}
			if n := w.count(`select count(*) from backoffice_sessions where pending_statement is not null`); n != 0 {
				t.Error("a refused vouch left a statement for the card to sign")
			}
		})
	}
	// The oldest and newest onset allowed pass.
	for _, onset := range []string{today.Format(time.DateOnly), today.AddDate(0, 0, -28).Format(time.DateOnly)} {
		if st, r := b.post("/api/vouch/prepare", map[string]any{"code": good, "consent": true, "onset": onset}); st != http.StatusOK {
			t.Errorf("onset %s: %d %v", onset, st, r)
		}
	}
	if n := w.count(`select count(*) from authorizations`); n != 0 {
		t.Errorf("%d authorizations stored", n)
	}
}

func mustZone(t *testing.T) *time.Location {
	z, err := time.LoadLocation("Europe/Amsterdam")
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// TestSignatureChecks: a signature that is not the card's over the
// prepared statement is refused; the same signature twice stores one
// authorization; a license suspended between prepare and sign stops it.
func TestSignatureChecks(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	_, code := phone(t)
	prepare := func() []byte {
		st, r := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
		if st != http.StatusOK {
			t.Fatalf("prepare: %d %v", st, r)
		}
		return r.bytes(t, "statement")
	}

	stmt := prepare()
	// The authentication key is not the signature key.
	st, r := b.post("/api/vouch/sign", map[string]any{"signature": rsaSign(t, gp.auth, stmt)})
	if st != http.StatusForbidden || r.str("error") != "signature-invalid" {
		t.Fatalf("signed with the wrong key: %d %v", st, r)
	}
	// Another statement than the one prepared.
	other := prepare()
	st, r = b.post("/api/vouch/sign", map[string]any{"signature": rsaSign(t, gp.sign, stmt)})
	if st != http.StatusForbidden || r.str("error") != "signature-invalid" {
		t.Fatalf("signature over an older statement: %d %v", st, r)
	}
	sig := rsaSign(t, gp.sign, other)
	if st, r := b.post("/api/vouch/sign", map[string]any{"signature": sig}); st != http.StatusOK {
		t.Fatalf("sign: %d %v", st, r)
	}
	if st, r := b.post("/api/vouch/sign", map[string]any{"signature": sig}); st != http.StatusConflict || r.str("error") != "no-pending-statement" {
		t.Fatalf("the same signature again: %d %v", st, r)
	}
	if n := w.count(`select count(*) from authorizations`); n != 1 {
		t.Errorf("%d authorizations, want 1", n)
	}

	// Suspended between prepare and sign: the second license check refuses.
	stmt = prepare()
	w.ldap.LDIF(t, "dn: vouchUziNumber=900000001,ou=people,dc=registry,dc=test\nchangetype: modify\nreplace: vouchLicenseStatus\nvouchLicenseStatus: suspended")
	st, r = b.post("/api/vouch/sign", map[string]any{"signature": rsaSign(t, gp.sign, stmt)})
	if st != http.StatusForbidden || r.str("error") != "license-suspended" {
		t.Fatalf("sign after suspension: %d %v", st, r)
	}
	if n := w.count(`select count(*) from authorizations`); n != 1 {
		t.Errorf("%d authorizations after the refusal, want 1", n)
	}
	if lastOf(w.auditActions()) != "vouch-refused:license-suspended" {
		t.Errorf("audit: %v", w.auditActions())
	}

	// A statement left unsigned too long is not taken.
	w.ldap.LDIF(t, "dn: vouchUziNumber=900000001,ou=people,dc=registry,dc=test\nchangetype: modify\nreplace: vouchLicenseStatus\nvouchLicenseStatus: active")
	stmt = prepare()
	b.pass(w.clock.advance, backoffice.PendingLifetime+time.Second)
	st, r = b.post("/api/vouch/sign", map[string]any{"signature": rsaSign(t, gp.sign, stmt)})
	if st != http.StatusConflict {
		t.Errorf("a statement prepared 5 minutes ago: %d %v", st, r)
	}
}

// TestDailyQuota: the card's last vouch of the day passes, the next is
// refused with the quota in words and recorded.
func TestDailyQuota(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.DailyQuota = 2 })
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	for i := range 2 {
		_, code := phone(t)
		if st, r := b.vouch(gp, code.String(), ""); st != http.StatusOK {
			t.Fatalf("vouch %d: %d %v", i+1, st, r)
		}
	}
	_, code := phone(t)
	st, r := b.vouch(gp, code.String(), "")
	if st != http.StatusTooManyRequests || r.str("error") != "quota-reached" || !contains(r.str("message"), "2 times") {
		t.Fatalf("third vouch: %d %v", st, r)
	}
	if lastOf(w.auditActions()) != "vouch-refused:quota-reached" {
		t.Errorf("audit: %v", w.auditActions())
	}
	if n := w.count(`select count(*) from authorizations`); n != 2 {
		t.Errorf("%d authorizations, want 2", n)
	}
	// Another card has its own quota.
	nurse := w.card("nurse")
	b2 := w.browser()
	b2.mustSignIn(nurse)
	if st, r := b2.vouch(nurse, code.String(), ""); st != http.StatusOK {
		t.Errorf("the nurse's vouch: %d %v", st, r)
	}
}

// TestQuotaHoldsUnderConcurrency: the card's last place in the quota goes
// to one of several vouches signed at once, never to two.
func TestQuotaHoldsUnderConcurrency(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.DailyQuota = 1 })
	gp := w.card("gp")
	const n = 4
	sigs := make([]func() (int, reply), n)
	for i := range n {
		b := w.browser()
		b.mustSignIn(gp)
		_, code := phone(t)
		st, r := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true})
		if st != http.StatusOK {
			t.Fatalf("prepare: %d %v", st, r)
		}
		sig := rsaSign(t, gp.sign, r.bytes(t, "statement"))
		sigs[i] = func() (int, reply) { return b.post("/api/vouch/sign", map[string]any{"signature": sig}) }
	}
	results := make(chan int, n)
	for _, f := range sigs {
		go func() { st, _ := f(); results <- st }()
	}
	var got []int
	for range n {
		got = append(got, <-results)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]int{200, 429, 429, 429}, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if c := w.count(`select count(*) from authorizations`); c != 1 {
		t.Errorf("%d authorizations, want 1", c)
	}
}

// TestCrossOriginAndForms: a request another site's page makes, or a form
// post to the API, is refused and changes nothing; the refusals of another
// site's requests are counted in their minute's audit row.
func TestCrossOriginAndForms(t *testing.T) {
	w := newWorld(t, nil)
	w.newMinute()
	b := w.browser()
	b.mustSignIn(w.card("gp"))
	_, code := phone(t)
	tests := []struct {
		name    string
		headers map[string]string
		ctype   string
		status  int
	}{
		{"Sec-Fetch-Site cross-site", map[string]string{"Sec-Fetch-Site": "cross-site"}, "application/json", http.StatusForbidden},
		{"Origin of another site", map[string]string{"Origin": "https://evil.example"}, "application/json", http.StatusForbidden},
		{"a form's body", nil, "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"text/plain, as a no-preflight fetch sends", nil, "text/plain", http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.headers = tt.headers
			defer func() { b.headers = map[string]string{} }()
			resp, out := b.do(http.MethodPost, "/api/vouch/prepare", tt.ctype, []byte(`{"code":"`+code.String()+`","consent":true}`))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, out, tt.status)
			}
			if n := w.count(`select count(*) from backoffice_sessions where pending_statement is not null`); n != 0 {
				t.Error("a statement was prepared")
			}
			if tt.status == http.StatusForbidden && !contains(string(out), "another web site") {
				t.Errorf("message: %s", out)
			}
		})
	}
	w.clock.advance(time.Minute)
	w.eventually(1, `select count(*) from audit_log where action = 'request-refused'`)
	if got := w.countedRows(); len(got) != 1 || got[0].reason != "cross-origin" || got[0].count != 2 || got[0].subject != "POST /api/vouch/prepare" {
		t.Errorf("counted refusals %+v, want the 2 cross-origin ones", got)
	}
	// The same request from the page itself passes.
	b.headers = map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": w.origin}
	if resp, out := b.do(http.MethodPost, "/api/vouch/prepare", "application/json", []byte(`{"code":"`+code.String()+`","consent":true}`)); resp.StatusCode != http.StatusOK {
		t.Errorf("same-origin request: %d %s", resp.StatusCode, out)
	}
}

// TestLockAndUnlock: a locked session does nothing until the card that
// opened it signs an unlock challenge; another card cannot unlock it.
func TestLockAndUnlock(t *testing.T) {
	w := newWorld(t, nil)
	gp, nurse := w.card("gp"), w.card("nurse")
	b := w.browser()
	b.mustSignIn(gp)
	if st, _ := b.post("/api/lock", map[string]any{}); st != http.StatusOK {
		t.Fatalf("lock: %d", st)
	}
	b.post("/api/lock", map[string]any{}) // the page may ask twice: recorded once
	_, code := phone(t)
	if st, r := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true}); st != http.StatusLocked || r.str("error") != "locked" {
		t.Fatalf("prepare while locked: %d %v", st, r)
	}
	if st, page := b.get("/vouch"); st != http.StatusLocked || !contains(page, `data-locked="true"`) || contains(page, "A. Huisarts") {
		t.Errorf("the page does not open locked: %d", st)
	}
	unlock := func(c *card) (int, reply) {
		ch := b.challenge("unlock")
		return b.post("/api/unlock", map[string]any{"challenge": ch, "authCert": c.authDER(),
			"signature": rsaSign(t, c.auth, protocol.LoginMessage(w.origin, ch))})
	}
	if st, r := unlock(nurse); st != http.StatusForbidden || r.str("error") != "other-card" {
		t.Fatalf("unlock with another card: %d %v", st, r)
	}
	// A sign-in challenge does not unlock.
	ch := b.challenge("sign-in")
	if st, r := b.post("/api/unlock", map[string]any{"challenge": ch, "authCert": gp.authDER(),
		"signature": rsaSign(t, gp.auth, protocol.LoginMessage(w.origin, ch))}); st != http.StatusUnauthorized {
		t.Fatalf("unlock with a sign-in challenge: %d %v", st, r)
	}
	// Another browser's unlock challenge does not unlock this one.
	other := w.browser()
	other.mustSignIn(nurse)
	och := other.challenge("unlock")
	if st, r := b.post("/api/unlock", map[string]any{"challenge": och, "authCert": gp.authDER(),
		"signature": rsaSign(t, gp.auth, protocol.LoginMessage(w.origin, och))}); st != http.StatusUnauthorized {
		t.Fatalf("unlock with another session's challenge: %d %v", st, r)
	}
	if st, r := unlock(gp); st != http.StatusOK {
		t.Fatalf("unlock: %d %v", st, r)
	}
	if st, r := b.vouch(gp, code.String(), ""); st != http.StatusOK {
		t.Errorf("vouch after unlock: %d %v", st, r)
	}
	want := []string{"sign-in", "lock", "unlock-refused:other-card", "unlock-refused:challenge-invalid", "sign-in",
		"unlock-refused:challenge-invalid", "unlock", "vouch"}
	if diff := cmp.Diff(want, w.auditActions()); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
}

// TestSessionLifetime: idle 15 minutes or open 12 hours, and the session
// is over; a restarted back office keeps the sessions it had.
func TestSessionLifetime(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")

	b := w.browser()
	b.mustSignIn(gp)
	// The page's heartbeats keep the card's session unlocked, but are
	// not activity: idle time runs on.
	b.pass(w.clock.advance, 14*time.Minute)
	if st, _ := b.get("/vouch"); st != http.StatusOK {
		t.Fatalf("after 14 idle minutes: %d", st)
	}
	b.pass(w.clock.advance, 15*time.Minute+time.Second)
	if st, loc := b.get("/vouch"); st != http.StatusSeeOther || loc != "/signin" {
		t.Fatalf("after 15 idle minutes: %d %s", st, loc)
	}

	b = w.browser()
	b.mustSignIn(gp)
	for range 12 * 6 {
		b.pass(w.clock.advance, 10*time.Minute)
		if st, _ := b.get("/vouch"); st != http.StatusOK && st != http.StatusSeeOther {
			t.Fatal(st)
		}
	}
	if st, loc := b.get("/vouch"); st != http.StatusSeeOther || loc != "/signin" {
		t.Fatalf("after 12 hours of activity: %d %s", st, loc)
	}

	// Restart: a new back office on the same database knows the session.
	b = w.browser()
	b.mustSignIn(gp)
	w.svc = w.start(w.deps)
	if st, page := b.get("/vouch"); st != http.StatusOK || !contains(page, "A. Huisarts") {
		t.Fatalf("after a restart: %d", st)
	}
}

// TestPublishedAfterTheBusComesBack: the bus does not acknowledge when the
// vouch is stored (down, or the back office stopped between commit and
// publish); the authorization is kept and published by the next sweep.
func TestPublishedAfterTheBusComesBack(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	b := w.browser()
	b.mustSignIn(gp)
	_, code := phone(t)
	w.pub.down.Store(true)
	st, r := b.vouch(gp, code.String(), "")
	if st != http.StatusOK || r["published"] != false {
		t.Fatalf("vouch with the bus down: %d %v", st, r)
	}
	if raw, _ := w.bucket.Get(t.Context(), backoffice.BucketKey(code)); raw != nil {
		t.Fatal("in the bucket while the bus was down")
	}
	if n := w.count(`select count(*) from authorizations where published_at is null`); n != 1 {
		t.Fatalf("%d unpublished authorizations, want 1", n)
	}
	w.pub.down.Store(false)
	// The sweep every copy runs (world.run) puts it.
	w.eventually(1, `select count(*) from authorizations where published_at is not null`)
	if raw, err := w.bucket.Get(t.Context(), backoffice.BucketKey(code)); err != nil || raw == nil {
		t.Fatalf("bucket: %v", err)
	}
}

// TestRegisterDown: the register unreachable, a fresh mirror decides; no
// mirror at all, and sign-in is refused as unavailable.
func TestRegisterDown(t *testing.T) {
	w := newWorld(t, nil)
	gp := w.card("gp")
	w.ldap.Stop(t)
	st, r := w.browser().signIn(gp)
	if st != http.StatusServiceUnavailable || r.str("error") != "register-unavailable" {
		t.Fatalf("register down, no mirror: %d %v", st, r)
	}
	w.ldap.Start(t)
	if _, err := w.sync.Once(t.Context()); err != nil {
		t.Fatal(err)
	}
	w.ldap.Stop(t)
	b := w.browser()
	if st, r := b.signIn(gp); st != http.StatusOK {
		t.Fatalf("register down, fresh mirror: %d %v", st, r)
	}
	_, code := phone(t)
	if st, r := b.vouch(gp, code.String(), ""); st != http.StatusOK {
		t.Fatalf("vouch from the mirror: %d %v", st, r)
	}
}

// TestLanguage: the language follows Accept-Language, can be switched, and
// the switch is kept in the session.
func TestLanguage(t *testing.T) {
	w := newWorld(t, nil)
	b := w.browser()
	b.lang = "nl-NL,nl;q=0.9"
	if st, page := b.get("/signin"); st != http.StatusOK || !contains(page, `lang="nl"`) || !contains(page, "Aanmelden met uw pas") {
		t.Fatalf("sign-in page for a Dutch browser: %d", st)
	}
	b.mustSignIn(w.card("gp"))
	b.lang = "en"
	if st, page := b.get("/vouch"); st != http.StatusOK || !contains(page, "Instaan met mijn pas") {
		t.Fatalf("the session's language was not kept: %d", st)
	}
	resp, _ := b.do(http.MethodPost, "/lang", "application/x-www-form-urlencoded", []byte("lang=en&back=/vouch"))
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/vouch" {
		t.Fatalf("switch: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, page := b.get("/vouch"); !contains(page, "Vouch with my card") {
		t.Error("the switch to English did not hold")
	}
	_, r := b.post("/api/vouch/prepare", map[string]any{"code": "1234", "consent": true})
	if !contains(r.str("message"), "16 characters") {
		t.Errorf("error message not in the session's language: %v", r)
	}
	resp, _ = b.do(http.MethodPost, "/lang", "application/x-www-form-urlencoded", []byte("lang=xx&back=https://evil.example"))
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown language: %d", resp.StatusCode)
	}
}

// TestPagesHaveEveryText renders each page in each language: a message id
// that is missing from a catalogue shows as the id itself.
func TestPagesHaveEveryText(t *testing.T) {
	w := newWorld(t, nil)
	for _, lang := range i18n.Default().Languages() {
		b := w.browser()
		b.lang = lang
		pages := map[string]string{}
		_, pages["signin"] = b.get("/signin")
		b.mustSignIn(w.card("gp"))
		_, pages["vouch"] = b.get("/vouch")
		staff := w.browser()
		staff.lang = lang
		staff.mustSignIn(w.card("staff"))
		_, pages["staff"] = staff.get("/staff")
		for name, page := range pages {
			body := page[strings.Index(page, "</script>")+1:] // the script messages may hold ids as keys
			for _, prefix := range []string{">page.", ">role.", ">audit.", ">agent.", "page.vouch", "page.done"} {
				if contains(body, prefix) {
					t.Errorf("%s page in %s shows a message id (%s…)", name, lang, prefix)
				}
			}
			if !contains(page, `<html lang="`+lang+`">`) {
				t.Errorf("%s page is not in %s", name, lang)
			}
		}
	}
}

// TestRateLimits: sign-in attempts per address and vouches per card are
// limited; the limit says to wait, and another card is not affected.
func TestRateLimits(t *testing.T) {
	w := newWorld(t, func(c *backoffice.Config) { c.SignInPerMinute = 2; c.VouchPerMinute = 2 })
	b := w.browser()
	for i := range 5 {
		if st, r := b.post("/api/challenge", map[string]string{"purpose": "sign-in"}); st != http.StatusOK {
			t.Fatalf("challenge %d: %d %v", i+1, st, r)
		}
	}
	st, r := b.post("/api/challenge", map[string]string{"purpose": "sign-in"})
	if st != http.StatusTooManyRequests || !contains(r.str("message"), "wait") {
		t.Fatalf("sixth challenge in a row: %d %v", st, r)
	}
	w.clock.advance(time.Minute) // two more
	gp := w.card("gp")
	b.mustSignIn(gp)
	_, code := phone(t)
	for i := range 5 {
		if st, r := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true}); st != http.StatusOK {
			t.Fatalf("prepare %d: %d %v", i+1, st, r)
		}
	}
	if st, _ := b.post("/api/vouch/prepare", map[string]any{"code": code.String(), "consent": true}); st != http.StatusTooManyRequests {
		t.Fatalf("sixth vouch in a row: %d", st)
	}
	if n := w.count(`select count(*) from authorizations`); n != 0 {
		t.Errorf("%d authorizations", n)
	}
}
