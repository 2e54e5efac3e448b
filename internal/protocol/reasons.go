package protocol

import (
	"fmt"
	"slices"

	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/uzi"
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

// reasons lists every reason; what each means for a person is the message
// "reason.<code>" of the catalogues in internal/i18n.
var reasons = []Reason{
	ReasonOK,
	ReasonMalformed, ReasonTruncated, ReasonTooLarge, ReasonUnknownVersion, ReasonWrongType,
	ReasonUnknownCA, ReasonCertSignature, ReasonCertNotEndEntity, ReasonCertExtension, ReasonCertKey, ReasonCertPolicy,
	ReasonCertExpired, ReasonCertNotYetValid, ReasonCertUsage, ReasonCertRevoked, ReasonRevocationUnknown,
	ReasonSignature, ReasonSignerMismatch,
	ReasonWrongJurisdiction, ReasonCodeMismatch, ReasonExpired, ReasonNotYetValid, ReasonValidityTooLong, ReasonNoConsent, ReasonSymptomOnset,
	ReasonAttestationUnknownKey, ReasonAttestationSignature, ReasonAttestationMismatch, ReasonLicenseNotActive,
	ReasonCardNameMissing, ReasonCardNameMalformed, ReasonCardWrongProfile, ReasonCardTypeWrongCA,
	ReasonCardStaff, ReasonCardNameless, ReasonCardServer, ReasonCardRole,
}

// Reasons lists every reason, for documentation and tests.
func Reasons() []Reason { return slices.Clone(reasons) }

// MessageID is r's message in the catalogues.
func (r Reason) MessageID() string { return "reason." + string(r) }

// Text says what r means to a person, in lang (English when the catalogue
// has no such language).
func (r Reason) Text(lang string) string { return i18n.T(lang, r.MessageID()) }

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
