package audit

// Downloads of the trail, for an inspector: the rows a filter chooses, as
// CSV or JSON, and a detached signature over a short statement of what
// the file is (its SHA-256, format, row count, filter and the newest row
// it may hold), made with the back end's attestation key. Every field of
// a row is in the file exactly as it was hashed, with the row's hashes, so
// that each row can be checked against the chain too.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// DownloadLabel names the download formats and their signed statement:
// the first line of every statement, which no other message the key
// signs begins with (those begin with a binary length).
const DownloadLabel = "vouch/audit-download/v1"

// Download formats.
const (
	FormatCSV  = "csv"
	FormatJSON = "json"
)

// downloadColumns are the CSV's header and the JSON rows' fields.
var downloadColumns = []string{"seq", "at", "actor", "action", "subject", "reason", "ip", "user_agent", "detail", "prev_hash", "hash"}

// Meta says what a download holds: the newest row it may hold and the
// filter that chose its rows (as the page's query string). The JSON
// carries it; a CSV file has it in its statement only.
type Meta struct {
	UpTo   int64  `json:"upto"`
	Filter string `json:"filter"`
}

// jsonRow is a row in the JSON format: every field as hashed.
type jsonRow struct {
	Seq       int64  `json:"seq"`
	At        string `json:"at"`
	Actor     string `json:"actor"`
	Action    string `json:"action"`
	Subject   string `json:"subject"`
	Reason    string `json:"reason"`
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent"`
	Detail    string `json:"detail"`
	PrevHash  string `json:"prev_hash"`
	Hash      string `json:"hash"`
}

func toJSONRow(r Row) jsonRow {
	return jsonRow{Seq: r.Seq, At: r.At.UTC().Format(time.RFC3339Nano), Actor: r.Actor, Action: r.Action, Subject: r.Subject,
		Reason: r.Reason, IP: r.IP, UserAgent: r.UserAgent, Detail: r.Detail, PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash)}
}

// row parses the fields back; at must be written as the hash writes it.
func (j jsonRow) row() (Row, error) {
	at, err := time.Parse(time.RFC3339Nano, j.At)
	if err != nil || at.UTC().Format(time.RFC3339Nano) != j.At {
		return Row{}, fmt.Errorf("row %d: time %q is not as the chain writes it", j.Seq, j.At)
	}
	r := Row{Seq: j.Seq, At: at, Entry: Entry{Actor: j.Actor, Action: j.Action, Subject: j.Subject, Reason: j.Reason,
		IP: j.IP, UserAgent: j.UserAgent, Detail: j.Detail}}
	if j.PrevHash != "" {
		if r.PrevHash, err = hex.DecodeString(j.PrevHash); err != nil || len(r.PrevHash) != sha256.Size {
			return Row{}, fmt.Errorf("row %d: prev_hash is not a SHA-256 in hex", j.Seq)
		}
	}
	if r.Hash, err = hex.DecodeString(j.Hash); err != nil || len(r.Hash) != sha256.Size {
		return Row{}, fmt.Errorf("row %d: hash is not a SHA-256 in hex", j.Seq)
	}
	return r, nil
}

func (j jsonRow) record() []string {
	return []string{strconv.FormatInt(j.Seq, 10), j.At, csvCell(j.Actor), csvCell(j.Action), csvCell(j.Subject), csvCell(j.Reason),
		csvCell(j.IP), csvCell(j.UserAgent), csvCell(j.Detail), j.PrevHash, j.Hash}
}

// csvCell keeps a spreadsheet from running a cell as a formula (a user
// agent is the attacker's choice): a text beginning with = + - @ tab or
// CR gets a ' in front, and so does one beginning with ', so that
// csvText takes exactly one off.
func csvCell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r'", s[0]) >= 0 {
		return "'" + s
	}
	return s
}

func csvText(s string) string { return strings.TrimPrefix(s, "'") }

// Encoder writes rows in one format, as they come.
type Encoder struct {
	format string
	w      io.Writer
	csv    *csv.Writer
	rows   int64
}

