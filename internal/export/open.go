package export

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// File is a verified export file.
type File struct {
	Start, End          time.Time
	Region              string
	BatchNum, BatchSize int
	Keys                []Key
	// Revised are keys published before whose report type changed since
	// (export.proto's revised_keys), REVOKED among them.
	Revised []Key
}

// Bounds of what Open reads: a file larger than the largest honest one is
// refused before it is decompressed, so a zip bomb costs nothing.
const (
	// maxKeyField is the most one key takes in export.bin (six fields).
	maxKeyField = 2 + 18 + 11 + 11 + 11 + 11 + 6
	MaxBinSize  = len(Header) + 64<<10 + MaxKeysPerFile*maxKeyField
	MaxSigSize  = 64 << 10
	// MaxZipSize bounds the zip itself; deflate never grows data much.
	MaxZipSize = MaxBinSize + MaxSigSize + 64<<10
	// maxSignatures bounds the signatures of one file (a rotation has two).
	maxSignatures = 16
)

// Why a file is refused.
var (
	ErrFormat    = errors.New("export: malformed file")
	ErrSignature = errors.New("export: no signature verifies under a trusted key")
)

func formatErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrFormat, fmt.Sprintf(format, a...))
}

// Open verifies that at least one of an export zip's signatures is a
// trusted key's over export.bin and then parses export.bin strictly: a
// body nobody trusted signed is never parsed. Keys (and revised keys) must
// be strictly increasing by their bytes, as the aggregator writes them, so
// a list holds no key twice.
func Open(zipData []byte, trusted []*ecdsa.PublicKey) (*File, error) {
	if len(zipData) > MaxZipSize {
		return nil, formatErr("larger than %d bytes", MaxZipSize)
	}
	zr, err := zip.NewReader(bytes.NewReader(zipData), int64(len(zipData)))
	if err != nil {
		return nil, formatErr("zip: %v", err)
	}
	if len(zr.File) != 2 || zr.File[0].Name != BinName || zr.File[1].Name != SigName {
		return nil, formatErr("the zip must hold %s and %s, only", BinName, SigName)
	}
	bin, err := readEntry(zr.File[0], MaxBinSize)
	if err != nil {
		return nil, err
	}
	sig, err := readEntry(zr.File[1], MaxSigSize)
	if err != nil {
		return nil, err
	}
	sigs, err := parseSigList(sig)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(bin)
	var valid []tekSignature
	for _, s := range sigs {
		for _, pub := range trusted {
			if pub != nil && ecdsa.VerifyASN1(pub, digest[:], s.signature) {
				valid = append(valid, s)
				break
			}
		}
	}
	if len(valid) == 0 {
		return nil, ErrSignature
	}
	f, err := parseBin(bin)
	if err != nil {
		return nil, err
	}
	for _, s := range valid {
		if s.batchNum == f.BatchNum && s.batchSize == f.BatchSize {
			return f, nil
		}
	}
	return nil, ErrSignature
}

// readEntry reads one entry, refusing more than max bytes whatever its
// header claims.
func readEntry(zf *zip.File, max int) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(max) {
		return nil, formatErr("%s larger than %d bytes", zf.Name, max)
	}
	if zf.Method != zip.Deflate && zf.Method != zip.Store {
		return nil, formatErr("%s: compression method %d", zf.Name, zf.Method)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, formatErr("%s: %v", zf.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(max)+1))
	if err != nil {
		return nil, formatErr("%s: %v", zf.Name, err)
	}
	if len(b) > max {
		return nil, formatErr("%s larger than %d bytes", zf.Name, max)
	}
	return b, nil
}

// fields walks a protobuf message, calling f for each field with its
// value: v for varint and fixed64 fields, b for length-delimited ones.
// Groups and fixed32 fields never occur in export.proto and are refused.
func fields(m []byte, f func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error) error {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return formatErr("tag: %v", protowire.ParseError(n))
		}
		m = m[n:]
		var v uint64
		var b []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(m)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(m)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(m)
		default:
			return formatErr("field %d: wire type %d", num, typ)
		}
		if n < 0 {
			return formatErr("field %d: %v", num, protowire.ParseError(n))
		}
		m = m[n:]
		if err := f(num, typ, v, b); err != nil {
			return err
		}
	}
	return nil
}

// once refuses a field seen before and a field of the wrong wire type.
type once map[protowire.Number]bool

