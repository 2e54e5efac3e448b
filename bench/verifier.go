package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/trust"
)

// interleaved runs each f rounds times, interleaved so that drift hits
// all alike, and returns each round's ns/op of each.
func interleaved(rounds int, fs ...func(b *testing.B)) ([][]float64, error) {
	res := make([][]float64, len(fs))
	for i := 0; i < rounds; i++ {
		for j, f := range fs {
			r := testing.Benchmark(f)
			if r.N == 0 {
				return nil, fmt.Errorf("benchmark %d failed", j)
			}
			res[j] = append(res[j], float64(r.T.Nanoseconds())/float64(r.N))
		}
	}
	return res, nil
}

// loadGenuine reads a case of the vectors: a bundle a card really signed.
func loadGenuine(vec *trust.Vectors, name string) (*genuine, error) {
	i := slices.IndexFunc(vec.Cases, func(c trust.Case) bool { return c.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("no %s vector", name)
	}
	c := vec.Cases[i]
	raw, err := os.ReadFile(c.Bundle)
	if err != nil {
		return nil, err
	}
	pk, err := hex.DecodeString(c.PhoneKeyHex)
	if err != nil {
		return nil, fmt.Errorf("%s: phone key: %w", name, err)
	}
	b, err := protocol.ParseBundle(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(b.Cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if _, ok := leaf.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("%s: the card's key is not RSA", name)
	}
	return &genuine{raw: raw, b: b, leaf: leaf, phone: ed25519.PublicKey(pk)}, nil
}

// The bare work a bundle cannot do without: one RSA PKCS#1 v1.5 and one
// ECDSA P-256 verification of its two signatures, digests given.
const reference = "raw RSA PKCS#1 v1.5 verify of the statement + ECDSA P-256 verify of the attestation"

// verifierStage is the stage "verifier": the bundle verifier against the
// bare signature checks, and every bundle an attacker can make.
func verifierStage(fs *flag.FlagSet) measure {
	vectors := fs.String("vectors", "testdata/bundle/vectors.json", "bundle test vectors (stage verifier)")
	rounds := fs.Int("rounds", 5, "interleaved rounds of the verifier's timings (stage verifier; its runs)")
	return func(ctx context.Context, b *bench) ([]Row, error) {
		return verifierRows(*vectors, max(*rounds, b.runs))
	}
}

func verifierRows(vectorsPath string, rounds int) ([]Row, error) {
	vec, tr, err := trust.LoadVectors(vectorsPath)
	if err != nil {
		return nil, err
	}
	valid, err := loadGenuine(vec, "valid-gp")
	if err != nil {
		return nil, err
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		return nil, err
	}
	if _, err := v.Verify(valid.raw, valid.phone, vec.Now); err != nil {
		return nil, fmt.Errorf("the valid vector does not verify: %w", err)
	}
	rsaPub := valid.leaf.PublicKey.(*rsa.PublicKey)
	stDigest := sha256.Sum256(valid.b.Statement)
	atDigest := sha256.Sum256(valid.b.Attestation)
	attKey := tr.AttestationKeys[0]
	if !ecdsa.VerifyASN1(attKey, atDigest[:], valid.b.AttestationSignature) {
		return nil, errors.New("the valid vector's attestation is not signed by the first attestation key")
	}
	attackers, err := attacks(tr, vec.Now, valid)
	if err != nil {
		return nil, err
	}

	verify := func(bb *testing.B) {
		for bb.Loop() {
			if _, err := v.Verify(valid.raw, valid.phone, vec.Now); err != nil {
				bb.Fatal(err)
			}
		}
	}
	// Cold: the card is not in the verifier's cache, so its certificate is
	// parsed and its CA's signature checked. Making the verifier (building
	// the configured CAs' paths, once per process) is not timed.
	verifyCold := func(bb *testing.B) {
		for i := 0; i < bb.N; i++ {
			bb.StopTimer()
			cold, err := protocol.NewVerifier(tr)
			if err != nil {
				bb.Fatal(err)
			}
			bb.StartTimer()
			if _, err := cold.Verify(valid.raw, valid.phone, vec.Now); err != nil {
				bb.Fatal(err)
			}
		}
	}
	rawBoth := func(bb *testing.B) {
		for bb.Loop() {
			if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, stDigest[:], valid.b.StatementSignature); err != nil {
				bb.Fatal(err)
			}
			if !ecdsa.VerifyASN1(attKey, atDigest[:], valid.b.AttestationSignature) {
				bb.Fatal("attestation")
			}
		}
	}
	// The attackers' bundles come after these three.
	const nVerify, nRef, nCold, nFirst = 0, 1, 2, 3
	fs := []func(*testing.B){verify, rawBoth, verifyCold}
	for _, a := range attackers {
		fs = append(fs, a.bench)
	}
	fmt.Fprintf(os.Stderr, "bench: timing %d kinds of verification, %d rounds\n", len(fs), rounds)
	ns, err := interleaved(rounds, fs...)
	if err != nil {
		return nil, err
	}
	// Each row's samples are the rounds': its ratio that of the same round.
	us := func(i, round int) float64 { return ns[i][round] / 1000 }
	row := func(r Row, i, ref int) Row {
		for round := range rounds {
			s := Sample{Value: us(i, round), ReferenceValue: us(ref, round)}
			s.Ratio = s.Value / s.ReferenceValue
			r.Samples = append(r.Samples, s)
		}
		return r
	}
	const validRef = "bundle verify of the valid bundle (card cached)"
	rows := []Row{
		row(Row{Name: "bundle verify (card cached)", Unit: "µs", Reference: reference, Target: target(1.2)}, nVerify, nRef),
		row(Row{Name: "bundle verify (cold: card not in the cache)", Unit: "µs", Reference: reference, Target: target(2.5)}, nCold, nRef),
	}
	worst := 0
	var each []Row
	for i, a := range attackers {
		r := row(Row{Name: "attacker's bundle: " + a.name, Unit: "µs", Reference: validRef, Detail: "refused " + string(a.reason)}, nFirst+i, nVerify)
		if len(each) > 0 && summarize(r).Value > summarize(each[worst]).Value {
			worst = i
		}
		each = append(each, r)
	}
	w := attackers[worst]
	rows = append(rows, row(Row{Name: "worst bundle an attacker can make", Unit: "µs", Reference: validRef, Target: target(2),
		Detail: w.name + ", refused " + string(w.reason)}, nFirst+worst, nVerify))
	rows = append(rows, each...)
	return rows, nil
}
