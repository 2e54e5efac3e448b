package protocol

import (
	"crypto/elliptic"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// stmt encodes a statement field by field, as any encoder could, so tests
// can put values Marshal would never write.
type stmt struct {
	jurisdiction    string
	id              []byte
	issued, expires int64
	consent         byte
	onset           string
}

func (s stmt) encode() []byte {
	var b []byte
	str := func(v []byte) { b = binary.BigEndian.AppendUint32(b, uint32(len(v))); b = append(b, v...) }
	str([]byte(LabelStatement))
	str([]byte(s.jurisdiction))
	str(s.id)
	str(make([]byte, 10))
	b = binary.BigEndian.AppendUint64(b, uint64(s.issued))
	b = binary.BigEndian.AppendUint64(b, uint64(s.expires))
	b = append(b, s.consent)
	str([]byte(s.onset))
	str(make([]byte, 32))
	return b
}

func okStmt() stmt {
	return stmt{jurisdiction: "NL", id: make([]byte, 16), issued: 1_800_000_000, expires: 1_800_003_600, consent: 1}
}

// TestParseStatementBounds puts each field of a statement at and just past
// its bound.
func TestParseStatementBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		edit func(*stmt)
		want error // nil: decodes
	}{
		{"as made", func(*stmt) {}, nil},
		{"jurisdiction with a space", func(s *stmt) { s.jurisdiction = "N " }, nil},
		{"jurisdiction with a tilde", func(s *stmt) { s.jurisdiction = "N~" }, nil},
		{"jurisdiction with 0x1f", func(s *stmt) { s.jurisdiction = "N\x1f" }, errNotASCII},
		{"jurisdiction with DEL", func(s *stmt) { s.jurisdiction = "N\x7f" }, errNotASCII},
		{"jurisdiction of 8", func(s *stmt) { s.jurisdiction = "NLNLNLNL" }, nil},
		{"jurisdiction of 9", func(s *stmt) { s.jurisdiction = "NLNLNLNLN" }, errFieldTooLarge},
		{"jurisdiction of 2", func(s *stmt) { s.jurisdiction = "NL" }, nil},
		{"jurisdiction of 1", func(s *stmt) { s.jurisdiction = "N" }, errMalformed},
		{"id of 15 bytes", func(s *stmt) { s.id = make([]byte, 15) }, errMalformed},
		{"id of 17 bytes", func(s *stmt) { s.id = make([]byte, 17) }, errFieldTooLarge},
		{"consent 0", func(s *stmt) { s.consent = 0 }, nil},
		{"consent 2", func(s *stmt) { s.consent = 2 }, errMalformed},
		{"issued at the first second of 2000", func(s *stmt) { s.issued, s.expires = minTime, minTime+1 }, nil},
		{"issued a second before 2000", func(s *stmt) { s.issued, s.expires = minTime-1, minTime+1 }, errTimeRange},
		{"expires at the last second before 2100", func(s *stmt) { s.issued, s.expires = maxTime-2, maxTime-1 }, nil},
		{"expires in 2100", func(s *stmt) { s.issued, s.expires = maxTime-2, maxTime }, errTimeRange},
		// Symptom onset: at most 10 characters (longer is a field over its
		// maximum); shorter, or 10 that are not a date in range, is errOnset.
		{"onset of 10, the issue date", func(s *stmt) { s.onset = "2027-01-15" }, nil},
		{"onset of 11", func(s *stmt) { s.onset = "2027-01-150" }, errFieldTooLarge},
		{"onset of 9", func(s *stmt) { s.onset = "2027-01-1" }, errOnset},
		{"onset of 1", func(s *stmt) { s.onset = "2" }, errOnset},
		{"onset with a sign", func(s *stmt) { s.onset = "+027-01-15" }, errOnset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := okStmt()
			tt.edit(&s)
			_, err := ParseStatement(s.encode())
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDecodeLabels covers the label's length and form at their bounds.
func TestDecodeLabels(t *testing.T) {
	t.Parallel()
	label := func(l string, extra ...byte) []byte {
		return append(append(binary.BigEndian.AppendUint32(nil, uint32(len(l))), l...), extra...)
	}
	long := "vouch/" + strings.Repeat("a", maxLabel-len("vouch/")-len("/v1")) + "/v1"
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"only the length of another label", []byte{0, 0, 0, 20}, errTruncated},
		{"only our label's length", []byte{0, 0, 0, byte(len(LabelBundle))}, errTruncated},
		{"a label cut short", label(LabelBundle)[:12], errTruncated},
		{"a label of the longest length", label(long), errWrongType},
		{"a label one longer", label(long + "1"), errMalformed},
		{"a type that is a prefix of ours", label("vouch/bundl/v1"), errWrongType},
		{"a type ours is a prefix of", label("vouch/bundles/v1"), errWrongType},
		{"our label and nothing else", label(LabelBundle), errTruncated},
		{"a version that is not a number", label("vouch/bundle/vX"), errMalformed},
		{"a version with a trailing space", label("vouch/bundle/v1 "), errMalformed},
		{"a later version", label("vouch/bundle/v12"), errUnknownVersion},
		// The grammar (docs/protocol.md §2): type [a-z0-9-]+, version
		// [1-9][0-9]*; anything else is not a label of ours.
		{"no input", nil, errMalformed},
		{"one zero byte", []byte{0}, errTruncated},
		{"one byte that begins no label length", []byte{1}, errMalformed},
		{"a type in capitals", label("vouch/Bundle/v1"), errMalformed},
		{"a prefix in capitals", label("VOUCH/bundle/v1"), errMalformed},
		{"a version with a leading zero", label("vouch/bundle/v01"), errMalformed},
		{"version zero", label("vouch/bundle/v0"), errMalformed},
		{"a capital V", label("vouch/bundle/V1"), errMalformed},
		{"a type with an underscore", label("vouch/key_upload/v1"), errMalformed},
		{"a type with a hyphen and a digit", label("vouch/key-upload2/v1"), errWrongType},
		{"a type of one digit", label("vouch/7/v1"), errWrongType},
		{"a type with a slash", label("vouch/a/b/v1"), errMalformed},
		{"an empty type", label("vouch//v1"), errMalformed},
		{"a version beyond 64 bits", label("vouch/bundle/v18446744073709551616"), errUnknownVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseBundle(tt.in); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	// The same grammar for every message: each decoder knows its own type.
	for _, tt := range []struct {
		parse func([]byte) error
		label string
		want  error
	}{
		{func(b []byte) error { _, err := ParseStatement(b); return err }, LabelBundle, errWrongType},
		{func(b []byte) error { _, err := ParseStatement(b); return err }, "vouch/statement/v2", errUnknownVersion},
		{func(b []byte) error { _, err := ParseStatement(b); return err }, "vouch/Statement/v1", errMalformed},
		{func(b []byte) error { _, err := ParseAttestation(b); return err }, LabelStatement, errWrongType},
		{func(b []byte) error { _, err := ParseAttestation(b); return err }, "vouch/attestation/v3", errUnknownVersion},
		{func(b []byte) error { _, err := ParseAttestation(b); return err }, "vouch/attestation/v03", errMalformed},
	} {
		if err := tt.parse(label(tt.label, make([]byte, 100)...)); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.label, err, tt.want)
		}
	}
}

