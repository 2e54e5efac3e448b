package protocol

import (
	"fmt"
	"vouch/internal/i18n"

	"vouch/internal/uzi"
)

// Reason is the stable code of a verdict. Codes are part of the protocol:
// support staff, logs and phones key on them, so they never change meaning.
type Reason string

// Verdicts of Verify. ReasonOK is the only one that accepts.
const (
	ReasonOK Reason = "ok"

	ReasonMalformed      Reason = "malformed"
	ReasonTruncated      Reason = "truncated"
	ReasonTooLarge       Reason = "too-large"
	ReasonUnknownVersion Reason = "unknown-version"
	ReasonWrongType      Reason = "wrong-type"

	ReasonUnknownCA         Reason = "chain-unknown-ca"
	ReasonCertSignature     Reason = "cert-signature-invalid"
	ReasonCertNotEndEntity  Reason = "cert-not-end-entity"
	ReasonCertExtension     Reason = "cert-critical-extension"
	ReasonCertKey           Reason = "cert-key-unsupported"
	ReasonCertPolicy        Reason = "cert-policy"
	ReasonCertExpired       Reason = "cert-expired"
	ReasonCertNotYetValid   Reason = "cert-not-yet-valid"
	ReasonCertUsage         Reason = "cert-usage"
	ReasonCertRevoked       Reason = "cert-revoked"
	ReasonRevocationUnknown Reason = "cert-revocation-unknown"

	ReasonSignature      Reason = "signature-invalid"
	ReasonSignerMismatch Reason = "signer-mismatch"

	ReasonWrongJurisdiction Reason = "wrong-jurisdiction"
	ReasonCodeMismatch      Reason = "code-mismatch"
	ReasonExpired           Reason = "authorization-expired"
	ReasonNotYetValid       Reason = "authorization-not-yet-valid"
	ReasonValidityTooLong   Reason = "authorization-validity-too-long"
	ReasonNoConsent         Reason = "no-consent"
	ReasonSymptomOnset      Reason = "symptom-onset-invalid"

	ReasonAttestationUnknownKey Reason = "attestation-unknown-key"
	ReasonAttestationSignature  Reason = "attestation-signature-invalid"
	ReasonAttestationMismatch   Reason = "attestation-mismatch"
	ReasonLicenseNotActive      Reason = "license-not-active"
)

// Card refusals share their codes with internal/uzi.
const (
	ReasonCardNameMissing   = Reason(uzi.CodeNameMissing)
	ReasonCardNameMalformed = Reason(uzi.CodeNameMalformed)
	ReasonCardWrongProfile  = Reason(uzi.CodeWrongProfile)
	ReasonCardTypeWrongCA   = Reason(uzi.CodeTypeWrongCA)
	ReasonCardStaff         = Reason(uzi.CodeStaffCard)
	ReasonCardNameless      = Reason(uzi.CodeNamelessCard)
	ReasonCardServer        = Reason(uzi.CodeServerCard)
	ReasonCardRole          = Reason(uzi.CodeRoleNotAllowed)
)

