package uzi

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Purpose is what a card is being used for.
type Purpose string

// Purposes a card can be checked for.
const (
	PurposeLogin Purpose = "login" // sign in to the back office
	PurposeVouch Purpose = "vouch" // sign an authorization statement
)

// Code is a stable, machine-readable reason why a card was refused. Codes are
// part of the protocol (docs/protocol.md) and never change meaning.
type Code string

// Refusal codes of the card profile.
const (
	CodeNameMissing     Code = "card-name-missing"
	CodeNameMalformed   Code = "card-name-malformed"
	CodeWrongProfile    Code = "card-wrong-profile"
	CodeStaffCard       Code = "card-staff"
	CodeNamelessCard    Code = "card-nameless"
	CodeServerCard      Code = "card-server"
	CodeRoleNotAllowed  Code = "card-role-not-allowed"
	CodeUnknownCardType Code = "card-type-unknown"
)

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

// Profile is a named set of rules: which naming-scheme OIDs are accepted and
// which professions may vouch. Production and test profiles have disjoint OID
// sets, so a test card can never pass a production check.
type Profile struct {
	Name string
	// CAOIDs are the accepted values of the UZI name's first field.
	CAOIDs []string
	// VouchProfessions are the profession codes (the role's first two digits)
	// that may vouch: 01 doctor, 02 dentist, 03 midwife, 30 nurse by default.
	VouchProfessions []string
}

// DefaultVouchProfessions are the professions that may vouch unless configured
// otherwise.
var DefaultVouchProfessions = []string{"01", "02", "03", "30"}

// ProductionOIDCA is the naming-scheme OID of the production UZI register.
const ProductionOIDCA = "2.16.528.1.1003.1.3.5.5.2"

// Production is the profile for real cards. It is always compiled in.
func Production() Profile {
	return Profile{Name: "production", CAOIDs: []string{ProductionOIDCA}, VouchProfessions: DefaultVouchProfessions}
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

// WithVouchProfessions returns a copy of p with another set of professions.
func (p Profile) WithVouchProfessions(codes []string) (Profile, error) {
	for _, c := range codes {
		if !isDigits(c, 2) {
			return p, fmt.Errorf("uzi: profession code %q is not two digits", c)
		}
	}
	p.VouchProfessions = slices.Clone(codes)
	return p, nil
}

// Check decides whether the card with identity id may be used for purpose
// under p. It returns a *Refusal with the reason when it may not.
//
//	Z: may sign in; may vouch only with an allowed profession.
//	N: may sign in (staff roles); never vouch.
//	M, S: refused.
func (p Profile) Check(id Identity, purpose Purpose) error {
	if !slices.Contains(p.CAOIDs, id.OIDCA) {
		return &Refusal{Code: CodeWrongProfile, Detail: fmt.Sprintf("naming scheme %s is not part of the %s profile", id.OIDCA, p.Name)}
	}
	switch id.CardType {
	case CardCareProvider:
		if purpose == PurposeVouch && !slices.Contains(p.VouchProfessions, id.Profession()) {
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
	case CardServer:
		return &Refusal{Code: CodeServerCard, Detail: "a server certificate (S) is not a person"}
	}
	return &Refusal{Code: CodeUnknownCardType, Detail: fmt.Sprintf("card type %q", id.CardType)}
}
