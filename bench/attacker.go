package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// genuine is a bundle a clinician's card really signed, as the vectors hold
// it, and what verifying it needs.
type genuine struct {
	raw   []byte
	b     *protocol.Bundle
	leaf  *x509.Certificate
	phone ed25519.PublicKey
}

// attack is a bundle an attacker can make and the way it is verified.
type attack struct {
	name   string
	reason protocol.Reason        // the verdict it must get
	probe  func() protocol.Reason // verifies it once as bench does, before bench is timed
	bench  func(bb *testing.B)
}

// attacks are the candidates for the worst bundle an attacker can make, each
// run against the kind of verifier a server has: one that has verified
// valid before, so valid's card is cached. An attacker controls every byte
// of a bundle but holds neither a CA's key, nor a card's, nor the back end's
// attestation key; certificates are public (the UZI register publishes
// them), and any patient holds a genuine bundle. Card keys are RSA-2048 only,
// so no genuine card is costlier than valid's.
func attacks(tr protocol.Trust, now time.Time, valid *genuine) ([]attack, error) {
	warm := func() (*protocol.Verifier, error) {
		v, err := protocol.NewVerifier(tr)
		if err != nil {
			return nil, err
		}
		if _, err := v.Verify(valid.raw, valid.phone, now); err != nil {
			return nil, fmt.Errorf("the valid vector does not verify: %w", err)
		}
		return v, nil
	}
	v, err := warm()
	if err != nil {
		return nil, err
	}
	ca, err := issuerOf(tr, valid.leaf)
	if err != nil {
		return nil, err
	}
	caKey, ok := ca.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("the card's issuing CA has no RSA key")
	}
	var out []attack
	// once adds a candidate verified on the warm verifier each op.
	once := func(name string, reason protocol.Reason, b *protocol.Bundle, phone ed25519.PublicKey) {
		raw := b.Marshal()
		out = append(out, attack{name: name, reason: reason,
			probe: func() protocol.Reason {
				_, err := v.Verify(raw, phone, now)
				return protocol.Verdict(err)
			},
			bench: func(bb *testing.B) {
				for bb.Loop() {
					if _, err := v.Verify(raw, phone, now); err == nil {
						bb.Fatal("accepted")
					}
				}
			}})
	}

	// (a) A certificate that names the real issuing CA but is signed by the
	// attacker's key, as large as a bundle can carry one: the statement
	// signature field holds 1024 bytes, 8192 bits. The key is multi-prime
	// only because two 4096-bit primes can take minutes to find; the
	// verifier cannot tell, and must refuse after one signature check with
	// the configured CA's key, never using the attacker's.
	fmt.Fprintln(os.Stderr, "bench: making an attacker's 8192-bit key and certificate (some seconds)")
	key8192, err := rsa.GenerateMultiPrimeKey(rand.Reader, 8, 8192)
	if err != nil {
		return nil, err
	}
	cert, err := forgeCert(valid.leaf, ca, key8192, key8192.Public(), big.NewInt(1))
	if err != nil {
		return nil, err
	}
	st, err := protocol.ParseStatement(valid.b.Statement)
	if err != nil {
		return nil, err
	}
	st.SignerCertHash = sha256.Sum256(cert)
	enc := st.Marshal()
	digest := sha256.Sum256(enc)
	sig, err := rsa.SignPKCS1v15(nil, key8192, crypto.SHA256, digest[:])
	if err != nil {
		return nil, err
	}
	a := *valid.b
	a.Statement, a.StatementSignature, a.Cert = enc, sig, cert
	once("certificate naming the issuing CA, signed by the attacker's 8192-bit key", protocol.ReasonCertSignature, &a, valid.phone)

	// (b) The genuine bundle with a forged attestation signature: well-formed
	// DER with a low S, so that the ECDSA verification runs to the end.
	b := *valid.b
	b.AttestationSignature = randomECDSASig(tr.AttestationKeys[0])
	once("genuine bundle, forged attestation signature", protocol.ReasonAttestationSignature, &b, valid.phone)

	// (c) The genuine bundle with a random statement signature below the
	// card's modulus, so that the RSA verification runs to the end.
	c := *valid.b
	c.StatementSignature = randomRSASig(valid.leaf.PublicKey.(*rsa.PublicKey))
	once("genuine bundle, random statement signature", protocol.ReasonSignature, &c, valid.phone)

	// (d) A new certificate every op, so that none is ever cached: the
	// uncached path, parse and one signature check under the CA's key. The
	// attacker cannot sign with the CA's key, so signs with its own, of the
	// CA's size and with a smaller modulus, so that every signature is below
	// the CA's modulus and checked in full; it is refused at that check,
	// before the statement that still names the genuine certificate.
	const pool = 1000
	fmt.Fprintf(os.Stderr, "bench: signing %d distinct attacker certificates\n", pool)
	key, err := keyBelow(caKey.N)
	if err != nil {
		return nil, err
	}
	fresh := make([][]byte, pool)
	for i := range fresh {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
		if err != nil {
			return nil, err
		}
		cert, err := forgeCert(valid.leaf, ca, key, valid.leaf.PublicKey, serial)
		if err != nil {
			return nil, err
		}
		d := *valid.b
		d.Cert = cert
		fresh[i] = d.Marshal()
	}
	out = append(out, attack{name: "a distinct certificate each op, signed by an attacker's key",
		reason: protocol.ReasonCertSignature,
		probe: func() protocol.Reason { // every one of them
			for _, raw := range fresh {
				if _, err := v.Verify(raw, valid.phone, now); protocol.Verdict(err) != protocol.ReasonCertSignature {
					return protocol.Verdict(err)
				}
			}
			return protocol.ReasonCertSignature
		},
		bench: func(bb *testing.B) {
			v, err := warm()
			if err != nil {
				bb.Fatal(err)
			}
			i := 0
			for bb.Loop() {
				if i == len(fresh) {
					// Never the same certificate twice on one verifier.
					bb.StopTimer()
					if v, err = warm(); err != nil {
						bb.Fatal(err)
					}
					i = 0
					bb.StartTimer()
				}
				if _, err := v.Verify(fresh[i], valid.phone, now); err == nil {
					bb.Fatal("accepted")
				}
				i++
			}
		}})

	// (e) Genuine card certificates that are not in the cache — an attacker
	// can fetch thousands from the register — each under a random statement
	// signature: parse, the CA's signature (valid), the card checks and the
	// card's signature. A verifier that has never seen the card stands for
	// one whose cache the attacker has flushed with other cards.
	uncached := func(name string, g *genuine) {
		e := *g.b
		e.StatementSignature = randomRSASig(g.leaf.PublicKey.(*rsa.PublicKey))
		raw := e.Marshal()
		out = append(out, attack{name: name, reason: protocol.ReasonSignature,
			probe: func() protocol.Reason {
				cold, err := protocol.NewVerifier(tr)
				if err != nil {
					return protocol.Verdict(err)
				}
				_, err = cold.Verify(raw, g.phone, now)
				return protocol.Verdict(err)
			},
			bench: func(bb *testing.B) {
				const batch = 256
				var vs []*protocol.Verifier
				for bb.Loop() {
					if len(vs) == 0 {
						bb.StopTimer()
						for range batch {
							cold, err := protocol.NewVerifier(tr)
							if err != nil {
								bb.Fatal(err)
							}
							vs = append(vs, cold)
						}
						bb.StartTimer()
					}
					if _, err := vs[0].Verify(raw, g.phone, now); err == nil {
						bb.Fatal("accepted")
					}
					vs = vs[1:]
				}
			}})
	}
	uncached("genuine certificate not in the cache, random statement signature", valid)

	// Every candidate is refused, for the reason its name implies, before it
	// is timed: a candidate that were accepted would measure nothing useful.
	for _, at := range out {
		if got := at.probe(); got != at.reason {
			return nil, fmt.Errorf("attacker's %q got %s, want %s", at.name, got, at.reason)
		}
	}
	return out, nil
}