// texts holds, per reason, what it means for a person: English and Dutch.
var texts = map[Reason]i18n.Text{
	ReasonOK:             {EN: "The authorization is valid.", NL: "De autorisatie is geldig."},
	ReasonMalformed:      {EN: "This is not a readable Vouch authorization.", NL: "Dit is geen leesbare Vouch-autorisatie."},
	ReasonTruncated:      {EN: "The authorization is incomplete: it was cut off in transfer.", NL: "De autorisatie is onvolledig: ze is bij het versturen afgebroken."},
	ReasonTooLarge:       {EN: "The authorization is larger than any valid one.", NL: "De autorisatie is groter dan een geldige kan zijn."},
	ReasonUnknownVersion: {EN: "The authorization has a version this system does not know; update the app.", NL: "De autorisatie heeft een versie die dit systeem niet kent; werk de app bij."},
	ReasonWrongType:      {EN: "This is another kind of Vouch message, not an authorization.", NL: "Dit is een ander soort Vouch-bericht, geen autorisatie."},

	ReasonUnknownCA:         {EN: "The card was not issued by a trusted UZI authority.", NL: "De pas is niet uitgegeven door een vertrouwde UZI-uitgever."},
	ReasonCertSignature:     {EN: "The card's certificate was not signed by the authority it names: it was altered or forged.", NL: "Het certificaat van de pas is niet ondertekend door de uitgever die het noemt: het is gewijzigd of vervalst."},
	ReasonCertNotEndEntity:  {EN: "The certificate is that of a certificate authority, not of a card.", NL: "Het certificaat is van een certificaatuitgever, niet van een pas."},
	ReasonCertExtension:     {EN: "The card's certificate has a critical extension that UZI cards do not carry.", NL: "Het certificaat van de pas heeft een kritieke extensie die UZI-passen niet hebben."},
	ReasonCertKey:           {EN: "The card's key is not an RSA-2048 key as on UZI cards.", NL: "De sleutel van de pas is geen RSA-2048-sleutel zoals op UZI-passen."},
	ReasonCertPolicy:        {EN: "The card's certificate lacks the UZI certificate policy for this use.", NL: "Het certificaat van de pas mist het UZI-certificaatbeleid voor dit gebruik."},
	ReasonCertExpired:       {EN: "The clinician's card had expired.", NL: "De pas van de zorgverlener was verlopen."},
	ReasonCertNotYetValid:   {EN: "The clinician's card was not valid yet.", NL: "De pas van de zorgverlener was nog niet geldig."},
	ReasonCertUsage:         {EN: "The card's certificate is not meant for this use (key usage or extended key usage).", NL: "Het certificaat van de pas is niet voor dit gebruik bedoeld (sleutelgebruik)."},
	ReasonCertRevoked:       {EN: "The clinician's card has been revoked.", NL: "De pas van de zorgverlener is ingetrokken."},
	ReasonRevocationUnknown: {EN: "Whether the card has been revoked cannot be checked right now; try again later.", NL: "Of de pas is ingetrokken kan nu niet worden nagegaan; probeer het later opnieuw."},

	ReasonSignature:      {EN: "The card's signature does not match the authorization: it was altered or forged.", NL: "De handtekening van de pas klopt niet bij de autorisatie: die is gewijzigd of vervalst."},
	ReasonSignerMismatch: {EN: "The authorization names another card than the one that signed it.", NL: "De autorisatie noemt een andere pas dan de pas die ondertekende."},

	ReasonWrongJurisdiction: {EN: "The authorization was issued for another country or region.", NL: "De autorisatie is voor een ander land of gebied uitgegeven."},
	ReasonCodeMismatch:      {EN: "The authorization belongs to another phone.", NL: "De autorisatie hoort bij een andere telefoon."},
	ReasonExpired:           {EN: "The authorization has expired (it is valid for 24 hours); ask for a new one.", NL: "De autorisatie is verlopen (ze is 24 uur geldig); vraag een nieuwe aan."},
	ReasonNotYetValid:       {EN: "The authorization is dated in the future; check the clock.", NL: "De autorisatie is in de toekomst gedateerd; controleer de klok."},
	ReasonValidityTooLong:   {EN: "The authorization claims a validity longer than 24 hours.", NL: "De autorisatie claimt een geldigheid langer dan 24 uur."},
	ReasonNoConsent:         {EN: "The patient's consent was not recorded.", NL: "De toestemming van de patiënt is niet vastgelegd."},
	ReasonSymptomOnset:      {EN: "The symptom onset date is not a date in the 30 days up to the authorization.", NL: "De datum van de eerste klachten ligt niet in de 30 dagen tot en met de autorisatie."},

	ReasonAttestationUnknownKey: {EN: "The license attestation was not made by this service.", NL: "De registratieverklaring is niet door deze dienst gemaakt."},
	ReasonAttestationSignature:  {EN: "The license attestation's signature is invalid.", NL: "De handtekening onder de registratieverklaring is ongeldig."},
	ReasonAttestationMismatch:   {EN: "The license attestation belongs to another authorization or card.", NL: "De registratieverklaring hoort bij een andere autorisatie of pas."},
	ReasonLicenseNotActive:      {EN: "The clinician's license was not active.", NL: "De registratie van de zorgverlener was niet actief."},

	ReasonCardNameMissing:   {EN: "The card carries no UZI identity.", NL: "De pas bevat geen UZI-identiteit."},
	ReasonCardNameMalformed: {EN: "The card's UZI identity is malformed.", NL: "De UZI-identiteit op de pas is onjuist opgebouwd."},
	ReasonCardWrongProfile:  {EN: "The card belongs to another environment (test or production).", NL: "De pas hoort bij een andere omgeving (test of productie)."},
	ReasonCardTypeWrongCA:   {EN: "The card's type does not match the authority that issued it.", NL: "Het type pas past niet bij de uitgever van de pas."},
	ReasonCardStaff:         {EN: "An employee card may not vouch; a licensed care provider must.", NL: "Een medewerkerspas mag niet autoriseren; dat moet een geregistreerde zorgverlener doen."},
	ReasonCardNameless:      {EN: "A nameless card may not be used: it is not personal.", NL: "Een naamloze pas mag niet worden gebruikt: die is niet persoonlijk."},
	ReasonCardServer:        {EN: "A server certificate may not be used: it is not a person.", NL: "Een servercertificaat mag niet worden gebruikt: dat is geen persoon."},
	ReasonCardRole:          {EN: "This profession may not vouch.", NL: "Deze beroepsgroep mag niet autoriseren."},
}

// Reasons lists every reason, for documentation and tests.
func Reasons() []Reason {
	out := make([]Reason, 0, len(texts))
	for r := range texts {
		out = append(out, r)
	}
	return out
}

// Text says what r means to a person, in "en" or "nl" (English otherwise).
func (r Reason) Text(lang string) string { return i18n.Of(texts, r, lang) }

// Refusal is the error Verify returns: a reason, and the underlying cause for
// logs (never shown to a phone or a patient).
type Refusal struct {
	Reason Reason
	Cause  error
}

func (r *Refusal) Error() string {
	if r.Cause != nil {
		return fmt.Sprintf("protocol: refused (%s): %v", r.Reason, r.Cause)
	}
	return fmt.Sprintf("protocol: refused (%s)", r.Reason)
}

func (r *Refusal) Unwrap() error { return r.Cause }

func refuse(reason Reason, cause error) *Refusal { return &Refusal{Reason: reason, Cause: cause} }

// decodeReason maps a decoding error to its reason.
func decodeReason(err error) Reason {
	switch err {
	case errTruncated:
		return ReasonTruncated
	case errUnknownVersion:
		return ReasonUnknownVersion
	case errWrongType:
		return ReasonWrongType
	case errOnset:
		return ReasonSymptomOnset
	}
	return ReasonMalformed
}