// NewEncoder begins a download in format on w.
func NewEncoder(w io.Writer, format string, m Meta) (*Encoder, error) {
	e := &Encoder{format: format, w: w}
	switch format {
	case FormatCSV:
		e.csv = csv.NewWriter(w)
		if err := e.csv.Write(downloadColumns); err != nil {
			return nil, fmt.Errorf("audit: download: %w", err)
		}
	case FormatJSON:
		filter, _ := json.Marshal(m.Filter)
		if _, err := fmt.Fprintf(w, `{"format":%q,"upto":%d,"filter":%s,"rows":[`, DownloadLabel, m.UpTo, filter); err != nil {
			return nil, fmt.Errorf("audit: download: %w", err)
		}
	default:
		return nil, fmt.Errorf("audit: no download format %q", format)
	}
	return e, nil
}

// Write writes one row.
func (e *Encoder) Write(r Row) error {
	j := toJSONRow(r)
	var err error
	if e.csv != nil {
		err = e.csv.Write(j.record())
	} else {
		sep := ",\n"
		if e.rows == 0 {
			sep = "\n"
		}
		b, _ := json.Marshal(j) // strings and numbers only
		_, err = fmt.Fprintf(e.w, "%s%s", sep, b)
	}
	if err != nil {
		return fmt.Errorf("audit: download: %w", err)
	}
	e.rows++
	return nil
}

// Flush sends what the CSV writer holds (for a streamed answer).
func (e *Encoder) Flush() error {
	if e.csv != nil {
		e.csv.Flush()
		return e.csv.Error()
	}
	return nil
}

// Rows is how many rows were written.
func (e *Encoder) Rows() int64 { return e.rows }

// Close ends the document.
func (e *Encoder) Close() error {
	if e.csv != nil {
		return e.Flush()
	}
	if _, err := io.WriteString(e.w, "\n]}\n"); err != nil {
		return fmt.Errorf("audit: download: %w", err)
	}
	return nil
}

// maxRecord bounds one CSV record or JSON row a decoder reads: the fields
// are bounded when appended (maxField, detail 4×), so anything larger was
// not made here.
const maxRecord = 64 << 10

// Decode reads a download in format and calls fn with each row in the
// file's order. It returns the JSON's Meta (a CSV has none).
func Decode(r io.Reader, format string, fn func(Row) error) (Meta, error) {
	switch format {
	case FormatCSV:
		return Meta{}, decodeCSV(r, fn)
	case FormatJSON:
		return decodeJSON(r, fn)
	}
	return Meta{}, fmt.Errorf("audit: no download format %q", format)
}

func decodeCSV(r io.Reader, fn func(Row) error) error {
	cr := csv.NewReader(io.LimitReader(r, 1<<40))
	cr.FieldsPerRecord = len(downloadColumns)
	head, err := cr.Read()
	if err != nil {
		return fmt.Errorf("audit: CSV header: %w", err)
	}
	if strings.Join(head, ",") != strings.Join(downloadColumns, ",") {
		return errors.New("audit: CSV header is not a Vouch audit download's")
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit: CSV: %w", err)
		}
		if n := len(strings.Join(rec, "")); n > maxRecord {
			return fmt.Errorf("audit: CSV record of %d bytes", n)
		}
		seq, err := strconv.ParseInt(rec[0], 10, 64)
		if err != nil || strconv.FormatInt(seq, 10) != rec[0] {
			return fmt.Errorf("audit: CSV: seq %q is not a number", rec[0])
		}
		row, err := jsonRow{Seq: seq, At: rec[1], Actor: csvText(rec[2]), Action: csvText(rec[3]), Subject: csvText(rec[4]),
			Reason: csvText(rec[5]), IP: csvText(rec[6]), UserAgent: csvText(rec[7]), Detail: csvText(rec[8]), PrevHash: rec[9], Hash: rec[10]}.row()
		if err != nil {
			return fmt.Errorf("audit: CSV: %w", err)
		}
		if err := fn(row); err != nil {
			return err
		}
	}
}

