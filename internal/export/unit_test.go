package export

// The fast layer: export's pure logic (the GAEN encoding, Open's refusals,
// the configuration, the index, file naming and the free-space check) with
// in-memory P-256 keys instead of SoftHSM and no database. A mutation run
// (`gremlins unleash --tags mutation ./internal/export`) leaves out the
// tests of the real parts (`//go:build !mutation`) and runs only these; the
// real-parts tests stay the judge of the whole.

import (
	"archive/zip"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/lease"
)

func memSigner(t testing.TB, version, id string) (Signer, *ecdsa.PrivateKey) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return Signer{Signer: priv, Version: version, ID: id}, priv
}

func key(b byte, start, period, risk, report int32) Key {
	var k Key
	for i := range k.Data {
		k.Data[i] = b
	}
	k.RollingStart, k.RollingPeriod, k.TransmissionRisk, k.ReportType = start, period, risk, report
	return k
}

func fixed64(v uint64) string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return string(b[:])
}

// TestEncodingGolden pins export.bin and export.sig byte for byte against
// an encoding written out by hand from export.proto: a phone parses these
// bytes, so a changed field number, wire type or value is a broken export.
func TestEncodingGolden(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	end := start.Add(2 * time.Hour)
	h := batchHeader{Start: start, End: end, Region: "NL", BatchNum: 1, BatchSize: 2}
	signers := []Signer{{Version: "v1", ID: "204"}, {Version: "v2", ID: "204_b"}}
	info := func(v, id string) string {
		return "\x1a" + string(rune(len(v))) + v + "\x22" + string(rune(len(id))) + id + "\x2a\x131.2.840.10045.4.3.2"
	}
	i1, i2 := info("v1", "204"), info("v2", "204_b")
	want := Header +
		"\x09" + fixed64(uint64(start.Unix())) + "\x11" + fixed64(uint64(end.Unix())) +
		"\x1a\x02NL\x20\x01\x28\x02" +
		"\x32" + string(rune(len(i1))) + i1 + "\x32" + string(rune(len(i2))) + i2
	if got := string(appendHeader(nil, h, signers)); got != want {
		t.Errorf("header\n got %q\nwant %q", got, want)
	}

	// A key with every field, one without onset, one with a negative onset
	// (zigzag) and a rolling start needing four varint bytes.
	k := key(0xab, 2900000, 144, 8, ReportRevoked)
	k.DaysSinceOnset, k.HasOnset = -14, true
	data := strings.Repeat("\xab", 16)
	// 2900000 = 0xb1_0020 -> varint a0 80 b1 01
	wantKey := "\x3a\x20\x0a\x10" + data + "\x10\x08\x18\xa0\x80\xb1\x01\x20\x90\x01\x28\x05\x30\x1b"
	if got := string(appendKey(nil, nil, fKeys, k)); got != wantKey {
		t.Errorf("key\n got %q\nwant %q", got, wantKey)
	}
	k.DaysSinceOnset = 3
	if got := string(appendKey(nil, nil, fRevised, k)); got != "\x42\x20\x0a\x10"+data+"\x10\x08\x18\xa0\x80\xb1\x01\x20\x90\x01\x28\x05\x30\x06" {
		t.Errorf("revised key with onset 3: %q", got)
	}
	k.HasOnset = false
	if got := string(appendKey(nil, nil, fKeys, k)); got != "\x3a\x1e\x0a\x10"+data+"\x10\x08\x18\xa0\x80\xb1\x01\x20\x90\x01\x28\x05" {
		t.Errorf("key without onset: %q", got)
	}

	sigs := [][]byte{[]byte("sig-one"), []byte("sig-two")}
	tek := func(info, sig string) string {
		m := "\x0a" + string(rune(len(info))) + info + "\x10\x01\x18\x02\x22" + string(rune(len(sig))) + sig
		return "\x0a" + string(rune(len(m))) + m
	}
	if got, want := string(appendSigList(nil, h, signers, sigs)), tek(i1, "sig-one")+tek(i2, "sig-two"); got != want {
		t.Errorf("signature list\n got %q\nwant %q", got, want)
	}
}

func writeZip(t testing.TB, f *File, signers []Signer) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := WriteFile(&b, f, signers); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func entries(t testing.TB, z []byte) (bin, sig []byte, files []*zip.File) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	read := func(f *zip.File) []byte {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return read(zr.File[0]), read(zr.File[1]), zr.File
}

