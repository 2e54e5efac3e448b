// Package uzi reads the identity that a UZI-style card certificate carries and
// decides, under a named profile, what the card's holder may do in Vouch.
//
// The identity lives in a subjectAltName otherName with type 2.5.5.5 whose
// value is an IA5String of seven dash-separated fields. Go's x509 package does
// not expose otherNames, so this package walks the extension with
// encoding/asn1 itself and checks every field strictly: a card that does not
// say exactly who it is may not do anything.
package uzi

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"
)

// OIDUZIName is the otherName type-id under which UZI certificates carry the
// identity string.
var OIDUZIName = asn1.ObjectIdentifier{2, 5, 5, 5}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// CardType is the fourth field of the UZI name.
type CardType string

// Card types as the UZI register issues them.
const (
	CardCareProvider  CardType = "Z" // named, licensed care provider
	CardNamedEmployee CardType = "N" // named employee, non-medical staff
	CardNameless      CardType = "M" // nameless employee card
	CardServer        CardType = "S" // server certificate
)

// Identity is the parsed UZI name of one certificate.
type Identity struct {
	OIDCA      string   // OID of the issuing CA's naming scheme; decides the profile
	Version    string   // always "1"
	UZI        string   // 9-digit UZI number of the card holder
	CardType   CardType // Z, N, M or S
	Subscriber string   // 8-digit subscriber (organisation) number
	Role       string   // NN.NNN: profession and specialism
	AGB        string   // 8-digit AGB code
}

// Profession is the first two digits of the role ("01" for a doctor).
func (id Identity) Profession() string { return id.Role[:2] }

// String renders the identity exactly as it stands in the certificate.
func (id Identity) String() string {
	return strings.Join([]string{id.OIDCA, id.Version, id.UZI, string(id.CardType), id.Subscriber, id.Role, id.AGB}, "-")
}

// MaxNameLength bounds the UZI name; real names are about 70 characters.
const MaxNameLength = 256

// ErrNoName means the certificate carries no UZI name at all.
var ErrNoName = errors.New("uzi: certificate has no UZI name (otherName 2.5.5.5)")

// NameError says which part of a UZI name is malformed.
type NameError struct {
	Field string
	Value string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("uzi: malformed UZI name: field %s %q", e.Field, e.Value)
}

// FromCertificate returns the UZI identity of cert. It fails with ErrNoName
// when there is none, with a *NameError when it is malformed, and when a
// certificate carries more than one UZI name (ambiguous, so refused).
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	var names []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		found, err := otherNames(ext.Value)
		if err != nil {
			return Identity{}, err
		}
		names = append(names, found...)
	}
	switch len(names) {
	case 0:
		return Identity{}, ErrNoName
	case 1:
		return ParseName(names[0])
	default:
		return Identity{}, &NameError{Field: "count", Value: fmt.Sprint(len(names))}
	}
}

// otherNames returns the IA5String values of every 2.5.5.5 otherName in a
// DER-encoded GeneralNames sequence.
func otherNames(der []byte) ([]string, error) {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) != 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return nil, &NameError{Field: "subjectAltName", Value: "not a DER sequence"}
	}
	var out []string
	for in := seq.Bytes; len(in) > 0; {
		var gn asn1.RawValue
		in, err = asn1.Unmarshal(in, &gn)
		if err != nil {
			return nil, &NameError{Field: "subjectAltName", Value: "bad GeneralName"}
		}
		// otherName is [0] IMPLICIT SEQUENCE { type-id OID, value [0] EXPLICIT ANY }.
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != 0 {
			continue
		}
		if !gn.IsCompound {
			return nil, &NameError{Field: "otherName", Value: "not constructed"}
		}
		var typeID asn1.ObjectIdentifier
		vrest, err := asn1.Unmarshal(gn.Bytes, &typeID)
		if err != nil {
			return nil, &NameError{Field: "otherName", Value: "bad type-id"}
		}
		if !typeID.Equal(OIDUZIName) {
			continue
		}
		var explicit asn1.RawValue
		if tail, err := asn1.Unmarshal(vrest, &explicit); err != nil || len(tail) != 0 ||
			explicit.Class != asn1.ClassContextSpecific || explicit.Tag != 0 || !explicit.IsCompound {
			return nil, &NameError{Field: "otherName", Value: "bad value wrapper"}
		}
		// DER allows only the primitive form of a string; a constructed
		// IA5String is BER, which a certificate must not carry. IA5 is
		// 7-bit ASCII.
		var str asn1.RawValue
		if tail, err := asn1.Unmarshal(explicit.Bytes, &str); err != nil || len(tail) != 0 ||
			str.Class != asn1.ClassUniversal || str.Tag != asn1.TagIA5String || str.IsCompound || !isASCII(str.Bytes) {
			return nil, &NameError{Field: "otherName", Value: "value is not a DER IA5String"}
		}
		out = append(out, string(str.Bytes))
	}
	return out, nil
}