func decodeJSON(r io.Reader, fn func(Row) error) (Meta, error) {
	var m Meta
	dec := json.NewDecoder(r)
	expect := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil || tok != want {
			return fmt.Errorf("audit: JSON: want %q", want)
		}
		return nil
	}
	if err := expect('{'); err != nil {
		return m, err
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		key, ok := tok.(string)
		if err != nil || !ok || seen[key] {
			return m, errors.New("audit: JSON: a key twice, or not a key")
		}
		seen[key] = true
		switch key {
		case "format":
			var f string
			if err := dec.Decode(&f); err != nil || f != DownloadLabel {
				return m, errors.New("audit: JSON is not a Vouch audit download")
			}
		case "upto":
			if err := dec.Decode(&m.UpTo); err != nil {
				return m, fmt.Errorf("audit: JSON upto: %w", err)
			}
		case "filter":
			if err := dec.Decode(&m.Filter); err != nil {
				return m, fmt.Errorf("audit: JSON filter: %w", err)
			}
		case "rows":
			if err := expect('['); err != nil {
				return m, err
			}
			for dec.More() {
				var j jsonRow
				if err := decodeStrict(dec, &j); err != nil {
					return m, fmt.Errorf("audit: JSON row: %w", err)
				}
				row, err := j.row()
				if err != nil {
					return m, fmt.Errorf("audit: JSON: %w", err)
				}
				if err := fn(row); err != nil {
					return m, err
				}
			}
			if err := expect(']'); err != nil {
				return m, err
			}
		default:
			return m, fmt.Errorf("audit: JSON: unknown key %q", key)
		}
	}
	if err := expect('}'); err != nil {
		return m, err
	}
	if !seen["format"] || !seen["rows"] {
		return m, errors.New("audit: JSON is not a Vouch audit download")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return m, errors.New("audit: JSON: data after the document")
	}
	return m, nil
}

// decodeStrict decodes one value into v, refusing unknown fields and
// values larger than any row.
func decodeStrict(dec *json.Decoder, v any) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	if len(raw) > maxRecord {
		return fmt.Errorf("a row of %d bytes", len(raw))
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// Statement is what a download's signature says: the file's SHA-256 and
// format, how many rows it holds, the newest row it may hold, the filter
// that chose them, and the signing key's id (SHA-256 of its
// SubjectPublicKeyInfo, as protocol.KeyID).
type Statement struct {
	Format string
	SHA256 [sha256.Size]byte
	Rows   int64
	UpTo   int64
	Filter string
	KeyID  [sha256.Size]byte
}

// Marshal is the statement as signed: lines of text, in this order.
func (s Statement) Marshal() []byte {
	return fmt.Appendf(nil, "%s\nformat: %s\nrows: %d\nupto: %d\nfilter: %s\nsha256: %x\nkey: %x\n",
		DownloadLabel, s.Format, s.Rows, s.UpTo, s.Filter, s.SHA256, s.KeyID)
}

// ParseStatement reads a statement, strictly: it must be exactly what
// Marshal writes.
func ParseStatement(b []byte) (Statement, error) {
	var s Statement
	bad := errors.New("audit: not a download statement")
	lines := strings.Split(string(b), "\n")
	if len(lines) != 8 || lines[0] != DownloadLabel || lines[7] != "" {
		return s, bad
	}
	field := func(i int, name string) string {
		v, ok := strings.CutPrefix(lines[i], name+": ")
		if !ok {
			return "\x00"
		}
		return v
	}
	s.Format, s.Filter = field(1, "format"), field(4, "filter")
	var err1, err2 error
	s.Rows, err1 = strconv.ParseInt(field(2, "rows"), 10, 64)
	s.UpTo, err2 = strconv.ParseInt(field(3, "upto"), 10, 64)
	h, err3 := hex.DecodeString(field(5, "sha256"))
	k, err4 := hex.DecodeString(field(6, "key"))
	if errors.Join(err1, err2, err3, err4) != nil || len(h) != sha256.Size || len(k) != sha256.Size ||
		(s.Format != FormatCSV && s.Format != FormatJSON) || s.Rows < 0 || s.UpTo < 0 {
		return s, bad
	}
	copy(s.SHA256[:], h)
	copy(s.KeyID[:], k)
	if !bytes.Equal(s.Marshal(), b) {
		return s, bad
	}
	return s, nil
}

// signatureFile is a download's detached signature as served: the
// statement and the key's signature over its SHA-256 (ECDSA, ASN.1 DER).
type signatureFile struct {
	Statement string `json:"statement"`
	Signature []byte `json:"signature"`
}

// KeyID is the id of a public key: SHA-256 of its SubjectPublicKeyInfo.
func KeyID(pub crypto.PublicKey) ([sha256.Size]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("audit: key id: %w", err)
	}
	return sha256.Sum256(der), nil
}

