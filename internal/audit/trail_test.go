package audit_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// trailLog appends rows whose times repeat (several rows a microsecond,
// and one appended later with an earlier time, as a copy on a slower
// clock does) and returns them as stored.
func trailLog(t *testing.T, db *database.DB) []audit.Row {
	t.Helper()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	actors := []string{"900000001", "900000002", "900000003"}
	actions := []string{audit.ActionSignIn, audit.ActionVouch, audit.ActionVouchRefused, audit.ActionSignInRefused}
	var out []audit.Row
	for i := range 40 {
		at := base.Add(time.Duration(i/4) * time.Minute) // four rows at each time
		if i == 33 {
			at = base // late, with the first rows' time
		}
		e := audit.Entry{Actor: actors[i%3], Action: actions[i%4], UserAgent: "=cmd|' /C calc'!A0"}
		if strings.HasSuffix(e.Action, "-refused") {
			e.Reason = []string{"quota-reached", "cert-revoked"}[i%2]
		}
		if err := db.InTx(context.Background(), func(tx pgx.Tx) error {
			r, err := audit.Append(context.Background(), tx, e, at)
			out = append(out, r)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// newestFirst is the trail's order, worked out here apart from SQL.
func newestFirst(rows []audit.Row, keep func(audit.Row) bool) []int64 {
	var out []audit.Row
	for _, r := range rows {
		if keep(r) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b audit.Row) int {
		if c := b.At.Compare(a.At); c != 0 {
			return c
		}
		return cmp.Compare(b.Seq, a.Seq)
	})
	return seqs(out)
}

func seqs(rows []audit.Row) []int64 {
	out := []int64{}
	for _, r := range rows {
		out = append(out, r.Seq)
	}
	return out
}

// TestTrailPagesAndFilters: each filter's rows, a page of 3 at a time
// forwards by keyset and back again, are the rows the filter chooses in
// the trail's order (time, then seq, newest first), with no row twice or
// lost where a page ends between rows of the same time; Each gives the
// same rows.
func TestTrailPagesAndFilters(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	all := trailLog(t, db)
	base := all[0].At
	tests := []struct {
		name string
		f    audit.Filter
		keep func(audit.Row) bool
	}{
		{"all", audit.Filter{}, func(audit.Row) bool { return true }},
		{"up to 30", audit.Filter{UpTo: 30}, func(r audit.Row) bool { return r.Seq <= 30 }},
		{"time", audit.Filter{From: base.Add(2 * time.Minute), To: base.Add(5 * time.Minute)},
			func(r audit.Row) bool {
				return !r.At.Before(base.Add(2*time.Minute)) && r.At.Before(base.Add(5*time.Minute))
			}},
		{"actor", audit.Filter{Actor: "900000002"}, func(r audit.Row) bool { return r.Actor == "900000002" }},
		{"action", audit.Filter{Action: audit.ActionVouch}, func(r audit.Row) bool { return r.Action == audit.ActionVouch }},
		{"actions", audit.Filter{Actions: []string{audit.ActionVouch, audit.ActionSignIn}},
			func(r audit.Row) bool { return r.Action == audit.ActionVouch || r.Action == audit.ActionSignIn }},
		{"refused", audit.Filter{Result: audit.ResultRefused}, func(r audit.Row) bool { return r.Refused() }},
		{"ok", audit.Filter{Result: audit.ResultOK}, func(r audit.Row) bool { return !r.Refused() }},
		{"reason", audit.Filter{Reason: "cert-revoked"}, func(r audit.Row) bool { return r.Reason == "cert-revoked" }},
		{"actor and reason", audit.Filter{Actor: "900000003", Reason: "quota-reached", UpTo: 35},
			func(r audit.Row) bool { return r.Actor == "900000003" && r.Reason == "quota-reached" && r.Seq <= 35 }},
		{"none", audit.Filter{Actor: "900000009"}, func(audit.Row) bool { return false }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := newestFirst(all, tt.keep)
			var forward [][]audit.Row
			var after *audit.Cursor
			for {
				page, err := audit.Page(t.Context(), db.Pool(), tt.f, after, nil, 3)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) == 0 {
					break
				}
				forward = append(forward, page)
				c := audit.CursorOf(page[len(page)-1])
				after = &c
			}
			if diff := gocmp.Diff(want, seqs(slices.Concat(forward...))); diff != "" {
				t.Errorf("pages forward (-want +got):\n%s", diff)
			}
			// Back from the last page, by the before cursor of each.
			for i := len(forward) - 1; i > 0; i-- {
				c := audit.CursorOf(forward[i][0])
				page, err := audit.Page(t.Context(), db.Pool(), tt.f, nil, &c, 3)
				if err != nil {
					t.Fatal(err)
				}
				if diff := gocmp.Diff(seqs(forward[i-1]), seqs(page)); diff != "" {
					t.Errorf("page %d backwards (-want +got):\n%s", i-1, diff)
				}
			}
			var each []audit.Row
			if err := audit.Each(t.Context(), db.Pool(), tt.f, func(r audit.Row) error { each = append(each, r); return nil }); err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(want, seqs(each)); diff != "" {
				t.Errorf("Each (-want +got):\n%s", diff)
			}
		})
	}
}

func testKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// download encodes rows in format and signs the statement with key.
func download(t *testing.T, rows []audit.Row, format string, upto int64, key crypto.Signer) (file, sig []byte) {
	t.Helper()
	var b bytes.Buffer
	enc, err := audit.NewEncoder(&b, format, audit.Meta{UpTo: upto, Filter: "actor=900000001"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if err := enc.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	st := audit.Statement{Format: format, SHA256: sha256.Sum256(b.Bytes()), Rows: enc.Rows(), UpTo: upto, Filter: "actor=900000001"}
	sig, err = audit.SignDownload(key, st)
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), sig
}

// TestDownloadVerifies: a download decodes to the rows written (fields
// exactly as hashed, a formula-looking user agent too), its signature
// verifies with the key, and fails on a one-byte change of the file, of
// the statement, with another key, and on rows the statement does not
// describe.
func TestDownloadVerifies(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	all := trailLog(t, db)
	var rows []audit.Row
	if err := audit.Each(t.Context(), db.Pool(), audit.Filter{}, func(r audit.Row) error { rows = append(rows, r); return nil }); err != nil {
		t.Fatal(err)
	}
	key, other := testKey(t), testKey(t)
	keys := []crypto.PublicKey{other.Public(), key.Public()}
	for _, format := range []string{audit.FormatCSV, audit.FormatJSON} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			file, sig := download(t, rows, format, int64(len(all)), key)
			var got []audit.Row
			if _, err := audit.Decode(bytes.NewReader(file), format, func(r audit.Row) error { got = append(got, r); return nil }); err != nil {
				t.Fatal(err)
			}
			if diff := gocmp.Diff(rows, got); diff != "" {
				t.Errorf("decoded (-written +read):\n%s", diff)
			}
			if format == audit.FormatCSV && !bytes.Contains(file, []byte(`'=cmd|`)) {
				t.Error("a cell beginning with = is not kept from running as a formula")
			}
			st, err := audit.VerifyDownload(bytes.NewReader(file), sig, keys)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if st.Rows != int64(len(rows)) || st.Format != format || st.Filter != "actor=900000001" {
				t.Errorf("statement %+v", st)
			}
			// One byte of the file changed, anywhere, fails.
			for _, i := range []int{0, len(file) / 2, len(file) - 2} {
				bad := bytes.Clone(file)
				bad[i] ^= 1
				if _, err := audit.VerifyDownload(bytes.NewReader(bad), sig, keys); !errors.Is(err, audit.ErrFileChanged) {
					t.Errorf("byte %d changed: %v", i, err)
				}
			}
			// The statement changed (its row count) fails the signature.
			badSig := bytes.Replace(sig, []byte("rows: "), []byte("rows: 1"), 1)
			if _, err := audit.VerifyDownload(bytes.NewReader(file), badSig, keys); !errors.Is(err, audit.ErrBadSignature) {
				t.Errorf("statement changed: %v", err)
			}
			if _, err := audit.VerifyDownload(bytes.NewReader(file), sig, []crypto.PublicKey{other.Public()}); !errors.Is(err, audit.ErrUnknownKey) {
				t.Errorf("another key: %v", err)
			}
			// A file honestly signed whose rows are not what it says: an
			// edited row (its hash no longer its content), rows newer than
			// upto, fewer rows than counted.
			edited := slices.Clone(rows)
			edited[3].Actor = "900000666"
			if f, s := download(t, edited, format, int64(len(all)), key); !verifyFails(f, s, keys, "hash is not that of its fields") {
				t.Error("an edited row verified")
			}
			if f, s := download(t, rows, format, 5, key); !verifyFails(f, s, keys, "newer than the newest signed") {
				t.Error("rows past upto verified")
			}
			swapped := slices.Clone(rows)
			swapped[0], swapped[1] = swapped[1], swapped[0]
			if f, s := download(t, swapped, format, int64(len(all)), key); !verifyFails(f, s, keys, "out of order") {
				t.Error("rows out of order verified")
			}
		})
	}
}