func (o once) check(num protowire.Number, typ, want protowire.Type) error {
	if typ != want {
		return formatErr("field %d: wire type %d", num, typ)
	}
	if o[num] {
		return formatErr("field %d twice", num)
	}
	o[num] = true
	return nil
}

func int32Of(num protowire.Number, v uint64) (int32, error) {
	if int64(v) < math.MinInt32 || int64(v) > math.MaxInt32 {
		return 0, formatErr("field %d out of range", num)
	}
	return int32(int64(v)), nil
}

func parseBin(bin []byte) (*File, error) {
	if !bytes.HasPrefix(bin, []byte(Header)) {
		return nil, formatErr("no export header")
	}
	f := &File{}
	seen := once{}
	var last, lastRevised []byte
	err := fields(bin[len(Header):], func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch num {
		case fStart, fEnd:
			if err := seen.check(num, typ, protowire.Fixed64Type); err != nil {
				return err
			}
			if v > math.MaxInt64/2 {
				return formatErr("field %d out of range", num)
			}
			t := time.Unix(int64(v), 0).UTC()
			if num == fStart {
				f.Start = t
			} else {
				f.End = t
			}
		case fRegion:
			if err := seen.check(num, typ, protowire.BytesType); err != nil {
				return err
			}
			if len(b) > 64 {
				return formatErr("region too long")
			}
			f.Region = string(b)
		case fBatchNum, fBatchSize:
			if err := seen.check(num, typ, protowire.VarintType); err != nil {
				return err
			}
			n, err := int32Of(num, v)
			if err != nil {
				return err
			}
			if num == fBatchNum {
				f.BatchNum = int(n)
			} else {
				f.BatchSize = int(n)
			}
		case fSigInfos:
			if typ != protowire.BytesType {
				return formatErr("signature info: wire type %d", typ)
			}
			return parseSigInfo(b)
		case fKeys, fRevised:
			if typ != protowire.BytesType {
				return formatErr("key: wire type %d", typ)
			}
			if len(f.Keys)+len(f.Revised) >= MaxKeysPerFile {
				return formatErr("more than %d keys", MaxKeysPerFile)
			}
			list, prev, what := &f.Keys, &last, "key"
			if num == fRevised {
				list, prev, what = &f.Revised, &lastRevised, "revised key"
			}
			k, err := parseKey(b)
			if err != nil {
				return fmt.Errorf("%s %d: %w", what, len(*list), err)
			}
			if *prev != nil && bytes.Compare(*prev, k.Data[:]) >= 0 {
				return formatErr("%s %d: not in strictly increasing order", what, len(*list))
			}
			*list = append(*list, k)
			*prev = (*list)[len(*list)-1].Data[:]
		default:
			// Anything newer than revised_keys: a reader that guessed at
			// it would trust what it cannot check.
			return formatErr("unexpected field %d", num)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, n := range []protowire.Number{fStart, fEnd, fRegion, fBatchNum, fBatchSize} {
		if !seen[n] {
			return nil, formatErr("field %d missing", n)
		}
	}
	if f.BatchSize < 1 || f.BatchNum < 1 || f.BatchNum > f.BatchSize {
		return nil, formatErr("batch %d of %d", f.BatchNum, f.BatchSize)
	}
	if f.End.Before(f.Start) {
		return nil, formatErr("ends before it starts")
	}
	return f, nil
}

func parseSigInfo(b []byte) error {
	seen := once{}
	return fields(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch num {
		case 1, 2, fInfoVersion, fInfoID, fInfoAlgorithm: // 1 and 2 are GAEN's deprecated bundle fields
			if err := seen.check(num, typ, protowire.BytesType); err != nil {
				return err
			}
			if len(b) > 256 {
				return formatErr("signature info field %d too long", num)
			}
			return nil
		default:
			return formatErr("signature info: unexpected field %d", num)
		}
	})
}

func parseKey(b []byte) (Key, error) {
	var k Key
	k.RollingPeriod = exposure.MaxRollingPeriod // GAEN's default when absent
	seen := once{}
	err := fields(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		if num == kData {
			if err := seen.check(num, typ, protowire.BytesType); err != nil {
				return err
			}
			if len(b) != exposure.KeySize {
				return formatErr("key data of %d bytes", len(b))
			}
			copy(k.Data[:], b)
			return nil
		}
		if num < kRisk || num > kOnset {
			return formatErr("unexpected field %d", num)
		}
		if err := seen.check(num, typ, protowire.VarintType); err != nil {
			return err
		}
		if num == kOnset {
			d := protowire.DecodeZigZag(v)
			if d < -MaxOnsetDays || d > MaxOnsetDays {
				return formatErr("days since onset %d outside -%d..%d", d, MaxOnsetDays, MaxOnsetDays)
			}
			k.DaysSinceOnset, k.HasOnset = int32(d), true
			return nil
		}
		n, err := int32Of(num, v)
		if err != nil {
			return err
		}
		switch num {
		case kRisk:
			k.TransmissionRisk = n
		case kStart:
			k.RollingStart = n
		case kPeriod:
			k.RollingPeriod = n
		case kReportType:
			k.ReportType = n
		}
		return nil
	})
	switch {
	case err != nil:
		return k, err
	case !seen[kData] || !seen[kStart]:
		return k, formatErr("key data or start missing")
	case k.RollingStart < 0:
		return k, formatErr("negative start")
	case k.RollingPeriod < 1 || k.RollingPeriod > exposure.MaxRollingPeriod:
		return k, formatErr("rolling period %d", k.RollingPeriod)
	case k.TransmissionRisk < 0 || k.TransmissionRisk > exposure.MaxTransmissionRisk:
		return k, formatErr("transmission risk %d", k.TransmissionRisk)
	case k.ReportType < 0 || k.ReportType > 5:
		return k, formatErr("report type %d", k.ReportType)
	}
	return k, nil
}

