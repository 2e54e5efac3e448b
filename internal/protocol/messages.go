package protocol

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

// Labels: type and version of each message, and its signing domain.
const (
	LabelLogin       = "vouch/login/v1"
	LabelStatement   = "vouch/statement/v1"
	LabelAttestation = "vouch/attestation/v1"
	LabelBundle      = "vouch/bundle/v1"
)

// Limits. A bundle is a few kilobytes; anything larger is refused unread.
const (
	MaxBundleSize      = 16 << 10
	MaxCertSize        = 4 << 10
	MaxSignatureSize   = 1024
	MaxValidity        = 24 * time.Hour
	AuthorizationIDLen = 16
	// MaxOnsetAge bounds how long before the statement's date the symptom
	// onset may lie. Keys older than 14 days are never published, so an
	// older onset says nothing useful and is more likely a typing error.
	MaxOnsetAge = 30 * 24 * time.Hour
)

// errOnset is a symptom onset that is not a date within MaxOnsetAge before
// the statement's issue date.
var errOnset = errors.New("protocol: symptom onset is not a date in the 30 days up to the statement's date")

// Statement is what the clinician's card signs: "I vouch that the phone with
// this code may publish, with the patient's consent."
type Statement struct {
	Jurisdiction    string // e.g. "NL"; a bundle is valid in one jurisdiction only
	AuthorizationID [AuthorizationIDLen]byte
	PhoneCode       phonecode.Code
	IssuedAt        time.Time // whole seconds, UTC
	ExpiresAt       time.Time
	Consent         bool     // the patient consented; must be true
	SymptomOnset    string   // "YYYY-MM-DD" or ""
	SignerCertHash  [32]byte // SHA-256 of the signing certificate's DER
}

