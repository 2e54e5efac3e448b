package uzi

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Purpose is what a card is being used for.
type Purpose string

// Purposes a card can be checked for. There are exactly two; any other value
// is refused, so a new use must be added here on purpose.
const (
	PurposeLogin Purpose = "login" // sign in to the back office (authentication key)
	PurposeVouch Purpose = "vouch" // sign an authorization statement (non-repudiation key)
)

// Code is a stable, machine-readable reason why a card was refused. Codes are
// part of the protocol (docs/protocol.md) and never change meaning.
type Code string

// Refusal codes of the card profile.
const (
	CodeNameMissing    Code = "card-name-missing"
	CodeNameMalformed  Code = "card-name-malformed"
	CodeWrongProfile   Code = "card-wrong-profile"
	CodeTypeWrongCA    Code = "card-type-wrong-ca"
	CodeStaffCard      Code = "card-staff"
	CodeNamelessCard   Code = "card-nameless"
	CodeServerCard     Code = "card-server"
	CodeRoleNotAllowed Code = "card-role-not-allowed"
)

// ErrUnknownPurpose is a programming error: Check was asked about a use that
// does not exist. It refuses like any other error.
var ErrUnknownPurpose = errors.New("uzi: unknown card purpose")

// Refusal is the error a profile check returns.
type Refusal struct {
	Code   Code
	Detail string // for logs and support staff; never contains a PIN or patient data
}

func (r *Refusal) Error() string { return fmt.Sprintf("uzi: %s: %s", r.Code, r.Detail) }

// CodeOf returns the refusal code of err, mapping name errors too, or "" when
// err is not a card refusal.
func CodeOf(err error) Code {
	var r *Refusal
	var ne *NameError
	switch {
	case errors.As(err, &r):
		return r.Code
	case errors.Is(err, ErrNoName):
		return CodeNameMissing
	case errors.As(err, &ne):
		return CodeNameMalformed
	}
	return ""
}

// Profile is a named, immutable set of rules: which naming-scheme OID each
// card type carries (the UZI register has one issuing CA per card type, and
// the name's first field names it), which certificate policy each key
// purpose's certificate must carry, and which professions may vouch.
// Production and test profiles have disjoint OIDs, so a test card can never
// pass a production check. The fields are unexported so that no caller can
// widen a profile by accident; WithVouchProfessions makes a checked copy.
type Profile struct {
	name             string
	oidCA            map[CardType]string
	policies         map[Purpose]string
	rootPolicy       string // a policy every trusted root must carry ("" : none may carry testRootPolicy)
	vouchProfessions []string
}

// defaultVouchProfessions are the professions that may vouch unless
// configured otherwise: 01 doctor, 02 dentist, 03 midwife, 30 nurse.
var defaultVouchProfessions = [...]string{"01", "02", "03", "30"}

// DefaultVouchProfessions returns a fresh copy of the default professions.
func DefaultVouchProfessions() []string { return slices.Clone(defaultVouchProfessions[:]) }

// Naming-scheme OIDs of the production UZI register, one per issuing CA and
// so per card type ("OID CA" in the UZI CPS).
const (
	ProductionOIDCA         = "2.16.528.1.1003.1.3.5.5.2" // UZI-register Zorgverlener CA (Z)
	ProductionOIDCANamed    = "2.16.528.1.1003.1.3.5.5.3" // UZI-register Medewerker op naam CA (N)
	ProductionOIDCANameless = "2.16.528.1.1003.1.3.5.5.4" // UZI-register Medewerker niet op naam CA (M)
	ProductionOIDCAServer   = "2.16.528.1.1003.1.3.5.5.5" // UZI-register Server CA (S)
)

// Certificate policies of PKIoverheid's organisation domain, under which the
// UZI register issues card certificates: the authentication certificate
// carries the first, the non-repudiation (signature) certificate the second.
const (
	ProductionPolicyAuth = "2.16.528.1.1003.1.2.5.1"
	ProductionPolicySign = "2.16.528.1.1003.1.2.5.2"
)

// testRootPolicy marks the root of Vouch's test PKI. A production profile
// refuses a root that carries it; the test profile refuses any root without
// it, so a test build can never be pointed at real UZI roots.
const testRootPolicy = "2.16.528.1.1003.1.2.9.99"

// Production is the profile for real cards. It is always compiled in.
func Production() Profile {
	return Profile{
		name: "production",
		oidCA: map[CardType]string{CardCareProvider: ProductionOIDCA, CardNamedEmployee: ProductionOIDCANamed,
			CardNameless: ProductionOIDCANameless, CardServer: ProductionOIDCAServer},
		policies:         map[Purpose]string{PurposeLogin: ProductionPolicyAuth, PurposeVouch: ProductionPolicySign},
		vouchProfessions: DefaultVouchProfessions(),
	}
}