// TestWriteSortsSignsAndRoundTrips: what the aggregator writes, a phone
// reads back exactly, keys sorted by bytes, each signer's signature over
// export.bin's SHA-256 verifying under its public key.
func TestWriteSortsSignsAndRoundTrips(t *testing.T) {
	t.Parallel()
	s1, p1 := memSigner(t, "v1", "204")
	s2, p2 := memSigner(t, "v2", "204")
	onset := key(0x05, 100, 144, 0, ReportConfirmedTest)
	onset.DaysSinceOnset, onset.HasOnset = 14, true
	in := &File{
		Start: time.Unix(1_700_000_000, 0).UTC(), End: time.Unix(1_700_007_200, 0).UTC(), Region: "NL", BatchNum: 1, BatchSize: 1,
		Keys:    []Key{key(0x09, 200, 1, 8, ReportSelfReport), onset, key(0x07, 0, 144, 3, ReportConfirmedTest)},
		Revised: []Key{key(0x30, 5, 10, 1, ReportRevoked), key(0x20, 6, 10, 1, ReportRecursive)},
	}
	z := writeZip(t, in, []Signer{s1, s2})
	bin, sig, files := entries(t, z)
	if len(files) != 2 || files[0].Name != BinName || files[1].Name != SigName {
		t.Fatalf("zip entries %v", files)
	}
	for _, f := range files {
		if f.Method != zip.Deflate || !f.Modified.Equal(zipTime) {
			t.Errorf("%s: method %d, modified %s", f.Name, f.Method, f.Modified)
		}
	}
	sigs, err := parseSigList(sig)
	if err != nil || len(sigs) != 2 {
		t.Fatalf("signatures %v, %v", sigs, err)
	}
	d := sha256.Sum256(bin)
	for i, p := range []*ecdsa.PrivateKey{p1, p2} {
		if !ecdsa.VerifyASN1(&p.PublicKey, d[:], sigs[i].signature) || sigs[i].batchNum != 1 || sigs[i].batchSize != 1 {
			t.Errorf("signature %d does not verify under signer %d's key", i, i)
		}
	}
	got, err := Open(z, []*ecdsa.PublicKey{&p2.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []Key{in.Keys[1], in.Keys[2], in.Keys[0]}
	wantRevised := []Key{in.Revised[1], in.Revised[0]}
	if !got.Start.Equal(in.Start) || !got.End.Equal(in.End) || got.Region != "NL" || got.BatchNum != 1 || got.BatchSize != 1 ||
		fmt.Sprint(got.Keys) != fmt.Sprint(wantKeys) || fmt.Sprint(got.Revised) != fmt.Sprint(wantRevised) {
		t.Errorf("round trip:\n got %+v\nwant keys %+v revised %+v", got, wantKeys, wantRevised)
	}
	// The caller's slices are not reordered.
	if in.Keys[0].Data[0] != 0x09 || in.Revised[0].Data[0] != 0x30 {
		t.Error("WriteFile sorted the caller's keys in place")
	}
	// Write is WriteFile of keys only.
	var b bytes.Buffer
	if err := Write(&b, in.Start, in.End, "BE", 1, 1, in.Keys, []Signer{s1}); err != nil {
		t.Fatal(err)
	}
	if f, err := Open(b.Bytes(), []*ecdsa.PublicKey{&p1.PublicKey}); err != nil || f.Region != "BE" || len(f.Keys) != 3 || len(f.Revised) != 0 {
		t.Errorf("Write: %+v, %v", f, err)
	}
}

// TestWriteManyKeysStreams: more keys than one flush (64 KiB) come out
// whole and in order.
func TestWriteManyKeysStreams(t *testing.T) {
	t.Parallel()
	s, p := memSigner(t, "v1", "204")
	keys := make([]Key, 5000)
	for i := range keys {
		keys[i] = key(0, int32(i), 144, 0, ReportConfirmedTest)
		binary.BigEndian.PutUint32(keys[i].Data[:], uint32(len(keys)-i))
	}
	z := writeZip(t, &File{Start: time.Unix(0, 0), End: time.Unix(1, 0), Region: "NL", BatchNum: 1, BatchSize: 1, Keys: keys}, []Signer{s})
	f, err := Open(z, []*ecdsa.PublicKey{&p.PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Keys) != len(keys) || f.Keys[0].RollingStart != int32(len(keys)-1) || f.Keys[len(keys)-1].RollingStart != 0 {
		t.Errorf("%d keys, first start %d", len(f.Keys), f.Keys[0].RollingStart)
	}
}

type failingSigner struct{ crypto.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("token removed")
}

type failingWriter struct{ after int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after -= len(p); w.after < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriteFileFails(t *testing.T) {
	t.Parallel()
	s, _ := memSigner(t, "v1", "204")
	f := &File{Region: "NL", BatchNum: 1, BatchSize: 1, Keys: []Key{key(1, 1, 1, 1, 1)}}
	if err := WriteFile(io.Discard, f, nil); err == nil {
		t.Error("no signer: accepted")
	}
	if err := WriteFile(io.Discard, f, []Signer{{Signer: failingSigner{s.Signer}, Version: "v1", ID: "204"}}); err == nil || !strings.Contains(err.Error(), "204/v1") {
		t.Errorf("failing signer: %v", err)
	}
	many := make([]Key, 3000)
	for i := range many {
		many[i] = key(0, 1, 1, 1, 1)
		binary.BigEndian.PutUint32(many[i].Data[:], uint32(i))
	}
	for _, n := range []int{0, 100, 1000, 5000} {
		if err := WriteFile(&failingWriter{after: n}, &File{Region: "NL", BatchNum: 1, BatchSize: 1, Keys: many, Revised: many}, []Signer{s}); err == nil {
			t.Errorf("writer failing after %d bytes: no error", n)
		}
	}
}

// pb builds protobuf messages for the refusal tests.
type pb []byte

func (m pb) fixed(n protowire.Number, v uint64) pb {
	return protowire.AppendFixed64(protowire.AppendTag(m, n, protowire.Fixed64Type), v)
}
func (m pb) varint(n protowire.Number, v uint64) pb {
	return protowire.AppendVarint(protowire.AppendTag(m, n, protowire.VarintType), v)
}
func (m pb) bytes(n protowire.Number, b []byte) pb {
	return protowire.AppendBytes(protowire.AppendTag(m, n, protowire.BytesType), b)
}
func (m pb) fixed32(n protowire.Number, v uint32) pb {
	return protowire.AppendFixed32(protowire.AppendTag(m, n, protowire.Fixed32Type), v)
}

var data16 = bytes.Repeat([]byte{7}, 16)

func keyMsg() pb { return pb{}.bytes(kData, data16).varint(kStart, 100) }

func headerMsg() pb {
	return pb(Header).fixed(fStart, 1000).fixed(fEnd, 2000).bytes(fRegion, []byte("NL")).varint(fBatchNum, 1).varint(fBatchSize, 1)
}

func binWithKey(k pb) []byte { return headerMsg().bytes(fKeys, k) }

func TestParseBinAccepts(t *testing.T) {
	t.Parallel()
	f, err := parseBin(binWithKey(keyMsg()))
	if err != nil {
		t.Fatal(err)
	}
	k := f.Keys[0]
	// GAEN's defaults for absent fields: a day-long period, no onset.
	if k.RollingPeriod != 144 || k.RollingStart != 100 || k.HasOnset || k.TransmissionRisk != 0 || k.ReportType != 0 {
		t.Errorf("defaults: %+v", k)
	}
	if !f.Start.Equal(time.Unix(1000, 0)) || !f.End.Equal(time.Unix(2000, 0)) || f.Start.Location() != time.UTC || f.Region != "NL" {
		t.Errorf("header: %+v", f)
	}
	for name, bin := range map[string][]byte{
		"no keys":                 headerMsg(),
		"start = end":             pb(Header).fixed(fStart, 5).fixed(fEnd, 5).bytes(fRegion, nil).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"largest time":            pb(Header).fixed(fStart, math.MaxInt64/2).fixed(fEnd, math.MaxInt64/2).bytes(fRegion, nil).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"batch 3 of 3":            pb(Header).fixed(fStart, 5).fixed(fEnd, 5).bytes(fRegion, nil).varint(fBatchNum, 3).varint(fBatchSize, 3),
		"batch of MaxInt32":       pb(Header).fixed(fStart, 5).fixed(fEnd, 5).bytes(fRegion, nil).varint(fBatchNum, 1).varint(fBatchSize, math.MaxInt32),
		"region of 64":            pb(Header).fixed(fStart, 5).fixed(fEnd, 5).bytes(fRegion, bytes.Repeat([]byte("a"), 64)).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"signature infos":         headerMsg().bytes(fSigInfos, pb{}.bytes(1, []byte("app")).bytes(2, []byte("bundle")).bytes(3, []byte("v1")).bytes(4, []byte("204")).bytes(5, bytes.Repeat([]byte("x"), 256))),
		"two signature infos":     headerMsg().bytes(fSigInfos, pb{}.bytes(3, []byte("v1"))).bytes(fSigInfos, pb{}.bytes(3, []byte("v2"))),
		"period 1":                binWithKey(keyMsg().varint(kPeriod, 1)),
		"period 144":              binWithKey(keyMsg().varint(kPeriod, 144)),
		"start 0":                 binWithKey(pb{}.bytes(kData, data16).varint(kStart, 0)),
		"start MaxInt32":          binWithKey(pb{}.bytes(kData, data16).varint(kStart, math.MaxInt32)),
		"risk 0..8":               binWithKey(keyMsg().varint(kRisk, 8)),
		"report type 5":           binWithKey(keyMsg().varint(kReportType, 5)),
		"onset -14":               binWithKey(keyMsg().varint(kOnset, protowire.EncodeZigZag(-14))),
		"onset 14":                binWithKey(keyMsg().varint(kOnset, protowire.EncodeZigZag(14))),
		"keys increasing":         headerMsg().bytes(fKeys, pb{}.bytes(kData, bytes.Repeat([]byte{1}, 16)).varint(kStart, 1)).bytes(fKeys, pb{}.bytes(kData, bytes.Repeat([]byte{2}, 16)).varint(kStart, 1)),
		"revised after keys, ok":  headerMsg().bytes(fKeys, keyMsg()).bytes(fRevised, keyMsg()),
		"revised increasing":      headerMsg().bytes(fRevised, pb{}.bytes(kData, bytes.Repeat([]byte{1}, 16)).varint(kStart, 1)).bytes(fRevised, pb{}.bytes(kData, bytes.Repeat([]byte{2}, 16)).varint(kStart, 1)),
		"fields in any order":     pb(Header).varint(fBatchSize, 1).varint(fBatchNum, 1).bytes(fRegion, nil).fixed(fEnd, 9).fixed(fStart, 8),
		"key fields in any order": binWithKey(pb{}.varint(kStart, 1).varint(kReportType, 1).bytes(kData, data16)),
	} {
		if _, err := parseBin(bin); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

func TestParseBinValues(t *testing.T) {
	t.Parallel()
	f, err := parseBin(pb(Header).fixed(fStart, 8).fixed(fEnd, 9).bytes(fRegion, []byte("BE")).varint(fBatchNum, 2).varint(fBatchSize, 3).
		bytes(fKeys, pb{}.bytes(kData, data16).varint(kRisk, 4).varint(kStart, 77).varint(kPeriod, 12).varint(kReportType, 3).varint(kOnset, protowire.EncodeZigZag(-2))).
		bytes(fRevised, pb{}.bytes(kData, data16).varint(kStart, 78).varint(kReportType, 5)))
	if err != nil {
		t.Fatal(err)
	}
	want := Key{ReportType: 3, DaysSinceOnset: -2, HasOnset: true}
	want.Data = [16]byte(data16)
	want.TransmissionRisk, want.RollingStart, want.RollingPeriod = 4, 77, 12
	if f.Start.Unix() != 8 || f.End.Unix() != 9 || f.Region != "BE" || f.BatchNum != 2 || f.BatchSize != 3 || len(f.Keys) != 1 || f.Keys[0] != want {
		t.Errorf("got %+v, want key %+v", f, want)
	}
	if len(f.Revised) != 1 || f.Revised[0].RollingStart != 78 || f.Revised[0].ReportType != 5 || f.Revised[0].RollingPeriod != 144 {
		t.Errorf("revised %+v", f.Revised)
	}
}

func TestParseBinRefuses(t *testing.T) {
	t.Parallel()
	bad := func(k pb) []byte { return binWithKey(k) }
	hdr := func(num, size uint64, start, end uint64, region []byte) pb {
		return pb(Header).fixed(fStart, start).fixed(fEnd, end).bytes(fRegion, region).varint(fBatchNum, num).varint(fBatchSize, size)
	}
	for name, bin := range map[string][]byte{
		"empty":                  nil,
		"no header":              headerMsg()[1:],
		"other header":           append([]byte("EK Export v2    "), headerMsg()[len(Header):]...),
		"start missing":          pb(Header).fixed(fEnd, 9).bytes(fRegion, nil).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"end missing":            pb(Header).fixed(fStart, 9).bytes(fRegion, nil).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"region missing":         pb(Header).fixed(fStart, 9).fixed(fEnd, 9).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"batch num missing":      pb(Header).fixed(fStart, 9).fixed(fEnd, 9).bytes(fRegion, nil).varint(fBatchSize, 1),
		"batch size missing":     pb(Header).fixed(fStart, 9).fixed(fEnd, 9).bytes(fRegion, nil).varint(fBatchNum, 1),
		"start twice":            headerMsg().fixed(fStart, 1000),
		"region twice":           headerMsg().bytes(fRegion, nil),
		"batch num twice":        headerMsg().varint(fBatchNum, 1),
		"start as varint":        pb(Header).varint(fStart, 9).fixed(fEnd, 9).bytes(fRegion, nil).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"region as varint":       pb(Header).fixed(fStart, 9).fixed(fEnd, 9).varint(fRegion, 1).varint(fBatchNum, 1).varint(fBatchSize, 1),
		"batch size as fixed":    pb(Header).fixed(fStart, 9).fixed(fEnd, 9).bytes(fRegion, nil).varint(fBatchNum, 1).fixed(fBatchSize, 1),
		"start past range":       hdr(1, 1, math.MaxInt64/2+1, math.MaxInt64/2+1, nil),
		"end past range":         hdr(1, 1, 1, math.MaxInt64/2+1, nil),
		"ends before start":      hdr(1, 1, 10, 9, nil),
		"batch 0 of 1":           hdr(0, 1, 1, 1, nil),
		"batch 1 of 0":           hdr(1, 0, 1, 1, nil),
		"batch 2 of 1":           hdr(2, 1, 1, 1, nil),
		"batch size past int32":  hdr(1, math.MaxInt32+1, 1, 1, nil),
		"batch num negative":     hdr(uint64(math.MaxUint64), 1, 1, 1, nil),
		"region of 65":           hdr(1, 1, 1, 1, bytes.Repeat([]byte("a"), 65)),
		"unknown field 9":        headerMsg().varint(9, 1),
		"unknown field 0 bytes":  headerMsg().bytes(0, nil),
		"fixed32 field":          headerMsg().fixed32(fStart, 1),
		"group":                  append(headerMsg(), protowire.AppendTag(nil, 10, protowire.StartGroupType)...),
		"broken tag":             append(headerMsg(), 0x80),
		"truncated varint":       append(headerMsg(), 0x20, 0x80),
		"truncated bytes":        append(headerMsg(), 0x3a, 0x10, 1),
		"signature info varint":  headerMsg().varint(fSigInfos, 1),
		"signature info field 6": headerMsg().bytes(fSigInfos, pb{}.bytes(6, nil)),
		"signature info twice":   headerMsg().bytes(fSigInfos, pb{}.bytes(3, nil).bytes(3, nil)),
		"signature info varint3": headerMsg().bytes(fSigInfos, pb{}.varint(3, 1)),
		"signature info 257":     headerMsg().bytes(fSigInfos, pb{}.bytes(4, bytes.Repeat([]byte("x"), 257))),
		"signature info broken":  headerMsg().bytes(fSigInfos, []byte{0x1a, 0x05}),
		"key as varint":          headerMsg().varint(fKeys, 1),
		"revised as varint":      headerMsg().varint(fRevised, 1),
		"key not a message":      headerMsg().bytes(fKeys, []byte{0xff}),
		"key data missing":       bad(pb{}.varint(kStart, 1)),
		"key start missing":      bad(pb{}.bytes(kData, data16)),
		"key data 15 bytes":      bad(pb{}.bytes(kData, data16[1:]).varint(kStart, 1)),
		"key data 17 bytes":      bad(pb{}.bytes(kData, append([]byte{1}, data16...)).varint(kStart, 1)),
		"key data twice":         bad(keyMsg().bytes(kData, data16)),
		"key data as varint":     bad(pb{}.varint(kData, 1).varint(kStart, 1)),
		"key start twice":        bad(keyMsg().varint(kStart, 1)),
		"key start as fixed":     bad(pb{}.bytes(kData, data16).fixed(kStart, 1)),
		"key field 7":            bad(keyMsg().varint(7, 0)),
		"key field 0":            bad(keyMsg().bytes(0, nil)),
		"negative start":         bad(pb{}.bytes(kData, data16).varint(kStart, uint64(1<<64-1))),
		"start past int32":       bad(pb{}.bytes(kData, data16).varint(kStart, math.MaxInt32+1)),
		"start below int32":      bad(pb{}.bytes(kData, data16).varint(kStart, uint64(1<<64+math.MinInt32-1))),
		"period 0":               bad(keyMsg().varint(kPeriod, 0)),
		"period 145":             bad(keyMsg().varint(kPeriod, 145)),
		"risk -1":                bad(keyMsg().varint(kRisk, uint64(1<<64-1))),
		"risk 9":                 bad(keyMsg().varint(kRisk, 9)),
		"report type -1":         bad(keyMsg().varint(kReportType, uint64(1<<64-1))),
		"report type 6":          bad(keyMsg().varint(kReportType, 6)),
		"onset 15":               bad(keyMsg().varint(kOnset, protowire.EncodeZigZag(15))),
		"onset -15":              bad(keyMsg().varint(kOnset, protowire.EncodeZigZag(-15))),
		"onset twice":            bad(keyMsg().varint(kOnset, 0).varint(kOnset, 0)),
		"onset as bytes":         bad(keyMsg().bytes(kOnset, nil)),
		"key twice":              headerMsg().bytes(fKeys, keyMsg()).bytes(fKeys, keyMsg()),
		"keys decreasing":        headerMsg().bytes(fKeys, pb{}.bytes(kData, bytes.Repeat([]byte{2}, 16)).varint(kStart, 1)).bytes(fKeys, pb{}.bytes(kData, bytes.Repeat([]byte{1}, 16)).varint(kStart, 1)),
		"revised twice":          headerMsg().bytes(fRevised, keyMsg()).bytes(fRevised, keyMsg()),
		"revised key malformed":  headerMsg().bytes(fRevised, pb{}.varint(kStart, 1)),
	} {
		if _, err := parseBin(bin); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: parseBin = %v, want ErrFormat", name, err)
		}
	}
}

// TestParseBinKeyBound: a file may hold MaxKeysPerFile keys and revised
// keys together, not one more.
func TestParseBinKeyBound(t *testing.T) {
	t.Parallel()
	b := headerMsg()
	var buf []byte
	for i := range MaxKeysPerFile {
		k := key(0, 1, 144, 0, 1)
		binary.BigEndian.PutUint32(k.Data[:], uint32(i))
		field := fKeys
		if i >= MaxKeysPerFile-10 {
			field = fRevised
		}
		b = appendKey(b, buf, field, k)
	}
	f, err := parseBin(b)
	if err != nil || len(f.Keys) != MaxKeysPerFile-10 || len(f.Revised) != 10 {
		t.Fatalf("%d keys: %v", MaxKeysPerFile, err)
	}
	k := key(0xff, 1, 144, 0, 1)
	if _, err := parseBin(appendKey(b, buf, fRevised, k)); !errors.Is(err, ErrFormat) {
		t.Errorf("%d keys: %v", MaxKeysPerFile+1, err)
	}
}

func tekSig(info pb, num, size uint64, sig []byte) pb {
	m := pb{}
	if info != nil {
		m = m.bytes(sInfo, info)
	}
	return pb{}.bytes(fSignatures, m.varint(sBatchNum, num).varint(sBatchSize, size).bytes(sSignature, sig))
}

func TestParseSigList(t *testing.T) {
	t.Parallel()
	sig := bytes.Repeat([]byte{1}, 256)
	many := pb{}
	for range maxSignatures {
		many = append(many, tekSig(pb{}.bytes(3, []byte("v1")), 1, 1, sig)...)
	}
	got, err := parseSigList(many)
	if err != nil || len(got) != maxSignatures {
		t.Fatalf("%d signatures: %v", maxSignatures, err)
	}
	got, err = parseSigList(append(tekSig(nil, 2, 3, []byte("a")), tekSig(nil, 1, 1, []byte("b"))...))
	if err != nil || len(got) != 2 || got[0].batchNum != 2 || got[0].batchSize != 3 || string(got[0].signature) != "a" || string(got[1].signature) != "b" {
		t.Errorf("values: %+v, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"none":                nil,
		"17":                  append(many, tekSig(nil, 1, 1, sig)...),
		"signature 257":       tekSig(nil, 1, 1, append(sig, 1)),
		"other field":         pb{}.bytes(2, nil),
		"list field varint":   pb{}.varint(fSignatures, 1),
		"info twice":          pb{}.bytes(fSignatures, pb{}.bytes(sInfo, nil).bytes(sInfo, nil)),
		"info varint":         pb{}.bytes(fSignatures, pb{}.varint(sInfo, 1)),
		"info malformed":      tekSig(pb{}.varint(3, 1), 1, 1, sig),
		"batch num twice":     pb{}.bytes(fSignatures, pb{}.varint(sBatchNum, 1).varint(sBatchNum, 1)),
		"batch size bytes":    pb{}.bytes(fSignatures, pb{}.bytes(sBatchSize, nil)),
		"batch size > int32":  tekSig(nil, 1, math.MaxInt32+1, sig),
		"batch num > int32":   tekSig(nil, math.MaxInt32+1, 1, sig),
		"signature twice":     pb{}.bytes(fSignatures, pb{}.bytes(sSignature, nil).bytes(sSignature, nil)),
		"signature as varint": pb{}.bytes(fSignatures, pb{}.varint(sSignature, 1)),
		"field 5":             pb{}.bytes(fSignatures, pb{}.varint(5, 1)),
		"broken":              []byte{0x0a, 0x05, 1},
	} {
		if _, err := parseSigList(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: parseSigList = %v, want ErrFormat", name, err)
		}
	}
}

type entry struct {
	name   string
	data   []byte
	method uint16
}

func zipOf(t testing.TB, es ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, e := range es {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: e.method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func signedZip(t testing.TB, bin []byte, priv *ecdsa.PrivateKey, num, size uint64) []byte {
	t.Helper()
	d := sha256.Sum256(bin)
	sig, err := ecdsa.SignASN1(rand.Reader, priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	return zipOf(t, entry{BinName, bin, zip.Deflate}, entry{SigName, tekSig(nil, num, size, sig), zip.Store})
}

// TestOpenRefusesSignedGarbageFast: a file signed under a trusted key is
// still refused when its body or signature list is malformed, and a body
// nobody trusted signed is refused as such before it is parsed.
func TestOpenRefusesSignedGarbageFast(t *testing.T) {
	t.Parallel()
	_, priv := memSigner(t, "v1", "204")
	_, other := memSigner(t, "v1", "204")
	trusted := []*ecdsa.PublicKey{nil, &priv.PublicKey}
	good := binWithKey(keyMsg())
	if f, err := Open(signedZip(t, good, priv, 1, 1), trusted); err != nil || len(f.Keys) != 1 {
		t.Fatalf("good file: %v", err)
	}
	// Stored (not deflated) entries are read too.
	d := sha256.Sum256(good)
	sig, _ := ecdsa.SignASN1(rand.Reader, priv, d[:])
	if _, err := Open(zipOf(t, entry{BinName, good, zip.Store}, entry{SigName, tekSig(nil, 1, 1, sig), zip.Store}), trusted); err != nil {
		t.Errorf("stored entries: %v", err)
	}
	// One valid signature among bad ones is enough.
	twoSigs := append(tekSig(nil, 1, 1, []byte("junk")), tekSig(nil, 1, 1, sig)...)
	if _, err := Open(zipOf(t, entry{BinName, good, zip.Deflate}, entry{SigName, twoSigs, zip.Deflate}), trusted); err != nil {
		t.Errorf("second signature valid: %v", err)
	}
	// A valid signature for the wrong batch, and a valid one for the right.
	mixed := append(tekSig(nil, 1, 2, sig), tekSig(nil, 1, 1, sig)...)
	if _, err := Open(zipOf(t, entry{BinName, good, zip.Deflate}, entry{SigName, mixed, zip.Deflate}), trusted); err != nil {
		t.Errorf("second signature for the batch: %v", err)
	}

	for name, c := range map[string]struct {
		z    []byte
		want error
	}{
		"untrusted key":          {signedZip(t, good, other, 1, 1), ErrSignature},
		"untrusted garbage":      {signedZip(t, []byte("garbage"), other, 1, 1), ErrSignature},
		"signature other batch":  {signedZip(t, good, priv, 1, 2), ErrSignature},
		"signature other num":    {signedZip(t, good, priv, 2, 1), ErrSignature},
		"signed garbage":         {signedZip(t, []byte("garbage"), priv, 1, 1), ErrFormat},
		"signed bad key":         {signedZip(t, binWithKey(keyMsg().varint(kPeriod, 0)), priv, 1, 1), ErrFormat},
		"signed unknown field":   {signedZip(t, headerMsg().varint(20, 1), priv, 1, 1), ErrFormat},
		"signature list garbage": {zipOf(t, entry{BinName, good, zip.Deflate}, entry{SigName, []byte{0xff}, zip.Deflate}), ErrFormat},
		"entries swapped":        {zipOf(t, entry{SigName, nil, zip.Deflate}, entry{BinName, good, zip.Deflate}), ErrFormat},
		"third entry":            {zipOf(t, entry{BinName, good, zip.Deflate}, entry{SigName, nil, zip.Deflate}, entry{"x", nil, zip.Deflate}), ErrFormat},
		"one entry":              {zipOf(t, entry{BinName, good, zip.Deflate}), ErrFormat},
		"bin renamed":            {zipOf(t, entry{"export.bim", good, zip.Deflate}, entry{SigName, nil, zip.Deflate}), ErrFormat},
		"sig renamed":            {zipOf(t, entry{BinName, good, zip.Deflate}, entry{"export.sog", nil, zip.Deflate}), ErrFormat},
		"not a zip":              {[]byte("PK\x03\x04 nothing"), ErrFormat},
		"larger than a zip":      {make([]byte, MaxZipSize+1), ErrFormat},
	} {
		if _, err := Open(c.z, trusted); !errors.Is(err, c.want) {
			t.Errorf("%s: Open = %v, want %v", name, err, c.want)
		}
	}
	if _, err := Open(signedZip(t, good, priv, 1, 1), nil); !errors.Is(err, ErrSignature) {
		t.Errorf("no trusted key: %v", err)
	}
}

// TestOpenBounds: the size limits refuse what is larger than an honest
// file whatever the zip's headers claim, and accept what an honest file
// can be.
func TestOpenBounds(t *testing.T) {
	t.Parallel()
	if MaxBinSize != 16+64<<10+750000*70 || MaxSigSize != 64<<10 || MaxZipSize != MaxBinSize+2*64<<10 {
		t.Errorf("bounds %d %d %d", MaxBinSize, MaxSigSize, MaxZipSize)
	}
	// An honest file's largest key: every field at its widest.
	k := key(0xff, -1, -1, -1, -1) // a negative int32 is a 10-byte varint
	k.DaysSinceOnset, k.HasOnset = math.MinInt32, true
	if n := len(appendKey(nil, nil, fKeys, k)); n != maxKeyField {
		t.Errorf("widest key %d bytes, bound %d", n, maxKeyField)
	}
	// A zip exactly MaxZipSize long is read as a zip (and refused as a
	// malformed one), not refused for its size.
	if _, err := Open(make([]byte, MaxZipSize), nil); err == nil || strings.Contains(err.Error(), "larger") {
		t.Errorf("zip of MaxZipSize: %v", err)
	}
	for _, c := range []struct {
		size   int
		method uint16
		ok     bool
	}{{100, zip.Deflate, true}, {100, zip.Store, true}, {101, zip.Deflate, false}, {101, zip.Store, false}, {10, 99, false}} {
		zf := zipEntry(t, make([]byte, c.size), c.method)
		_, err := readEntry(zf, 100)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrFormat)) {
			t.Errorf("%d bytes, method %d: %v", c.size, c.method, err)
		}
	}
	// A header lying about the size: the reader stops at max+1 bytes.
	zf := zipEntry(t, make([]byte, 1000), zip.Deflate)
	zf.UncompressedSize64 = 10
	if _, err := readEntry(zf, 100); !errors.Is(err, ErrFormat) {
		t.Errorf("lying header: %v", err)
	}
	// A corrupt entry.
	z := zipOf(t, entry{BinName, bytes.Repeat([]byte("abc"), 100), zip.Store})
	i := bytes.Index(z, []byte("abcabc"))
	z[i] = 'x'
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readEntry(zr.File[0], 1000); !errors.Is(err, ErrFormat) {
		t.Errorf("bad checksum: %v", err)
	}
}

func zipEntry(t testing.TB, data []byte, method uint16) *zip.File {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	zw.RegisterCompressor(99, func(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil })
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "e", Method: method})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	zw.Close()
	zr, err := zip.NewReader(bytes.NewReader(b.Bytes()), int64(b.Len()))
	if err != nil {
		t.Fatal(err)
	}
	zr.RegisterDecompressor(99, func(r io.Reader) io.ReadCloser { return io.NopCloser(r) })
	return zr.File[0]
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func TestInt32Of(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v  uint64
		ok bool
	}{{0, true}, {math.MaxInt32, true}, {math.MaxInt32 + 1, false}, {uint64(1<<64 + math.MinInt32), true}, {uint64(1<<64 + math.MinInt32 - 1), false}} {
		n, err := int32Of(1, c.v)
		if (err == nil) != c.ok || (c.ok && int64(n) != int64(c.v)) {
			t.Errorf("%d: %d, %v", int64(c.v), n, err)
		}
	}
}

func validConfig() Config {
	return Config{Dir: "/x", Period: time.Hour, Jurisdiction: "NL", KeyURIs: []string{"a", "b"},
		KeyVersions: []string{"v1"}, Lease: time.Minute}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Region != "NL" || c.MaxAgeDays != exposure.DefaultMaxAgeDays || c.MaxKeys != 500000 || c.Embargo != 2*time.Hour ||
		len(c.KeyIDs) != 1 || c.KeyIDs[0] != "204" {
		t.Errorf("defaults: %+v", c)
	}
	// Set values are kept.
	c = validConfig()
	c.Region, c.MaxAgeDays, c.MaxKeys, c.Embargo, c.KeyIDs = "EU", 12, 10, 3*time.Hour, []string{"262"}
	if err := c.Validate(); err != nil || c.Region != "EU" || c.MaxAgeDays != 12 || c.MaxKeys != 10 || c.Embargo != 3*time.Hour || c.KeyIDs[0] != "262" {
		t.Errorf("set values: %+v, %v", c, err)
	}
	// The key id follows the jurisdiction, and the region when there is none.
	for j, mcc := range map[string]string{"BE": "206", "DE": "262", "FR": "208", "LU": "270", "AW": "363", "CW": "362", "SX": "362", "BQ": "362"} {
		c := validConfig()
		c.Jurisdiction = j
		if err := c.Validate(); err != nil || c.KeyIDs[0] != mcc || c.Region != j {
			t.Errorf("%s: key id %v, %v", j, c.KeyIDs, err)
		}
	}
	c = validConfig()
	c.Jurisdiction, c.Region = "", "DE"
	if err := c.Validate(); err != nil || c.KeyIDs[0] != "262" {
		t.Errorf("region DE, no jurisdiction: %v, %v", c.KeyIDs, err)
	}
}

func TestConfigBounds(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		mod func(*Config)
		ok  bool
	}{
		"days at floor":         {func(c *Config) { c.MaxAgeDays = exposure.FloorMaxAgeDays }, true},
		"days below floor":      {func(c *Config) { c.MaxAgeDays = exposure.FloorMaxAgeDays - 1 }, false},
		"max keys 1":            {func(c *Config) { c.MaxKeys = 1 }, true},
		"max keys 750000":       {func(c *Config) { c.MaxKeys = MaxKeysPerFile }, true},
		"max keys 750001":       {func(c *Config) { c.MaxKeys = MaxKeysPerFile + 1 }, false},
		"max keys negative":     {func(c *Config) { c.MaxKeys = -1 }, false},
		"min keys = max":        {func(c *Config) { c.MaxKeys, c.MinKeys = 10, 10 }, true},
		"min keys past max":     {func(c *Config) { c.MaxKeys, c.MinKeys = 10, 11 }, false},
		"min keys negative":     {func(c *Config) { c.MinKeys = -1 }, false},
		"embargo 2h":            {func(c *Config) { c.Embargo = MinEmbargo }, true},
		"embargo below 2h":      {func(c *Config) { c.Embargo = MinEmbargo - time.Second }, false},
		"embargo negative":      {func(c *Config) { c.Embargo = -time.Hour }, false},
		"min free 0":            {func(c *Config) { c.MinFree = 0 }, true},
		"min free negative":     {func(c *Config) { c.MinFree = -1 }, false},
		"period 1ns":            {func(c *Config) { c.Period = 1 }, true},
		"period 0":              {func(c *Config) { c.Period = 0 }, false},
		"period negative":       {func(c *Config) { c.Period = -1 }, false},
		"grace 0":               {func(c *Config) { c.Grace = 0 }, true},
		"grace negative":        {func(c *Config) { c.Grace = -1 }, false},
		"lease at its minimum":  {func(c *Config) { c.Lease = lease.MinTTL }, true},
		"lease under it":        {func(c *Config) { c.Lease = lease.MinTTL - 1 }, false},
		"lease 0":               {func(c *Config) { c.Lease = 0 }, false},
		"lease negative":        {func(c *Config) { c.Lease = -1 }, false},
		"region 64":             {func(c *Config) { c.Region = strings.Repeat("a", 64) }, true},
		"region 65":             {func(c *Config) { c.Region = strings.Repeat("a", 65) }, false},
		"no region":             {func(c *Config) { c.Jurisdiction, c.KeyIDs = "", []string{"204"} }, false},
		"no dir":                {func(c *Config) { c.Dir = "" }, false},
		"no key":                {func(c *Config) { c.KeyURIs = nil }, false},
		"one URI, one of each":  {func(c *Config) { c.KeyURIs, c.KeyIDs = []string{"a"}, []string{"204"} }, true},
		"ids per URI":           {func(c *Config) { c.KeyIDs = []string{"204", "204_2"} }, true},
		"versions per URI":      {func(c *Config) { c.KeyVersions = []string{"v1", "v2"} }, true},
		"ids not per URI":       {func(c *Config) { c.KeyIDs = []string{"204", "204", "204"} }, false},
		"versions not per URI":  {func(c *Config) { c.KeyVersions = []string{"v1", "v2", "v3"} }, false},
		"version of 32":         {func(c *Config) { c.KeyVersions = []string{strings.Repeat("v", 32)} }, true},
		"version of 33":         {func(c *Config) { c.KeyVersions = []string{strings.Repeat("v", 33)} }, false},
		"version empty":         {func(c *Config) { c.KeyVersions = []string{""} }, false},
		"version with dot":      {func(c *Config) { c.KeyVersions = []string{"v.1"} }, false},
		"no jurisdiction's MCC": {func(c *Config) { c.Jurisdiction = "XX" }, false},
		"unknown jurisdiction":  {func(c *Config) { c.Jurisdiction = "XX"; c.KeyIDs = []string{"999"} }, false},
		"unknown, id set":       {func(c *Config) { c.Jurisdiction = "XX"; c.KeyIDs = []string{"310"} }, true},
		"bad id among good":     {func(c *Config) { c.KeyIDs = []string{"204", "NL"} }, false},
	} {
		cfg := validConfig()
		c.mod(&cfg)
		if err := cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate = %v, want ok %v", name, err, c.ok)
		}
	}
	// Every problem is reported at once.
	c := Config{MaxAgeDays: 1, MaxKeys: -1, MinKeys: -1, Embargo: time.Minute, MinFree: -1, Grace: -1, KeyIDs: []string{"x"}, KeyVersions: []string{""}}
	err := c.Validate()
	for _, v := range []string{"VOUCH_EXPORT_DIR", "VOUCH_EXPORT_PERIOD", "VOUCH_KEYS_MAX_AGE_DAYS", "VOUCH_EXPORT_MAX_KEYS", "VOUCH_EXPORT_MIN_KEYS",
		"VOUCH_EXPORT_EMBARGO", "VOUCH_EXPORT_MIN_FREE", "VOUCH_EXPORT_REGION", "VOUCH_EXPORT_KEY_URIS", "VOUCH_EXPORT_KEY_ID", "VOUCH_EXPORT_KEY_VERSION",
		"VOUCH_EXPORT_GRACE", "VOUCH_EXPORT_LEASE"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("%s not named in %v", v, err)
		}
	}
}

func TestValidKeyID(t *testing.T) {
	t.Parallel()
	for id, ok := range map[string]bool{
		"204": true, "204_v2": true, "310.a": true, "799": true, "200": true, "204" + strings.Repeat("a", 29): true,
		"204" + strings.Repeat("a", 30): false, "199": false, "800": false, "20": false, "2044": true, "": false,
		"NL": false, "204/x": false, "204 ": false, " 204": false, "204-x": false, "x204": false,
	} {
		if err := ValidKeyID(id); (err == nil) != ok {
			t.Errorf("ValidKeyID(%q) = %v, want ok %v", id, err, ok)
		}
	}
}

func TestKeyInfo(t *testing.T) {
	t.Parallel()
	c := Config{KeyVersions: []string{"v1"}, KeyIDs: []string{"204", "204_b", "204_c"}}
	for i, want := range []string{"v1/204", "v1/204_b", "v1/204_c"} {
		if v, id := c.KeyInfo(i); v+"/"+id != want {
			t.Errorf("KeyInfo(%d) = %s/%s, want %s", i, v, id, want)
		}
	}
	c = Config{KeyVersions: []string{"v1", "v2"}, KeyIDs: []string{"204"}}
	if v, id := c.KeyInfo(1); v != "v2" || id != "204" {
		t.Errorf("KeyInfo(1) = %s/%s", v, id)
	}
}

func TestReadIndexFast(t *testing.T) {
	t.Parallel()
	got, err := ReadIndex(strings.NewReader("exports/a.zip\nexports/b.zip\r\n\n~!$&'()*+,;=@[]^_`{|}\n" + strings.Repeat("a", 255) + "\n"))
	if err != nil || fmt.Sprint(got) != fmt.Sprint([]string{"exports/a.zip", "exports/b.zip", "~!$&'()*+,;=@[]^_`{|}", strings.Repeat("a", 255)}) {
		t.Errorf("ReadIndex = %q, %v", got, err)
	}
	if got, err := ReadIndex(strings.NewReader("")); err != nil || len(got) != 0 {
		t.Errorf("empty index: %q, %v", got, err)
	}
	full := strings.Repeat("a\n", maxIndexLines) + "\n\n"
	if got, err := ReadIndex(strings.NewReader(full)); err != nil || len(got) != maxIndexLines {
		t.Errorf("%d lines: %d, %v", maxIndexLines, len(got), err)
	}
	// Exactly MaxIndexSize bytes (blank lines count, paths do not).
	exact := strings.Repeat("\n", MaxIndexSize-3) + "ab\n"
	if got, err := ReadIndex(strings.NewReader(exact)); err != nil || len(got) != 1 || got[0] != "ab" {
		t.Errorf("index of MaxIndexSize: %v", err)
	}
	for name, in := range map[string]string{
		"over size":    exact + "\n",
		"10001 lines":  full + "a\n",
		"256 long":     strings.Repeat("a", 256) + "\n",
		"absolute":     "/etc/passwd\n",
		"dotdot":       "..\n",
		"dotdot start": "../x\n",
		"inner dotdot": "a/../x\n",
		"dot":          ".\n",
		"trailing /":   "a/\n",
		"not clean":    "a//b\n",
		"dot inside":   "a/./b\n",
		"backslash":    "a\\b\n",
		"colon":        "c:x\n",
		"space":        "a b\n",
		"tab":          "a\tb\n",
		"DEL":          "a\x7fb\n",
		"non-ASCII":    "aé\n",
		"query":        "a?b\n",
		"fragment":     "a#b\n",
		"percent":      "a%2e\n",
		"control":      "a\x01\n",
		"bad second":   "a\n/b\n",
	} {
		if _, err := ReadIndex(strings.NewReader(in)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: ReadIndex = %v, want ErrFormat", name, err)
		}
	}
	if _, err := ReadIndex(iotestErr{}); err == nil || errors.Is(err, ErrFormat) {
		t.Errorf("read error: %v", err)
	}
}

type iotestErr struct{}

func (iotestErr) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

type countingWriter struct {
	w     io.Writer
	sizes []int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.sizes = append(c.sizes, len(p))
	return c.w.Write(p)
}

// TestKeysGatheredIntoLargeWrites: keys reach the compressor and the hash
// in writes of at least 64 KiB (the last one excepted), not one write per
// key: 1,400,000 keys go through in about a second.
func TestKeysGatheredIntoLargeWrites(t *testing.T) {
	t.Parallel()
	s, _ := memSigner(t, "v1", "204")
	fw, err := newFileWriter(io.Discard, batchHeader{Region: "NL", BatchNum: 1, BatchSize: 1}, []Signer{s})
	if err != nil {
		t.Fatal(err)
	}
	cw := &countingWriter{w: fw.bin}
	fw.bin = cw
	// The gathering buffer is made once, large enough for a flush's worth
	// and one more key: memory stays flat whatever the number of keys.
	base := &fw.buf[:1][0]
	const n = 5000 // about 185 KB of keys
	for i := range n {
		k := key(0, 1, 144, 0, 1)
		binary.BigEndian.PutUint32(k.Data[:], uint32(i))
		k.DaysSinceOnset, k.HasOnset = -14, i%2 == 0
		if err := fw.add(k); err != nil {
			t.Fatal(err)
		}
		if &fw.buf[:1][0] != base {
			t.Fatalf("buffer reallocated at key %d", i)
		}
	}
	if _, err := fw.close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for i, sz := range cw.sizes {
		total += sz
		if sz < flushAt && i != len(cw.sizes)-1 {
			t.Errorf("write %d of %d bytes", i, sz)
		}
	}
	if len(cw.sizes) < 2 || len(cw.sizes) > 4 {
		t.Errorf("%d writes of %d bytes", len(cw.sizes), total)
	}
}

func TestReadEntryReturnsTheEntry(t *testing.T) {
	t.Parallel()
	want := bytes.Repeat([]byte("0123456789"), 10)
	for _, m := range []uint16{zip.Store, zip.Deflate} {
		got, err := readEntry(zipEntry(t, want, m), len(want))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("method %d: %d bytes, %v", m, len(got), err)
		}
	}
}