// Marshal returns the canonical encoding.
func (s *Statement) Marshal() []byte {
	e := newEncoder(LabelStatement)
	e.str(s.Jurisdiction)
	e.bytes(s.AuthorizationID[:])
	e.bytes(s.PhoneCode[:])
	e.i64(s.IssuedAt.Unix())
	e.i64(s.ExpiresAt.Unix())
	if s.Consent {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.str(s.SymptomOnset)
	e.bytes(s.SignerCertHash[:])
	return e.b
}

// ParseStatement decodes a statement strictly.
func ParseStatement(b []byte) (*Statement, error) {
	d := newDecoder(b, LabelStatement)
	s := &Statement{}
	s.Jurisdiction = d.str(8)
	copy(s.AuthorizationID[:], d.fixed(AuthorizationIDLen))
	copy(s.PhoneCode[:], d.fixed(phonecode.Size))
	s.IssuedAt = d.time()
	s.ExpiresAt = d.time()
	switch d.u8() {
	case 0:
	case 1:
		s.Consent = true
	default:
		if d.err == nil {
			d.err = errMalformed
		}
	}
	s.SymptomOnset = d.str(10)
	copy(s.SignerCertHash[:], d.fixed(32))
	if err := d.finish(); err != nil {
		return nil, err
	}
	if len(s.Jurisdiction) < 2 {
		return nil, errMalformed
	}
	if err := checkOnset(s.SymptomOnset, s.IssuedAt); err != nil {
		return nil, err
	}
	return s, nil
}

// checkOnset accepts "" or a date from MaxOnsetAge before issued's UTC date
// up to the day after it: a clinician types the local date, which east of
// Greenwich (the Netherlands from 22:00 or 23:00 UTC) is already tomorrow's.
func checkOnset(onset string, issued time.Time) error {
	if onset == "" {
		return nil
	}
	day, err := time.Parse(time.DateOnly, onset)
	if err != nil {
		return errOnset
	}
	today := issued.UTC().Truncate(24 * time.Hour)
	if day.After(today.Add(24*time.Hour)) || day.Before(today.Add(-MaxOnsetAge)) {
		return errOnset
	}
	return nil
}

// Digest is the SHA-256 the card signs.
func (s *Statement) Digest() [32]byte { return sha256.Sum256(s.Marshal()) }

// LicenseActive is the only license status an attestation may vouch with.
const LicenseActive = "active"

// Attestation is the back end's countersignature: "at CheckedAt the register
// said this card's holder had an active license for this role."
type Attestation struct {
	StatementHash [32]byte // SHA-256 of the encoded statement
	UZI           string
	Role          string
	License       string
	CheckedAt     time.Time
	ExpiresAt     time.Time // equals the statement's
	KeyID         [32]byte  // SHA-256 of the attestation key's SubjectPublicKeyInfo
}

// Marshal returns the canonical encoding.
func (a *Attestation) Marshal() []byte {
	e := newEncoder(LabelAttestation)
	e.bytes(a.StatementHash[:])
	e.str(a.UZI)
	e.str(a.Role)
	e.str(a.License)
	e.i64(a.CheckedAt.Unix())
	e.i64(a.ExpiresAt.Unix())
	e.bytes(a.KeyID[:])
	return e.b
}

// ParseAttestation decodes an attestation strictly.
func ParseAttestation(b []byte) (*Attestation, error) {
	d := newDecoder(b, LabelAttestation)
	a := &Attestation{}
	copy(a.StatementHash[:], d.fixed(32))
	a.UZI = d.str(16)
	a.Role = d.str(16)
	a.License = d.str(16)
	a.CheckedAt = d.time()
	a.ExpiresAt = d.time()
	copy(a.KeyID[:], d.fixed(32))
	return a, d.finish()
}

// Bundle is what the phone picks up and later uploads with its keys. It
// carries the signature certificate alone: verifiers build the path from the
// issuing CAs they are configured with, never from CAs a bundle brings, so
// nothing in a bundle is unsigned and its encoding is unique (docs/protocol.md
// §6).
type Bundle struct {
	Statement            []byte // encoded Statement
	StatementSignature   []byte // RSA PKCS#1 v1.5 SHA-256 by the card's signature key
	Cert                 []byte // DER signature certificate; its SHA-256 is in the statement
	Attestation          []byte // encoded Attestation
	AttestationSignature []byte // ECDSA P-256 SHA-256, ASN.1 DER, low S
}

// Marshal returns the canonical encoding.
func (b *Bundle) Marshal() []byte {
	e := newEncoder(LabelBundle)
	e.bytes(b.Statement)
	e.bytes(b.StatementSignature)
	e.bytes(b.Cert)
	e.bytes(b.Attestation)
	e.bytes(b.AttestationSignature)
	return e.b
}

// ParseBundle decodes a bundle strictly; it does not verify anything.
func ParseBundle(raw []byte) (*Bundle, error) {
	if len(raw) > MaxBundleSize {
		return nil, errFieldTooLarge
	}
	d := newDecoder(raw, LabelBundle)
	b := &Bundle{}
	b.Statement = d.bytes(1024)
	b.StatementSignature = d.bytes(MaxSignatureSize)
	b.Cert = d.bytes(MaxCertSize)
	b.Attestation = d.bytes(1024)
	b.AttestationSignature = d.bytes(MaxSignatureSize)
	return b, d.finish()
}

// LoginMessage is what the card's authentication key signs at login, in the
// manner of Web eID: the origin and the challenge, each hashed, behind the
// login label.
func LoginMessage(origin string, challenge []byte) []byte {
	ho := sha256.Sum256([]byte(origin))
	hc := sha256.Sum256(challenge)
	e := newEncoder(LabelLogin)
	e.b = append(e.b, ho[:]...)
	e.b = append(e.b, hc[:]...)
	return e.b
}

// NewStatement fills in the times for a statement issued now.
func NewStatement(jurisdiction string, id [AuthorizationIDLen]byte, code phonecode.Code, now time.Time, onset string, signerDER []byte) (*Statement, error) {
	now = now.UTC().Truncate(time.Second)
	if err := checkOnset(onset, now); err != nil {
		return nil, fmt.Errorf("%w: %q", err, onset)
	}
	return &Statement{
		Jurisdiction: jurisdiction, AuthorizationID: id, PhoneCode: code,
		IssuedAt: now, ExpiresAt: now.Add(MaxValidity), Consent: true, SymptomOnset: onset,
		SignerCertHash: sha256.Sum256(signerDER),
	}, nil
}