func verifyFails(file, sig []byte, keys []crypto.PublicKey, why string) bool {
	_, err := audit.VerifyDownload(bytes.NewReader(file), sig, keys)
	return errors.Is(err, audit.ErrContent) && strings.Contains(err.Error(), why)
}

// TestStatementRoundTrip: a statement reads back as written, and any
// other text is refused.
func TestStatementRoundTrip(t *testing.T) {
	t.Parallel()
	st := audit.Statement{Format: audit.FormatJSON, SHA256: sha256.Sum256([]byte("x")), Rows: 7, UpTo: 9, Filter: "action=vouch&actor=900000001"}
	got, err := audit.ParseStatement(st.Marshal())
	if err != nil || got != st {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []string{"", string(st.Marshal()) + "x", strings.Replace(string(st.Marshal()), "rows: 7", "rows: 07", 1),
		strings.Replace(string(st.Marshal()), "json", "xml", 1), strings.Replace(string(st.Marshal()), "\n", "\r\n", 1)} {
		if _, err := audit.ParseStatement([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// FuzzDecode: the decoders of a download an inspector is handed never
// panic, and what they accept re-encodes to rows that decode alike.
func FuzzDecode(f *testing.F) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	row := audit.Row{Seq: 2, At: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC), Entry: audit.Entry{Actor: "900000001", Action: "vouch", UserAgent: "+x"},
		PrevHash: bytes.Repeat([]byte{1}, 32), Hash: bytes.Repeat([]byte{2}, 32)}
	for _, format := range []string{audit.FormatCSV, audit.FormatJSON} {
		var b bytes.Buffer
		enc, _ := audit.NewEncoder(&b, format, audit.Meta{UpTo: 3})
		_ = enc.Write(row)
		_ = enc.Close()
		f.Add(format == audit.FormatJSON, b.Bytes())
		sig, _ := audit.SignDownload(k, audit.Statement{Format: format, SHA256: sha256.Sum256(b.Bytes()), Rows: 1})
		f.Add(format == audit.FormatJSON, sig)
	}
	f.Fuzz(func(t *testing.T, isJSON bool, data []byte) {
		format := audit.FormatCSV
		if isJSON {
			format = audit.FormatJSON
		}
		var rows []audit.Row
		if _, err := audit.Decode(bytes.NewReader(data), format, func(r audit.Row) error { rows = append(rows, r); return nil }); err != nil {
			return
		}
		var b bytes.Buffer
		enc, _ := audit.NewEncoder(&b, format, audit.Meta{})
		for _, r := range rows {
			_ = enc.Write(r)
		}
		_ = enc.Close()
		var again []audit.Row
		if _, err := audit.Decode(&b, format, func(r audit.Row) error { again = append(again, r); return nil }); err != nil {
			t.Fatalf("re-encoded rows do not decode: %v", err)
		}
		if diff := gocmp.Diff(rows, again); diff != "" {
			t.Fatalf("(-first +again):\n%s", diff)
		}
		_, _ = audit.ParseStatement(data)
		_, _ = audit.VerifyDownload(bytes.NewReader(data), data, []crypto.PublicKey{k.Public()})
	})
}

// TestVerifyProgress: progress is told as rows are checked, ending at all.
func TestVerifyProgress(t *testing.T) {
	t.Parallel()
	db := testenv.Database(t)
	fill(t, db, 30)
	var told []int64
	err := db.InTx(context.Background(), func(tx pgx.Tx) error {
		rep, err := audit.VerifyProgress(context.Background(), tx, nil, func(n int64) { told = append(told, n) })
		if err == nil && rep.Rows != 30 {
			t.Errorf("%d rows", rep.Rows)
		}
		return err
	})
	if err != nil || !slices.Equal(told, []int64{30}) {
		t.Errorf("progress %v, %v", told, err)
	}
}
