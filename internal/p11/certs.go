//go:build cgo

package p11

import (
	"crypto/x509"
	"fmt"

	"github.com/miekg/pkcs11"
)

// PublicCertificate is a certificate object on a token, with the CKA_ID
// that links it to its private key.
type PublicCertificate struct {
	ID   []byte
	Cert *x509.Certificate
}

// maxCertificates bounds what one token may list: a card holds two or
// three, and a token that answers with thousands is not a card.
const maxCertificates = 16

// Certificates lists the certificates on token t without logging in:
// certificates are public objects, and a card agent must show whose card
// is in the reader before anyone types a PIN. Objects that do not parse as
// X.509 are left out.
func (m *Module) Certificates(t Token) ([]PublicCertificate, error) {
	ctx := m.lib.ctx
	h, err := ctx.OpenSession(t.Slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, classify("open session", err)
	}
	defer ctx.CloseSession(h)
	objs, err := findObjects(ctx, h, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
		pkcs11.NewAttribute(pkcs11.CKA_CERTIFICATE_TYPE, pkcs11.CKC_X_509),
	}, maxCertificates+1)
	if err != nil {
		return nil, classify("find certificates", err)
	}
	if len(objs) > maxCertificates {
		return nil, fmt.Errorf("p11: more than %d certificates on token %q", maxCertificates, t.Label)
	}
	var out []PublicCertificate
	for _, o := range objs {
		a, err := ctx.GetAttributeValue(h, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, nil), pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
		if err != nil {
			return nil, classify("read certificate", err)
		}
		var id, der []byte
		for _, x := range a {
			switch x.Type {
			case pkcs11.CKA_ID:
				id = x.Value
			case pkcs11.CKA_VALUE:
				der = x.Value
			}
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil || len(id) == 0 {
			continue // not a certificate a key can be found by
		}
		out = append(out, PublicCertificate{ID: id, Cert: cert})
	}
	return out, nil
}