// TestBundleFields: an empty last field decodes, and the size bound is
// inclusive. (No bundle of 16 KiB can decode: its fields' maxima add up to
// about 8 KiB; the bound is there to refuse before reading.)
func TestBundleFields(t *testing.T) {
	t.Parallel()
	b := &Bundle{Statement: []byte("s"), StatementSignature: []byte("g"), Cert: []byte("c"), Attestation: []byte("a")}
	got, err := ParseBundle(b.Marshal())
	if err != nil || len(got.AttestationSignature) != 0 {
		t.Fatalf("a bundle with an empty last field: %v", err)
	}
	pad := func(n int) []byte {
		b := &Bundle{Statement: []byte("s"), StatementSignature: []byte("g"), Attestation: []byte("a")}
		b.Cert = make([]byte, MaxCertSize)
		raw := b.Marshal()
		// Fill the rest with an attestation signature of the right length
		// (over its field maximum: the size check must come first).
		b.AttestationSignature = make([]byte, n-len(raw))
		return b.Marshal()
	}
	if raw := pad(MaxBundleSize + 1); len(raw) != MaxBundleSize+1 {
		t.Fatalf("padding made %d bytes", len(raw))
	}
	v := &Verifier{}
	if _, err := v.Verify(pad(MaxBundleSize), nil, time.Time{}); Verdict(err) == ReasonTooLarge {
		t.Errorf("a bundle of exactly %d bytes was refused as too large", MaxBundleSize)
	}
	if _, err := v.Verify(pad(MaxBundleSize+1), nil, time.Time{}); Verdict(err) != ReasonTooLarge {
		t.Errorf("a bundle of %d bytes: %v, want too-large", MaxBundleSize+1, err)
	}
}

func TestLowS(t *testing.T) {
	t.Parallel()
	n := elliptic.P256().Params().N
	half := new(big.Int).Rsh(n, 1)
	sig := func(s *big.Int) []byte {
		b, err := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), s})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tt := range []struct {
		name string
		s    *big.Int
		want bool
	}{
		{"one", big.NewInt(1), true},
		{"n/2", half, true},
		{"n/2 + 1", new(big.Int).Add(half, big.NewInt(1)), false},
		{"zero", big.NewInt(0), false},
		{"negative", big.NewInt(-1), false},
	} {
		if got := lowS(elliptic.P256(), sig(tt.s)); got != tt.want {
			t.Errorf("s = %s: lowS %v, want %v", tt.name, got, tt.want)
		}
	}
	if lowS(elliptic.P256(), append(sig(big.NewInt(1)), 0)) {
		t.Error("trailing byte accepted")
	}
	hi, err := LowS(elliptic.P256(), sig(new(big.Int).Sub(n, big.NewInt(5))))
	if err != nil || !lowS(elliptic.P256(), hi) {
		t.Errorf("LowS did not make S low: %v", err)
	}
	if _, err := LowS(elliptic.P256(), []byte{1, 2}); err == nil {
		t.Error("LowS of garbage")
	}
}