// SignDownload signs st with signer (an ECDSA P-256 key: the attestation
// key) and returns the signature file. It checks the signature it got
// before returning it.
func SignDownload(signer crypto.Signer, st Statement) ([]byte, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("audit: the download key is not ECDSA P-256")
	}
	kid, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	if strings.ContainsAny(st.Filter, "\n\r") || (st.Format != FormatCSV && st.Format != FormatJSON) {
		return nil, errors.New("audit: a download statement's filter is one line, its format csv or json")
	}
	st.KeyID = kid
	msg := st.Marshal()
	digest := sha256.Sum256(msg)
	sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("audit: sign download: %w", err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return nil, errors.New("audit: the key's signature of the download does not verify")
	}
	out, err := json.MarshalIndent(signatureFile{Statement: string(msg), Signature: sig}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("audit: sign download: %w", err)
	}
	return append(out, '\n'), nil
}

// Why a download does not verify.
var (
	ErrSignatureFile = errors.New("the signature file is not a Vouch audit download's signature")
	ErrUnknownKey    = errors.New("the signature was made by none of the keys given")
	ErrBadSignature  = errors.New("the signature does not verify: the statement was altered, or another key made it")
	ErrFileChanged   = errors.New("the file's SHA-256 is not the one signed: the file was altered")
	ErrContent       = errors.New("the file's rows are not what the statement says")
)

// maxSignatureBytes bounds a signature file: a statement and a signature.
const maxSignatureBytes = 16 << 10

// VerifyDownload checks a download against its signature file with the
// trusted keys: the signature (by a key among keys), the file's SHA-256,
// and then its rows — the format, their count, none newer than the
// statement's newest, in the trail's order, each row's hash that of its
// fields, and each row's link to the row before it in the chain where the
// file holds both. It returns the verified statement.
func VerifyDownload(file io.ReadSeeker, sigFile []byte, keys []crypto.PublicKey) (Statement, error) {
	var sf signatureFile
	if len(sigFile) > maxSignatureBytes {
		return Statement{}, ErrSignatureFile
	}
	dec := json.NewDecoder(bytes.NewReader(sigFile))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sf); err != nil {
		return Statement{}, fmt.Errorf("%w: %v", ErrSignatureFile, err)
	}
	st, err := ParseStatement([]byte(sf.Statement))
	if err != nil {
		return Statement{}, fmt.Errorf("%w: %v", ErrSignatureFile, err)
	}
	var pub *ecdsa.PublicKey
	for _, k := range keys {
		if id, err := KeyID(k); err == nil && id == st.KeyID {
			pub, _ = k.(*ecdsa.PublicKey)
		}
	}
	if pub == nil {
		return st, ErrUnknownKey
	}
	digest := sha256.Sum256([]byte(sf.Statement))
	if !ecdsa.VerifyASN1(pub, digest[:], sf.Signature) {
		return st, ErrBadSignature
	}
	h := sha256.New()
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	if _, err := io.Copy(h, file); err != nil {
		return st, err
	}
	if !bytes.Equal(h.Sum(nil), st.SHA256[:]) {
		return st, ErrFileChanged
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return st, err
	}
	var n int64
	var prev *Row
	m, err := Decode(file, st.Format, func(r Row) error {
		switch {
		case !r.Holds():
			return fmt.Errorf("%w: row %d's hash is not that of its fields", ErrContent, r.Seq)
		case st.UpTo > 0 && r.Seq > st.UpTo:
			return fmt.Errorf("%w: row %d is newer than the newest signed (%d)", ErrContent, r.Seq, st.UpTo)
		case prev != nil && !(r.At.Before(prev.At) || r.At.Equal(prev.At) && r.Seq < prev.Seq):
			return fmt.Errorf("%w: row %d is out of order", ErrContent, r.Seq)
		case prev != nil && r.Seq == prev.Seq-1 && !bytes.Equal(prev.PrevHash, r.Hash):
			return fmt.Errorf("%w: row %d does not chain to row %d", ErrContent, prev.Seq, r.Seq)
		}
		n++
		prev = &r
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrContent) {
			return st, err
		}
		return st, fmt.Errorf("%w: %v", ErrContent, err)
	}
	switch {
	case n != st.Rows:
		return st, fmt.Errorf("%w: %d rows, the statement says %d", ErrContent, n, st.Rows)
	case st.Format == FormatJSON && (m.UpTo != st.UpTo || m.Filter != st.Filter):
		return st, fmt.Errorf("%w: the JSON's filter or newest row is not the statement's", ErrContent)
	}
	return st, nil
}
