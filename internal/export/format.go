package export

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// The GAEN export format (export.proto of Google and Apple's Exposure
// Notification): a zip of export.bin, the header below and then a
// TemporaryExposureKeyExport, and export.sig, a TEKSignatureList.
const (
	Header = "EK Export v1    "
	// BinName and SigName are the two entries of an export zip, in this order.
	BinName = "export.bin"
	SigName = "export.sig"
	// SignatureAlgorithm is ECDSA P-256 with SHA-256, as GAEN names it.
	SignatureAlgorithm = "1.2.840.10045.4.3.2"
	// ReportConfirmedTest is GAEN's report type CONFIRMED_TEST: every key
	// uploaded here was vouched for by a clinician. A site's keys keep the
	// type its file gave them.
	ReportConfirmedTest = 1
	// GAEN's other report types.
	ReportClinicalDiagnosis = 2
	ReportSelfReport        = 3
	ReportRecursive         = 4
	ReportRevoked           = 5
	// MaxOnsetDays bounds days_since_onset_of_symptoms: GAEN reads -14..14.
	MaxOnsetDays = 14
	// MaxKeysPerFile is the platforms' bound on the keys of one file.
	MaxKeysPerFile = 750000
)

// Field numbers of export.proto.
const (
	fStart, fEnd, fRegion, fBatchNum, fBatchSize, fSigInfos, fKeys, fRevised protowire.Number = 1, 2, 3, 4, 5, 6, 7, 8
	fInfoVersion, fInfoID, fInfoAlgorithm                                    protowire.Number = 3, 4, 5
	kData, kRisk, kStart, kPeriod, kReportType, kOnset                       protowire.Number = 1, 2, 3, 4, 5, 6
	fSignatures                                                              protowire.Number = 1
	sInfo, sBatchNum, sBatchSize, sSignature                                 protowire.Number = 1, 2, 3, 4
)

// zipTime is every entry's modification time: the same keys give the same
// bytes whenever they are built.
var zipTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// Key is one key of an export, as the store keeps it and a phone reads it.
type Key struct {
	exposure.Key
	ReportType     int32
	DaysSinceOnset int32
	HasOnset       bool
}

// Signer is one export signing key with what GAEN's SignatureInfo says of
// it; during a rotation a file carries one signature per Signer.
type Signer struct {
	crypto.Signer
	Version string // verification_key_version, such as "v1"
	ID      string // verification_key_id, such as the country's MCC
}

// batchHeader is what export.bin says before its keys.
type batchHeader struct {
	Start, End          time.Time
	Region              string
	BatchNum, BatchSize int
}

func appendSigInfo(b []byte, s Signer) []byte {
	b = protowire.AppendTag(b, fInfoVersion, protowire.BytesType)
	b = protowire.AppendString(b, s.Version)
	b = protowire.AppendTag(b, fInfoID, protowire.BytesType)
	b = protowire.AppendString(b, s.ID)
	b = protowire.AppendTag(b, fInfoAlgorithm, protowire.BytesType)
	return protowire.AppendString(b, SignatureAlgorithm)
}

// appendHeader is the export.bin up to its keys. Every field is written,
// zero or not, in field order: one encoding for one content.
func appendHeader(b []byte, h batchHeader, signers []Signer) []byte {
	b = append(b, Header...)
	b = protowire.AppendTag(b, fStart, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(h.Start.Unix()))
	b = protowire.AppendTag(b, fEnd, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, uint64(h.End.Unix()))
	b = protowire.AppendTag(b, fRegion, protowire.BytesType)
	b = protowire.AppendString(b, h.Region)
	b = protowire.AppendTag(b, fBatchNum, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(h.BatchNum))
	b = protowire.AppendTag(b, fBatchSize, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(h.BatchSize))
	for _, s := range signers {
		b = protowire.AppendTag(b, fSigInfos, protowire.BytesType)
		b = protowire.AppendBytes(b, appendSigInfo(nil, s))
	}
	return b
}

// appendKey appends k as field (keys or revised_keys); buf is scratch for
// the message.
func appendKey(b, buf []byte, field protowire.Number, k Key) []byte {
	m := buf[:0]
	m = protowire.AppendTag(m, kData, protowire.BytesType)
	m = protowire.AppendBytes(m, k.Data[:])
	m = protowire.AppendTag(m, kRisk, protowire.VarintType)
	m = protowire.AppendVarint(m, uint64(int64(k.TransmissionRisk)))
	m = protowire.AppendTag(m, kStart, protowire.VarintType)
	m = protowire.AppendVarint(m, uint64(int64(k.RollingStart)))
	m = protowire.AppendTag(m, kPeriod, protowire.VarintType)
	m = protowire.AppendVarint(m, uint64(int64(k.RollingPeriod)))
	m = protowire.AppendTag(m, kReportType, protowire.VarintType)
	m = protowire.AppendVarint(m, uint64(int64(k.ReportType)))
	if k.HasOnset {
		m = protowire.AppendTag(m, kOnset, protowire.VarintType)
		m = protowire.AppendVarint(m, protowire.EncodeZigZag(int64(k.DaysSinceOnset)))
	}
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}

