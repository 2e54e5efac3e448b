// Command bench measures Vouch's speed targets as ratios against a bare
// reference measured in the same run, so that a slow or busy machine moves
// both and the ratio stays comparable between runs. It prints a table and
// writes the rows to a JSON file (make bench: bench/results.json).
//
// Targets are ratios (our cost over the reference's; lower is better) or,
// for rows without a reference, values; a row "meets" its target when it is
// at or under it.
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
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"text/tabwriter"

	"vouch/internal/protocol"
	"vouch/internal/trust"
)

// Row is one line of bench/results.json.
type Row struct {
	Name           string  `json:"name"`
	Value          float64 `json:"value"`
	Unit           string  `json:"unit"`
	Reference      string  `json:"reference,omitempty"`
	ReferenceValue float64 `json:"reference_value,omitempty"`
	Ratio          float64 `json:"ratio,omitempty"`
	Target         float64 `json:"target"`
}

func main() {
	out := flag.String("out", "bench/results.json", "where to write the rows")
	rounds := flag.Int("rounds", 5, "measurements per row; the median counts")
	vectors := flag.String("vectors", "testdata/bundle/vectors.json", "bundle test vectors")
	vouch := flag.String("vouch", "bin/vouch", "the vouch binary (make build)")
	dbURL := flag.String("database", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL server")
	registryN := flag.Int("registry", 100_000, "entries of the generated register for the sync rows (0: skip)")
	bigN := flag.Int("registry-big", 1_000_000, "entries of the register for the memory row (0: skip)")
	flag.Parse()
	rows, err := run(*vectors, *rounds)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	if *registryN > 0 {
		r, err := registryBench{vouch: *vouch, dbURL: *dbURL, n: *registryN, rounds: 5, changes: 100}.run(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: registry:", err)
			os.Exit(1)
		}
		name := fmt.Sprintf("registry full sync, %dk entries", *registryN/1000)
		rows = append(rows,
			Row{Name: name, Value: r.syncSeconds, Unit: "s", Reference: "paged ldapsearch dump of the same entries, same slapd",
				ReferenceValue: r.dumpSeconds, Ratio: r.syncSeconds / r.dumpSeconds, Target: 1.5},
			Row{Name: name + ": throughput", Value: float64(*registryN) / r.syncSeconds, Unit: "entries/s"},
			Row{Name: name + ": peak RSS", Value: r.peakMB, Unit: "MB"},
			Row{Name: "registry incremental sync, 100 changes", Value: r.incrSeconds, Unit: "s", Target: 1})
	}
	if *bigN > 0 {
		r, err := registryBench{vouch: *vouch, dbURL: *dbURL, n: *bigN, rounds: 2}.run(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: registry:", err)
			os.Exit(1)
		}
		rows = append(rows, Row{Name: fmt.Sprintf("registry full sync, %dk entries: peak RSS", *bigN/1000), Value: r.peakMB, Unit: "MB", Target: 200},
			Row{Name: fmt.Sprintf("registry full sync, %dk entries", *bigN/1000), Value: r.syncSeconds, Unit: "s", Reference: "paged ldapsearch dump of the same entries, same slapd",
				ReferenceValue: r.dumpSeconds, Ratio: r.syncSeconds / r.dumpSeconds, Target: 1.5})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVALUE\tREFERENCE\tREF VALUE\tRATIO\tTARGET\tMEETS")
	for _, r := range rows {
		got := r.Value
		if r.Reference != "" {
			got = r.Ratio
		}
		meets := "-" // informational: no target
		if r.Target > 0 {
			meets = fmt.Sprint(got <= r.Target)
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%s\t%.2f\t%.2f\t%.2f\t%s\n", r.Name, r.Value, r.Unit, r.Reference, r.ReferenceValue, r.Ratio, r.Target, meets)
	}
	tw.Flush()
	b, _ := json.MarshalIndent(rows, "", "  ")
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// median runs f rounds times and returns the median ns/op.
func median(rounds int, fs ...func(b *testing.B)) [][]float64 {
	res := make([][]float64, len(fs))
	for i := 0; i < rounds; i++ {
		for j, f := range fs { // interleaved, so drift hits all alike
			r := testing.Benchmark(f)
			res[j] = append(res[j], float64(r.NsPerOp()))
		}
	}
	return res
}

func mid(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func run(vectorsPath string, rounds int) ([]Row, error) {
	vec, tr, err := trust.LoadVectors(vectorsPath)
	if err != nil {
		return nil, err
	}
	var c *trust.Case
	for i := range vec.Cases {
		if vec.Cases[i].Name == "valid-gp" {
			c = &vec.Cases[i]
		}
	}
	if c == nil {
		return nil, errors.New("no valid-gp vector")
	}
	raw, err := os.ReadFile(c.Bundle)
	if err != nil {
		return nil, err
	}
	pk, err := hex.DecodeString(c.PhoneKeyHex)
	if err != nil {
		return nil, err
	}
	phone := ed25519.PublicKey(pk)
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		return nil, err
	}
	if _, err := v.Verify(raw, phone, vec.Now); err != nil {
		return nil, fmt.Errorf("the valid vector does not verify: %w", err)
	}
	b, err := protocol.ParseBundle(raw)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(b.Chain[0])
	if err != nil {
		return nil, err
	}
	rsaPub := leaf.PublicKey.(*rsa.PublicKey)
	stDigest := sha256.Sum256(b.Statement)
	atDigest := sha256.Sum256(b.Attestation)
	attKey := tr.AttestationKeys[0]

	verify := func(bb *testing.B) {
		for bb.Loop() {
			if _, err := v.Verify(raw, phone, vec.Now); err != nil {
				bb.Fatal(err)
			}
		}
	}
	verifyCold := func(bb *testing.B) {
		for bb.Loop() {
			cold, _ := protocol.NewVerifier(tr)
			if _, err := cold.Verify(raw, phone, vec.Now); err != nil {
				bb.Fatal(err)
			}
		}
	}
	rawRSA := func(bb *testing.B) {
		for bb.Loop() {
			if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, stDigest[:], b.StatementSignature); err != nil {
				bb.Fatal(err)
			}
		}
	}
	rawBoth := func(bb *testing.B) {
		for bb.Loop() {
			if err := rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, stDigest[:], b.StatementSignature); err != nil {
				bb.Fatal(err)
			}
			if !ecdsa.VerifyASN1(attKey, atDigest[:], b.AttestationSignature) {
				bb.Fatal("attestation")
			}
		}
	}
	m := median(rounds, verify, rawRSA, rawBoth, verifyCold)
	us := func(i int) float64 { return mid(m[i]) / 1000 }
	return []Row{
		{Name: "bundle verify (chain cached)", Value: us(0), Unit: "µs", Reference: "raw RSA-2048 verify of the statement signature",
			ReferenceValue: us(1), Ratio: us(0) / us(1), Target: 1.5},
		{Name: "bundle verify (chain cached)", Value: us(0), Unit: "µs", Reference: "raw RSA-2048 + ECDSA P-256 verify of its two signatures",
			ReferenceValue: us(2), Ratio: us(0) / us(2), Target: 1.5},
		{Name: "bundle verify (cold verifier, chain built)", Value: us(3), Unit: "µs", Reference: "raw RSA-2048 + ECDSA P-256 verify of its two signatures",
			ReferenceValue: us(2), Ratio: us(3) / us(2), Target: 5},
	}, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
