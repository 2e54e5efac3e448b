// Package testpki builds Vouch's UZI-like test PKI and personalises one
// SoftHSM2 token per test card, the way a real UZI card is laid out: an
// authentication key and certificate, a signature (non-repudiation) key and
// certificate, RSA-2048, behind a user PIN. The keys are made on the token
// and never leave it; the CA keys live in files in the PKI directory, because
// test CAs must be able to issue again (CRLs, new cards) on a re-run.
//
// pkcs11-mocks is its command; tests reach it through internal/testenv.
package testpki

import (
	"time"

	"github.com/vouch-nl/vouch/internal/uzi"
)

// Issuing CAs below the test root, as in the UZI register.
const (
	CACareProvider  = "care-provider" // Z cards
	CANamedEmployee = "named-employee"
	CAServices      = "services" // nameless M cards
	CAServer        = "server"   // S certificates
	CAUnknown       = "unknown"  // a CA under a root nobody trusts
)

// Validity of a card relative to the moment the PKI was made.
type Validity string

// Validities.
const (
	Valid       Validity = "valid"
	Expired     Validity = "expired"
	NotYetValid Validity = "not-yet-valid"
)

// Card is one test card. The registry fixtures (registry/) carry the same
// UZI numbers and license states.
type Card struct {
	Name        string // token label is "vouch-" + Name
	Description string
	OIDCA       string
	UZI         string
	Type        uzi.CardType
	Subscriber  string
	Role        string
	AGB         string
	CA          string
	Validity    Validity
	Revoked     bool   // listed in its CA's CRL
	License     string // registry license status: active, suspended, ...
	CommonName  string
}

// UZIName is the card's otherName 2.5.5.5 value.
func (c Card) UZIName() string {
	return uzi.Identity{OIDCA: c.OIDCA, Version: "1", UZI: c.UZI, CardType: c.Type, Subscriber: c.Subscriber, Role: c.Role, AGB: c.AGB}.String()
}

// TokenLabel is the SoftHSM token label of the card.
func (c Card) TokenLabel() string { return "vouch-" + c.Name }

// PIN of every test card and of the back-end token. Test material only.
const (
	CardPIN    = "123456"
	CardSOPIN  = "12345678"
	BackendPIN = "backend-1234"
	// BackendToken holds the back end's export and attestation keys.
	BackendToken = "vouch-backend"
)

// Object ids on a card and on the back-end token.
var (
	AuthKeyID        = []byte{0x01}
	SignKeyID        = []byte{0x02}
	ExportKeyID      = []byte{0x10}
	AttestationKeyID = []byte{0x11}
)

// Cards is the standard test set.
func Cards() []Card {
	z := func(name, desc, uziNo, role, cn string) Card {
		return Card{Name: name, Description: desc, OIDCA: uzi.TestOIDCA, UZI: uziNo, Type: uzi.CardCareProvider,
			Subscriber: "90000001", Role: role, AGB: "01234567", CA: CACareProvider, Validity: Valid, License: "active", CommonName: cn}
	}
	gpLike := func(name, desc, uziNo string) Card {
		return z(name, desc, uziNo, "01.015", "Test GP "+name)
	}
	cards := []Card{
		z("gp", "general practitioner (01.015), may vouch", "900000001", "01.015", "A. Huisarts"),
		z("doctor", "medical specialist (01.010), may vouch", "900000002", "01.010", "B. Specialist"),
		z("nurse", "nurse (30.000), may vouch", "900000003", "30.000", "C. Verpleegkundige"),
		z("dentist", "dentist (02.000), may vouch", "900000004", "02.000", "D. Tandarts"),
		z("pharmacist", "pharmacist (17.000): signs in, role not allowed to vouch", "900000005", "17.000", "E. Apotheker"),
		z("midwife", "midwife (03.000), may vouch", "900000006", "03.000", "F. Verloskundige"),
		{Name: "staff", Description: "named employee (N): signs in as staff, never vouches", OIDCA: uzi.TestOIDCANamed, UZI: "900000010",
			Type: uzi.CardNamedEmployee, Subscriber: "90000001", Role: "00.000", AGB: "00000000", CA: CANamedEmployee, Validity: Valid, License: "active", CommonName: "G. Medewerker"},
		{Name: "nameless", Description: "nameless employee card (M): refused", OIDCA: uzi.TestOIDCANameless, UZI: "900000011",
			Type: uzi.CardNameless, Subscriber: "90000001", Role: "00.000", AGB: "00000000", CA: CAServices, Validity: Valid, License: "active", CommonName: "Balie 3"},
		{Name: "server", Description: "server certificate (S): refused", OIDCA: uzi.TestOIDCAServer, UZI: "900000012",
			Type: uzi.CardServer, Subscriber: "90000001", Role: "00.000", AGB: "00000000", CA: CAServer, Validity: Valid, License: "active", CommonName: "server.praktijk.test"},
	}
	expired := gpLike("expired", "GP whose card has expired", "900000020")
	expired.Validity = Expired
	notYet := gpLike("notyet", "GP whose card is not valid yet", "900000021")
	notYet.Validity = NotYetValid
	revoked := gpLike("revoked", "GP whose card is revoked in the CRL", "900000022")
	revoked.Revoked = true
	unknown := gpLike("unknownca", "GP card from a CA nobody trusts", "900000023")
	unknown.CA = CAUnknown
	suspended := gpLike("suspended", "GP whose license is suspended in the registry", "900000024")
	suspended.License = "suspended"
	prod := gpLike("gp-prodlike", "GP with the production naming OID (refused by the test profile)", "900000025")
	prod.OIDCA = uzi.ProductionOIDCA
	return append(cards, expired, notYet, revoked, unknown, suspended, prod)
}

// CardByName finds a card of the standard set.
func CardByName(name string) (Card, bool) {
	for _, c := range Cards() {
		if c.Name == name {
			return c, true
		}
	}
	return Card{}, false
}

// validity returns the certificate window for v, relative to made.
func validity(v Validity, made time.Time) (notBefore, notAfter time.Time) {
	day := 24 * time.Hour
	switch v {
	case Expired:
		return made.Add(-3 * 365 * day), made.Add(-30 * day)
	case NotYetValid:
		return made.Add(10 * 365 * day), made.Add(13 * 365 * day)
	}
	return made.Add(-day), made.Add(5 * 365 * day)
}