// issuerOf returns the configured issuing CA whose key signed leaf.
func issuerOf(tr protocol.Trust, leaf *x509.Certificate) (*x509.Certificate, error) {
	for _, cas := range tr.IssuingCAs {
		for _, ca := range cas {
			if leaf.CheckSignatureFrom(ca) == nil {
				return ca, nil
			}
		}
	}
	return nil, errors.New("the valid card's issuing CA is not configured")
}

// forgeCert makes a certificate like leaf — every extension as the genuine
// card has it, so the UZI name too — with subjectKey and serial, that names
// ca as its issuer but is signed by signer.
func forgeCert(leaf, ca *x509.Certificate, signer *rsa.PrivateKey, subjectKey crypto.PublicKey, serial *big.Int) ([]byte, error) {
	tmpl := *leaf
	tmpl.SerialNumber = serial
	tmpl.ExtraExtensions = leaf.Extensions
	// x509 insists that the signer holds the parent's key; the attacker
	// only claims the parent's name.
	parent := *ca
	parent.PublicKey = signer.Public()
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &parent, subjectKey, signer)
	if err != nil {
		return nil, fmt.Errorf("forge certificate: %w", err)
	}
	if len(der) > protocol.MaxCertSize {
		return nil, fmt.Errorf("forged certificate of %d bytes exceeds %d", len(der), protocol.MaxCertSize)
	}
	return der, nil
}

// keyBelow makes an RSA key of n's size whose modulus is below n, so that
// any of its signatures is a number the verifier must exponentiate under n.
func keyBelow(n *big.Int) (*rsa.PrivateKey, error) {
	for {
		k, err := rsa.GenerateKey(rand.Reader, n.BitLen())
		if err != nil {
			return nil, err
		}
		if k.N.Cmp(n) < 0 {
			return k, nil
		}
	}
}

// randomRSASig returns a random signature-sized number below pub's modulus:
// it passes every cheap check and fails only at the end.
func randomRSASig(pub *rsa.PublicKey) []byte {
	sig := make([]byte, pub.Size())
	for {
		rand.Read(sig)
		if new(big.Int).SetBytes(sig).Cmp(pub.N) < 0 {
			return sig
		}
	}
}

// randomECDSASig returns a DER signature with random r and a random low s
// for pub's curve: it passes every cheap check and fails only at the end.
func randomECDSASig(pub *ecdsa.PublicKey) []byte {
	n := pub.Curve.Params().N
	r, _ := rand.Int(rand.Reader, new(big.Int).Sub(n, big.NewInt(1)))
	s, _ := rand.Int(rand.Reader, new(big.Int).Rsh(n, 1))
	der, _ := asn1.Marshal(struct{ R, S *big.Int }{r.Add(r, big.NewInt(1)), s.Add(s, big.NewInt(1))})
	return der
}
