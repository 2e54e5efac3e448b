// Command bench measures Vouch's speed targets as ratios against a bare
// reference measured in the same run, so that a slow or busy machine moves
// both and the ratio stays comparable between runs. It prints a table and
// writes the rows to a JSON file (make bench: bench/results.json).
//
// Targets are ratios (our cost over the reference's; lower is better) or,
// for rows without a reference, values; a row "meets" its target when it is
// at or under it. A throughput target (at_least) is a floor on the value
// instead, the reference's ratio beside it only to be read. Rows whose
// target is null are there to be read, not met.
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
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/trust"
)

// Row is one line of bench/results.json.
type Row struct {
	Name           string   `json:"name"`
	Value          float64  `json:"value"`
	Unit           string   `json:"unit"`
	Reference      string   `json:"reference,omitempty"`
	ReferenceValue float64  `json:"reference_value,omitempty"`
	Ratio          float64  `json:"ratio,omitempty"`
	Target         *float64 `json:"target"`           // null: informational, nothing to meet
	Detail         string   `json:"detail,omitempty"` // e.g. which candidate was the worst
	// AtLeast: the target is a floor on Value (a throughput), whether or
	// not the row has a reference.
	AtLeast bool `json:"at_least,omitempty"`
}

// target makes a row's target.
func target(v float64) *float64 { return &v }