type tekSignature struct {
	batchNum, batchSize int
	signature           []byte
}

func parseSigList(b []byte) ([]tekSignature, error) {
	var sigs []tekSignature
	err := fields(b, func(num protowire.Number, typ protowire.Type, _ uint64, m []byte) error {
		if num != fSignatures || typ != protowire.BytesType {
			return formatErr("signature list: unexpected field %d", num)
		}
		if len(sigs) == maxSignatures {
			return formatErr("more than %d signatures", maxSignatures)
		}
		var s tekSignature
		seen := once{}
		err := fields(m, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
			switch num {
			case sInfo:
				if err := seen.check(num, typ, protowire.BytesType); err != nil {
					return err
				}
				return parseSigInfo(b)
			case sBatchNum, sBatchSize:
				if err := seen.check(num, typ, protowire.VarintType); err != nil {
					return err
				}
				n, err := int32Of(num, v)
				if num == sBatchNum {
					s.batchNum = int(n)
				} else {
					s.batchSize = int(n)
				}
				return err
			case sSignature:
				if err := seen.check(num, typ, protowire.BytesType); err != nil {
					return err
				}
				if len(b) > 256 {
					return formatErr("signature too long")
				}
				s.signature = b
				return nil
			default:
				return formatErr("signature: unexpected field %d", num)
			}
		})
		if err != nil {
			return err
		}
		sigs = append(sigs, s)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(sigs) == 0 {
		return nil, formatErr("no signature")
	}
	return sigs, nil
}

// Bounds of an index.
const (
	MaxIndexSize  = 1 << 20
	maxIndexLines = 10000
	maxPathLen    = 255
)

// ReadIndex reads index.txt: one relative path per line, in order. It
// refuses absolute paths, "..", anything not in its clean form and an
// index larger than MaxIndexSize, so a fetcher never leaves the base.
func ReadIndex(r io.Reader) ([]string, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("export: index: %w", err)
	}
	if len(b) > MaxIndexSize {
		return nil, formatErr("index larger than %d bytes", MaxIndexSize)
	}
	var paths []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), MaxIndexSize)
	for sc.Scan() {
		p := strings.TrimSuffix(sc.Text(), "\r")
		if p == "" {
			continue
		}
		if len(paths) == maxIndexLines {
			return nil, formatErr("more than %d index lines", maxIndexLines)
		}
		switch {
		case len(p) > maxPathLen:
			return nil, formatErr("index path too long")
		case strings.HasPrefix(p, "/"), strings.Contains(p, "\\"), strings.Contains(p, ":"):
			return nil, formatErr("index path %q is not relative", p)
		case path.Clean(p) != p, p == "..", strings.HasPrefix(p, "../"), strings.Contains(p, "/../"), p == ".":
			return nil, formatErr("index path %q is not clean", p)
		}
		for _, c := range p {
			if c < 0x21 || c > 0x7e || c == '?' || c == '#' || c == '%' {
				return nil, formatErr("index path %q has a character a URL would change", p)
			}
		}
		paths = append(paths, p)
	}
	if err := sc.Err(); err != nil {
		return nil, formatErr("index: %v", err)
	}
	return paths, nil
}