// appendSigList is export.sig: one TEKSignature per signer, in order.
func appendSigList(b []byte, h batchHeader, signers []Signer, sigs [][]byte) []byte {
	for i, s := range signers {
		var m []byte
		m = protowire.AppendTag(m, sInfo, protowire.BytesType)
		m = protowire.AppendBytes(m, appendSigInfo(nil, s))
		m = protowire.AppendTag(m, sBatchNum, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(h.BatchNum))
		m = protowire.AppendTag(m, sBatchSize, protowire.VarintType)
		m = protowire.AppendVarint(m, uint64(h.BatchSize))
		m = protowire.AppendTag(m, sSignature, protowire.BytesType)
		m = protowire.AppendBytes(m, sigs[i])
		b = protowire.AppendTag(b, fSignatures, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b
}

// fileWriter streams one export file: the header at creation, keys one by
// one into the zip while hashing them for the signature, the signatures at
// Close. Memory does not depend on the number of keys.
type fileWriter struct {
	zw      *zip.Writer
	bin     io.Writer
	sum     hash.Hash
	h       batchHeader
	signers []Signer
	buf     []byte
	msg     []byte
}

// flushAt is how much encoded key data is gathered before one write.
const flushAt = 64 << 10

func newFileWriter(w io.Writer, h batchHeader, signers []Signer) (*fileWriter, error) {
	zw := zip.NewWriter(w)
	// Fast, and fixed: the compressor is part of the bytes.
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, flate.BestSpeed)
	})
	ew, err := zw.CreateHeader(&zip.FileHeader{Name: BinName, Method: zip.Deflate, Modified: zipTime})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	fw := &fileWriter{zw: zw, sum: sha256.New(), h: h, signers: signers, buf: make([]byte, 0, flushAt+256), msg: make([]byte, 0, 64)}
	fw.bin = io.MultiWriter(ew, fw.sum)
	fw.buf = appendHeader(fw.buf, h, signers)
	return fw, nil
}

// add appends a key; every key comes before the first revised one, in
// increasing order of their bytes.
func (fw *fileWriter) add(k Key) error { return fw.addField(fKeys, k) }

// addRevised appends a key of revised_keys: one published before whose
// report type changed since.
func (fw *fileWriter) addRevised(k Key) error { return fw.addField(fRevised, k) }

func (fw *fileWriter) addField(field protowire.Number, k Key) error {
	fw.buf = appendKey(fw.buf, fw.msg, field, k)
	if len(fw.buf) >= flushAt {
		return fw.flush()
	}
	return nil
}

func (fw *fileWriter) flush() error {
	if _, err := fw.bin.Write(fw.buf); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fw.buf = fw.buf[:0]
	return nil
}

// close signs export.bin with every signer, writes export.sig and ends the
// zip. It returns the SHA-256 of export.bin, the file's content address.
func (fw *fileWriter) close() ([]byte, error) {
	if err := fw.flush(); err != nil {
		return nil, err
	}
	digest := fw.sum.Sum(nil)
	sigs := make([][]byte, len(fw.signers))
	for i, s := range fw.signers {
		sig, err := s.Sign(rand.Reader, digest, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("export: sign with key %s/%s: %w", s.ID, s.Version, err)
		}
		sigs[i] = sig
	}
	sw, err := fw.zw.CreateHeader(&zip.FileHeader{Name: SigName, Method: zip.Deflate, Modified: zipTime})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if _, err := sw.Write(appendSigList(nil, fw.h, fw.signers, sigs)); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := fw.zw.Close(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return digest, nil
}

// Write writes one export file of keys (sorted here) to w: for tests and
// tools; the aggregator streams from the store instead.
func Write(w io.Writer, start, end time.Time, region string, batchNum, batchSize int, keys []Key, signers []Signer) error {
	return WriteFile(w, &File{Start: start, End: end, Region: region, BatchNum: batchNum, BatchSize: batchSize, Keys: keys}, signers)
}

// WriteFile writes f (keys and revised keys sorted here) to w.
func WriteFile(w io.Writer, f *File, signers []Signer) error {
	if len(signers) == 0 {
		return fmt.Errorf("export: no signing key")
	}
	fw, err := newFileWriter(w, batchHeader{Start: f.Start, End: f.End, Region: f.Region, BatchNum: f.BatchNum, BatchSize: f.BatchSize}, signers)
	if err != nil {
		return err
	}
	for _, l := range []struct {
		keys []Key
		add  func(Key) error
	}{{f.Keys, fw.add}, {f.Revised, fw.addRevised}} {
		sorted := append([]Key(nil), l.keys...)
		slices.SortFunc(sorted, func(a, b Key) int { return bytes.Compare(a.Data[:], b.Data[:]) })
		for _, k := range sorted {
			if err := l.add(k); err != nil {
				return err
			}
		}
	}
	_, err = fw.close()
	return err
}