func main() {
	out := flag.String("out", "bench/results.json", "where to write the rows")
	rounds := flag.Int("rounds", 5, "measurements per row; the median counts")
	vectors := flag.String("vectors", "testdata/bundle/vectors.json", "bundle test vectors")
	vouch := flag.String("vouch", "bin/vouch", "the vouch binary (make build)")
	dbURL := flag.String("database", envOr("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"), "PostgreSQL server")
	registryN := flag.Int("registry", 100_000, "entries of the generated register for the sync rows (0: skip)")
	bigN := flag.Int("registry-big", 1_000_000, "entries of the register for the memory row (0: skip)")
	trustRows := flag.Bool("trust", true, "measure the bundle verifier rows (false: the register's rows only)")
	clinicians := flag.Int("clinicians", 50, "concurrent clinicians for the back office's rows (0: skip)")
	pipeline := flag.Bool("pipeline", true, "measure the public tier's rows: uploads, readers, export, origin (false: skip them)")
	uploads := flag.Int("uploads", 20_000, "uploads of the closed-loop upload row (each needs a bundle: about 1.5 ms on SoftHSM)")
	uploadConc := flag.Int("upload-concurrency", 64, "phones uploading at once in the closed loop")
	openRate := flag.Float64("open-rate", 1000, "uploads per second of the open-loop latency row")
	openSeconds := flag.Float64("open-seconds", 10, "seconds of the open-loop latency row (0: skip it)")
	storeN := flag.Int("store-uploads", 20_000, "uploads of 10 keys on the bus for the readers' row")
	exportKeys := flag.Int("export-keys", 1_400_000, "keys over 14 days of the export row")
	cdnKeys := flag.Int("cdn-keys", 40_000, "keys of the export file the origin rows serve (40,000: about 1 MB)")
	cdnSeconds := flag.Float64("cdn-seconds", 3, "seconds of each origin measurement")
	cdnConns := flag.Int("cdn-connections", 32, "keep-alive connections of the origin load")
	clusterUploads := flag.Int("cluster-uploads", 5_000, "uploads of the closed loop on the R3 cluster, and on one embedded server for its ratio (stage cluster)")
	only := flag.String("only", "", "the pipeline's stages to measure, comma-separated ("+strings.Join(pipelineStages, ", ")+"); empty: all but cluster")
	cardsDir := flag.String("cards", filepath.Join(envOr("VOUCH_STATE_DIR", ".vouch"), "cards"), "the test cards (make cards)")
	flag.Parse()
	var rows []Row
	if *trustRows {
		var err error
		if rows, err = run(*vectors, *rounds); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
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
				ReferenceValue: r.dumpSeconds, Ratio: r.syncSeconds / r.dumpSeconds, Target: target(1.25)},
			Row{Name: name + ": throughput", Value: float64(*registryN) / r.syncSeconds, Unit: "entries/s"},
			Row{Name: name + ": peak RSS", Value: r.peakMB, Unit: "MB"},
			Row{Name: "registry incremental sync, 100 changes", Value: r.incrSeconds, Unit: "s", Target: target(0.25)},
			Row{Name: fmt.Sprintf("registry reconciliation of the license bucket, %dk entries", *registryN/1000), Value: r.reconcileSeconds, Unit: "s",
				Reference: "full sync of the same register (registry-sync -once -full)", ReferenceValue: r.syncSeconds,
				Ratio: r.reconcileSeconds / r.syncSeconds, Target: target(1.5)})
	}
	if *bigN > 0 {
		r, err := registryBench{vouch: *vouch, dbURL: *dbURL, n: *bigN, rounds: 2}.run(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: registry:", err)
			os.Exit(1)
		}
		rows = append(rows, Row{Name: fmt.Sprintf("registry full sync, %dk entries: peak RSS", *bigN/1000), Value: r.peakMB, Unit: "MB", Target: target(150)},
			Row{Name: fmt.Sprintf("registry full sync, %dk entries", *bigN/1000), Value: r.syncSeconds, Unit: "s", Reference: "paged ldapsearch dump of the same entries, same slapd",
				ReferenceValue: r.dumpSeconds, Ratio: r.syncSeconds / r.dumpSeconds, Target: target(1.25)})
	}
	if *clinicians > 0 {
		r, err := backofficeBench{dbURL: *dbURL, cardsDir: *cardsDir, clinicians: *clinicians, perEach: 4}.run(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: back office:", err)
			os.Exit(1)
		}
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		c := fmt.Sprintf("%d clinicians at once, a request each every 0-2 s", *clinicians)
		rows = append(rows,
			Row{Name: "back-office sign-in, server side, " + c + ": p50", Value: ms(r.signinP50), Unit: "ms"},
			Row{Name: "back-office sign-in, server side, " + c + ": p99", Value: ms(r.signinP99), Unit: "ms", Target: target(20)},
			Row{Name: "vouch, server side, " + c + ": p50", Value: ms(r.vouchP50), Unit: "ms"},
			Row{Name: "vouch, server side, " + c + ": p99", Value: ms(r.vouchP99), Unit: "ms", Target: target(20)},
			Row{Name: fmt.Sprintf("vouches per second, %d clinicians without a pause", *clinicians), Value: r.vouchesPerSecond, Unit: "vouches/s"},
			Row{Name: "vouch, server side, one at a time", Value: ms(r.vouchSerial), Unit: "ms",
				Reference: "statement verify + attestation sign on the HSM (SoftHSM), bare", ReferenceValue: ms(r.bare),
				Ratio: float64(r.vouchSerial) / float64(r.bare), Target: target(3)})
	}
	if *pipeline {
		pb := pipelineBench{vouch: *vouch, dbURL: *dbURL, cardsDir: *cardsDir, rounds: *rounds, uploads: *uploads, concurrency: *uploadConc,
			openRate: *openRate, openSeconds: *openSeconds, storeN: *storeN, exportKeys: *exportKeys, cdnKeys: *cdnKeys,
			cdnSeconds: *cdnSeconds, cdnConns: *cdnConns, clusterUploads: *clusterUploads, only: map[string]bool{}}
		for _, st := range strings.Split(*only, ",") {
			if st = strings.TrimSpace(st); st == "" {
				continue
			}
			if !slices.Contains(pipelineStages, st) {
				fmt.Fprintf(os.Stderr, "bench: -only: no stage %q (%s)\n", st, strings.Join(pipelineStages, ", "))
				os.Exit(2)
			}
			pb.only[st] = true
		}
		r, err := pb.run(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: pipeline:", err)
			os.Exit(1)
		}
		rows = append(rows, pb.rows(r)...)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVALUE\tREFERENCE\tREF VALUE\tRATIO\tTARGET\tMEETS")
	for _, r := range rows {
		got := r.Value
		ref, refValue, ratio := "-", "-", "-"
		if r.Reference != "" {
			got = r.Ratio
			ref, refValue, ratio = r.Reference, fmt.Sprintf("%.2f", r.ReferenceValue), fmt.Sprintf("%.2f", r.Ratio)
		}
		tgt, meets := "-", "-" // informational: no target
		if r.Target != nil {
			tgt, meets = fmt.Sprintf("%.2f", *r.Target), fmt.Sprint(got <= *r.Target)
			if r.AtLeast {
				tgt, meets = fmt.Sprintf("≥ %.2f", *r.Target), fmt.Sprint(r.Value >= *r.Target)
			}
		}
		name := r.Name
		if r.Detail != "" {
			name += " [" + r.Detail + "]"
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%s\t%s\t%s\t%s\t%s\n", name, r.Value, r.Unit, ref, refValue, ratio, tgt, meets)
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

// median runs each f rounds times, interleaved so that drift hits all
// alike, and returns the median ns/op of each.
func median(rounds int, fs ...func(b *testing.B)) ([]float64, error) {
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
	out := make([]float64, len(fs))
	for j := range res {
		out[j] = mid(res[j])
	}
	return out, nil
}

func mid(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
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

func run(vectorsPath string, rounds int) ([]Row, error) {
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
	ns, err := median(rounds, fs...)
	if err != nil {
		return nil, err
	}
	us := func(i int) float64 { return ns[i] / 1000 }
	const validRef = "bundle verify of the valid bundle (card cached)"
	rows := []Row{
		{Name: "bundle verify (card cached)", Value: us(nVerify), Unit: "µs", Reference: reference,
			ReferenceValue: us(nRef), Ratio: us(nVerify) / us(nRef), Target: target(1.2)},
		{Name: "bundle verify (cold: card not in the cache)", Value: us(nCold), Unit: "µs", Reference: reference,
			ReferenceValue: us(nRef), Ratio: us(nCold) / us(nRef), Target: target(2.5)},
	}
	worst := 0
	var each []Row
	for i, a := range attackers {
		t := us(nFirst + i)
		if t > us(nFirst+worst) {
			worst = i
		}
		each = append(each, Row{Name: "attacker's bundle: " + a.name, Value: t, Unit: "µs", Reference: validRef,
			ReferenceValue: us(nVerify), Ratio: t / us(nVerify), Detail: "refused " + string(a.reason)})
	}
	w, wt := attackers[worst], us(nFirst+worst)
	rows = append(rows, Row{Name: "worst bundle an attacker can make", Value: wt, Unit: "µs", Reference: validRef,
		ReferenceValue: us(nVerify), Ratio: wt / us(nVerify), Target: target(2), Detail: w.name + ", refused " + string(w.reason)})
	rows = append(rows, each...)
	return rows, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