// ProfileByName returns a compiled-in profile. A production build
// (go build -tags production) knows only "production".
func ProfileByName(name string) (Profile, error) {
	if name == "production" {
		return Production(), nil
	}
	if p, ok := extraProfiles()[name]; ok {
		return p, nil
	}
	return Profile{}, fmt.Errorf("uzi: unknown card profile %q (known: %v)", name, ProfileNames())
}

// ProfileNames lists the compiled-in profiles.
func ProfileNames() []string {
	names := []string{"production"}
	for n := range extraProfiles() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Name is the profile's name ("production", "test").
func (p Profile) Name() string { return p.name }

// OIDCA is the naming-scheme OID that cards of type t carry under p, or "".
func (p Profile) OIDCA(t CardType) string { return p.oidCA[t] }

// Policy is the certificate policy OID a certificate used for purpose must
// carry under p, or "" for an unknown purpose.
func (p Profile) Policy(purpose Purpose) string { return p.policies[purpose] }

// VouchProfessions returns a copy of the professions that may vouch.
func (p Profile) VouchProfessions() []string { return slices.Clone(p.vouchProfessions) }

// WithVouchProfessions returns a copy of p with another set of professions.
func (p Profile) WithVouchProfessions(codes []string) (Profile, error) {
	if len(codes) == 0 {
		return p, errors.New("uzi: no profession may vouch; give at least one code")
	}
	for _, c := range codes {
		if !isDigits(c, 2) {
			return p, fmt.Errorf("uzi: profession code %q is not two digits", c)
		}
	}
	p.vouchProfessions = slices.Clone(codes)
	return p, nil
}

// CheckRoot refuses a root CA that does not belong to p: the test profile
// trusts only roots of Vouch's test PKI, and production never trusts one.
func (p Profile) CheckRoot(root *x509.Certificate) error {
	marked := hasPolicy(root, testRootPolicy)
	switch {
	case p.rootPolicy != "" && !hasPolicy(root, p.rootPolicy):
		return fmt.Errorf("uzi: root %q is not a root of the %s PKI (it lacks policy %s)", root.Subject, p.name, p.rootPolicy)
	case p.rootPolicy == "" && marked:
		return fmt.Errorf("uzi: root %q belongs to Vouch's test PKI and is never trusted by the %s profile", root.Subject, p.name)
	}
	return nil
}

// hasPolicy reports whether cert carries the certificate policy oid.
func hasPolicy(cert *x509.Certificate, oid string) bool {
	for _, got := range cert.Policies {
		if got.String() == oid {
			return true
		}
	}
	return false
}

// HasPolicy reports whether cert carries the policy that purpose requires
// under p. anyPolicy does not count: a card certificate must name the UZI
// policy itself.
func (p Profile) HasPolicy(cert *x509.Certificate, purpose Purpose) bool {
	want := p.policies[purpose]
	return want != "" && hasPolicy(cert, want)
}

// Check decides whether the card with identity id, issued by a CA that
// issues cards of type issuer, may be used for purpose under p. It returns a
// *Refusal with the reason when it may not.
//
//	The name's OID CA must be p's, and name the CA of the card's own type;
//	the CA that issued the certificate must be the CA of that type.
//	Z: may sign in; may vouch only with an allowed profession.
//	N: may sign in (staff roles); never vouch.
//	M, S: refused.
func (p Profile) Check(id Identity, issuer CardType, purpose Purpose) error {
	if purpose != PurposeLogin && purpose != PurposeVouch {
		return fmt.Errorf("%w %q", ErrUnknownPurpose, purpose)
	}
	var named CardType
	for t, oid := range p.oidCA {
		if oid == id.OIDCA {
			named = t
		}
	}
	switch {
	case named == "":
		return &Refusal{Code: CodeWrongProfile, Detail: fmt.Sprintf("naming scheme %s is not part of the %s profile", id.OIDCA, p.name)}
	case named != id.CardType:
		return &Refusal{Code: CodeTypeWrongCA, Detail: fmt.Sprintf("card type %s under the naming scheme of %s cards", id.CardType, named)}
	case issuer != id.CardType:
		return &Refusal{Code: CodeTypeWrongCA, Detail: fmt.Sprintf("card type %s issued by the CA for %s cards", id.CardType, issuer)}
	}
	switch id.CardType {
	case CardCareProvider:
		if purpose == PurposeVouch && !slices.Contains(p.vouchProfessions, id.Profession()) {
			return &Refusal{Code: CodeRoleNotAllowed, Detail: fmt.Sprintf("role %s may not vouch", id.Role)}
		}
		return nil
	case CardNamedEmployee:
		if purpose == PurposeVouch {
			return &Refusal{Code: CodeStaffCard, Detail: "a named employee card (N) may not vouch"}
		}
		return nil
	case CardNameless:
		return &Refusal{Code: CodeNamelessCard, Detail: "a nameless card (M) is not personal"}
	default: // CardServer: the profiles know no other type
		return &Refusal{Code: CodeServerCard, Detail: "a server certificate (S) is not a person"}
	}
}