// ParseName parses and checks a UZI name string field by field.
func ParseName(s string) (Identity, error) {
	if len(s) > MaxNameLength {
		return Identity{}, &NameError{Field: "length", Value: fmt.Sprint(len(s))}
	}
	f := strings.Split(s, "-")
	if len(f) != 7 {
		return Identity{}, &NameError{Field: "count", Value: fmt.Sprint(len(f))}
	}
	id := Identity{OIDCA: f[0], Version: f[1], UZI: f[2], CardType: CardType(f[3]), Subscriber: f[4], Role: f[5], AGB: f[6]}
	switch {
	case !isOID(id.OIDCA):
		return Identity{}, &NameError{Field: "oid-ca", Value: id.OIDCA}
	case id.Version != "1":
		return Identity{}, &NameError{Field: "version", Value: id.Version}
	case !isDigits(id.UZI, 9):
		return Identity{}, &NameError{Field: "uzi-number", Value: id.UZI}
	case !validCardType(id.CardType):
		return Identity{}, &NameError{Field: "card-type", Value: string(id.CardType)}
	case !isDigits(id.Subscriber, 8):
		return Identity{}, &NameError{Field: "subscriber", Value: id.Subscriber}
	case !isRole(id.Role):
		return Identity{}, &NameError{Field: "role", Value: id.Role}
	case !isDigits(id.AGB, 8):
		return Identity{}, &NameError{Field: "agb", Value: id.AGB}
	}
	return id, nil
}

// ValidUZINumber reports whether s has the form of a UZI number: 9 digits.
func ValidUZINumber(s string) bool { return isDigits(s, 9) }

// ValidRole reports whether s has the form of a role code: NN.NNN.
func ValidRole(s string) bool { return isRole(s) }

// ValidAGB reports whether s has the form of an AGB code: 8 digits.
func ValidAGB(s string) bool { return isDigits(s, 8) }

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func validCardType(t CardType) bool {
	switch t {
	case CardCareProvider, CardNamedEmployee, CardNameless, CardServer:
		return true
	}
	return false
}

func isDigits(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isRole accepts NN.NNN.
func isRole(s string) bool {
	return len(s) == 6 && s[2] == '.' && isDigits(s[:2], 2) && isDigits(s[3:], 3)
}

// isOID accepts a dotted OID of at least two arcs without leading zeros.
func isOID(s string) bool {
	arcs := strings.Split(s, ".")
	if len(arcs) < 2 {
		return false
	}
	for _, a := range arcs {
		if a == "" || len(a) > 9 || (len(a) > 1 && a[0] == '0') || !isDigits(a, len(a)) {
			return false
		}
	}
	return true
}

// MarshalSAN encodes a subjectAltName extension value holding one UZI name.
// Test PKIs use it to issue card certificates.
func MarshalSAN(name string) ([]byte, error) {
	str, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagIA5String, Bytes: []byte(name)})
	if err != nil {
		return nil, err
	}
	oid, err := asn1.Marshal(OIDUZIName)
	if err != nil {
		return nil, err
	}
	explicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: str})
	if err != nil {
		return nil, err
	}
	other, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(oid, explicit...)})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: other})
}

// SANExtension wraps MarshalSAN's value as a certificate extension.
func SANExtension(name string) (pkix.Extension, error) {
	v, err := MarshalSAN(name)
	if err != nil {
		return pkix.Extension{}, err
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: v}, nil
}
