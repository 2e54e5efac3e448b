package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// sameDecoding says how fast (the fast decoder's answer, declined when
// !ok) and decodeUploadStrict's answer on b differ: the fast decoder may
// decline anything, but what it takes the strict one must take, decoded
// the same; and decodeUpload must answer as the strict one does.
func sameDecoding(b []byte) string {
	ref, refErr := decodeUploadStrict(b)
	if d, ok := fastUpload(b); ok {
		if refErr != nil {
			return fmt.Sprintf("the fast decoder took what the strict one refuses (%v)", refErr)
		}
		if diff := diffDecoded(ref, d); diff != "" {
			return "the fast decoder decoded it otherwise (-strict +fast):\n" + diff
		}
	}
	got, err := decodeUpload(b)
	switch {
	case (err == nil) != (refErr == nil):
		return fmt.Sprintf("decodeUpload: %v, the strict decoder: %v", err, refErr)
	case err != nil && err.Error() != refErr.Error():
		return fmt.Sprintf("decodeUpload refused with %q, the strict decoder with %q", err, refErr)
	case err == nil:
		if diff := diffDecoded(ref, got); diff != "" {
			return "decodeUpload decoded it otherwise (-strict +decodeUpload):\n" + diff
		}
	}
	return ""
}

func diffDecoded(want, got *decodedUpload) string {
	type flat struct {
		Bundle, Phone, Sig, Canon []byte
		At                        int64
		Keys                      []exposure.Key
	}
	f := func(d *decodedUpload) flat {
		return flat{d.upload.Bundle, d.upload.Phone, d.sig, d.canon, d.upload.At.Unix(), d.upload.Keys}
	}
	return cmp.Diff(f(want), f(got))
}

// wireUpload is an upload request of n keys with made-up bytes: the
// decoders check shapes, not signatures.
func wireUpload(r *rand.Rand, n, bundleLen int) phoneapi.UploadRequest {
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	req := phoneapi.UploadRequest{Bundle: fill(bundleLen), PublicKey: fill(32), Time: 1765108800 + r.Int64N(1000), Signature: fill(64)}
	for range n {
		req.Keys = append(req.Keys, phoneapi.Key{Key: fill(16), RollingStartIntervalNumber: r.Int32N(3_000_000),
			RollingPeriod: 1 + r.Int32N(144), TransmissionRisk: r.Int32N(9)})
	}
	return req
}

// canonicalBody is the body the odd forms below are made of.
func canonicalBody(t testing.TB) []byte {
	req := wireUpload(rand.New(rand.NewPCG(1, 2)), 2, 40)
	return padBody(t, &req)
}

// oddBodies are forms and refusals around the canonical body: what
// encoding/json takes that phones do not send, and what it refuses.
func oddBodies(t testing.TB) map[string][]byte {
	base := canonicalBody(t)
	var req phoneapi.UploadRequest
	if err := json.Unmarshal(base, &req); err != nil {
		t.Fatal(err)
	}
	r := func(old, new string) []byte {
		if !bytes.Contains(base, []byte(old)) {
			t.Fatalf("%q is not in the canonical body", old)
		}
		return bytes.Replace(base, []byte(old), []byte(new), 1)
	}
	bundle, _ := json.Marshal(req.Bundle)
	key0, _ := json.Marshal(req.Keys[0].Key)
	pub, _ := json.Marshal(req.PublicKey)
	tm := fmt.Sprint(req.Time)
	return map[string][]byte{
		"canonical":             base,
		"unpadded":              func() []byte { c := req; c.Padding = ""; b, _ := json.Marshal(c); return b }(),
		"indented":              func() []byte { var b bytes.Buffer; _ = json.Indent(&b, base, "\r\n", "\t"); return b.Bytes() }(),
		"no keys":               func() []byte { c := req; c.Keys = nil; b, _ := json.Marshal(c); return b }(),
		"empty keys":            r(`"keys":[`, `"keys":[],"x":[`),
		"keys empty array":      func() []byte { c := req; c.Keys = []phoneapi.Key{}; b, _ := json.Marshal(c); return b }(),
		"empty object":          []byte(`{}`),
		"empty":                 nil,
		"array":                 []byte(`[]`),
		"null":                  []byte(`null`),
		"unicode space around":  append(append([]byte("\u00a0\v"), base...), "\u2028\f"...),
		"space inside":          r(`{"bundle":`, "{ \"bundle\" :\t"),
		"trailing object":       append(bytes.Clone(base), `{}`...),
		"trailing junk":         append(bytes.Clone(base), ` x`...),
		"trailing space":        append(bytes.Clone(base), " \n"...),
		"cut":                   base[:len(base)-1],
		"cut in padding":        base[:len(base)-20],
		"cut in bundle":         base[:20],
		"unknown field":         r(`{"bundle"`, `{"extra":1,"bundle"`),
		"unknown key field":     r(`"rolling_period"`, `"x":1,"rolling_period"`),
		"field twice":           r(`"time"`, `"time":1,"time"`),
		"key field twice":       r(`"rolling_period"`, `"rolling_period":1,"rolling_period"`),
		"keys twice":            r(`"keys"`, `"keys":null,"keys"`),
		"upper-case name":       r(`"time"`, `"TIME"`),
		"kelvin sign":           r(`"keys"`, "\"\u212aeys\""),
		"long s":                r(`"signature"`, "\"\u017fignature\""),
		"escaped name":          r(`"time"`, `"t\u0069me"`),
		"escaped base64":        r(`"public_key":"`, `"public_key":"\u0041`),
		"base64 newline escape": r(string(pub), string(pub[:5])+`\n`+string(pub[5:])),
		"base64 unpadded":       r(string(key0), strings.TrimRight(string(key0), `="`)+`"`),
		"base64 url":            r(string(bundle), strings.NewReplacer("+", "-", "/", "_").Replace(string(bundle))),
		"base64 junk":           r(string(key0), `"!!!!!!!!!!!!!!!!!!!!!!=="`),
		"bytes as array":        r(string(key0), `[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]`),
		"bytes null":            r(string(bundle), `null`),
		"bytes number":          r(string(bundle), `1`),
		"key 15 bytes":          r(string(key0), `"AAAAAAAAAAAAAAAAAAAA"`),
		"key 17 bytes":          r(string(key0), `"AAAAAAAAAAAAAAAAAAAAAA=="`[:22]+`A="`),
		"key object empty":      r(`"keys":[{`, `"keys":[{},{`),
		"key null":              r(`"keys":[`, `"keys":[null,`),
		"key not an object":     r(`"keys":[`, `"keys":[1,`),
		"keys object":           r(`"keys":[`, `"keys":{"a":[`),
		"keys trailing comma":   r(`}],"signature"`, `},],"signature"`),
		"member trailing comma": bytes.Replace(base, []byte(`"}`), []byte(`",}`), 1),
		"time null":             r(`"time":`+tm, `"time":null`),
		"time string":           r(`"time":`+tm, `"time":"`+tm+`"`),
		"time fraction":         r(`"time":`+tm, `"time":`+tm+`.0`),
		"time exponent":         r(`"time":`+tm, `"time":1e9`),
		"time leading zero":     r(`"time":`+tm, `"time":0`+tm),
		"time minus zero":       r(`"time":`+tm, `"time":-0`),
		"time zero":             r(`"time":`+tm, `"time":0`),
		"time negative":         r(`"time":`+tm, `"time":-5`),
		"time minus":            r(`"time":`+tm, `"time":-`),
		"time plus":             r(`"time":`+tm, `"time":+5`),
		"time max":              r(`"time":`+tm, fmt.Sprintf(`"time":%d`, int64(math.MaxInt64))),
		"time min":              r(`"time":`+tm, fmt.Sprintf(`"time":%d`, int64(math.MinInt64))),
		"time past max":         r(`"time":`+tm, `"time":9223372036854775808`),
		"time past min":         r(`"time":`+tm, `"time":-9223372036854775809`),
		"time 20 digits":        r(`"time":`+tm, `"time":10000000000000000000`),
		"time wraps to 1":       r(`"time":`+tm, `"time":18446744073709551617`),
		"cut in a number":       []byte(`{"time":1`),
		"time true":             r(`"time":`+tm, `"time":true`),
		"risk int32 max":        replaceRisk(t, base, "2147483647"),
		"risk int32 min":        replaceRisk(t, base, "-2147483648"),
		"risk past int32":       replaceRisk(t, base, "2147483648"),
		"risk below int32":      replaceRisk(t, base, "-2147483649"),
		"risk wraps to 3":       replaceRisk(t, base, "18446744073709551619"),
		"risk fraction":         replaceRisk(t, base, "1.5"),
		"risk null":             replaceRisk(t, base, "null"),
		"padding escapes":       r(`"padding":"`, `"padding":"\"\\\/\b\f\n\r\t\u00e9\uD800`),
		"padding hex bounds":    r(`"padding":"`, `"padding":" \u09af\u0AF0~`),
		"padding hex /":         r(`"padding":"`, `"padding":"\u/000`),
		"padding hex :":         r(`"padding":"`, `"padding":"\u:000`),
		"padding hex @":         r(`"padding":"`, `"padding":"\u@000`),
		"padding hex G":         r(`"padding":"`, `"padding":"\uG000`),
		"padding hex backquote": r(`"padding":"`, "\"padding\":\"\\u`000"),
		"padding hex g":         r(`"padding":"`, `"padding":"\ug000`),
		"padding bad escape":    r(`"padding":"`, `"padding":"\x`),
		"padding short unicode": r(`"padding":"`, `"padding":"\u00g0`),
		"padding control":       r(`"padding":"`, "\"padding\":\"\x01"),
		"padding DEL and UTF-8": r(`"padding":"`, "\"padding\":\"\x7f\u00e9\xff"),
		"padding null":          bytes.Replace(base, []byte(`"padding":"`+req.Padding+`"`), []byte(`"padding":null`), 1),
		"padding number":        bytes.Replace(base, []byte(`"padding":"`+req.Padding+`"`), []byte(`"padding":1`), 1),
		"padding open":          bytes.Replace(base, []byte(`"`+req.Padding+`"}`), []byte(`"`+req.Padding), 1),
		"padding backslash end": bytes.Replace(base, []byte(`"`+req.Padding+`"}`), []byte(`"`+req.Padding+`\`), 1),
		"padding unicode end":   bytes.Replace(base, []byte(`"`+req.Padding+`"}`), []byte(`"`+req.Padding+`\u00`), 1),
		"no colon":              r(`"time":`, `"time" `),
		"name not a string":     r(`"time":`, `time:`),
		"name open":             []byte(`{"time`),
		"no comma":              r(`,"time"`, ` "time"`),
		"key no colon":          r(`"rolling_period":`, `"rolling_period" `),
		"key name open":         r(`"keys":[{`, `"keys":[{"key`)[:len(`{"keys":[{"key`)+40],
		"key no comma":          r(`,"rolling_period"`, ` "rolling_period"`),
		"keys no comma":         r(`},{`, `} {`),
		"keys open":             r(`"keys":[`, `"keys":[`)[:bytes.Index(base, []byte(`"keys":[`))+8],
		"keys not closed":       r(`}],"signature"`, `},"signature"`),
		"31 keys":               func() []byte { c := wireUpload(rand.New(rand.NewPCG(3, 4)), 31, 10); return padBody(t, &c) }(),
		"30 keys":               func() []byte { c := wireUpload(rand.New(rand.NewPCG(3, 4)), 30, 10); return padBody(t, &c) }(),
		"largest bundle": func() []byte {
			c := wireUpload(rand.New(rand.NewPCG(3, 4)), 1, protocol.MaxBundleSize)
			return padBody(t, &c)
		}(),
		"bundle past the largest": func() []byte {
			c := wireUpload(rand.New(rand.NewPCG(3, 4)), 1, protocol.MaxBundleSize+1)
			return padBody(t, &c)
		}(),
		"bundle empty":     r(string(bundle), `""`),
		"public key short": r(string(pub), `"AAAA"`),
		"signature short":  func() []byte { c := req; c.Signature = c.Signature[:63]; b, _ := json.Marshal(c); return b }(),
		"signature long":   func() []byte { c := req; c.Signature = append(c.Signature, 1); b, _ := json.Marshal(c); return b }(),
		"public key long":  func() []byte { c := req; c.PublicKey = append(c.PublicKey, 1); b, _ := json.Marshal(c); return b }(),
		"bytes control":    r(string(bundle), "\"AA\x01A\""),
		"bytes open":       base[:bytes.Index(base, bundle)+10],
		"string for keys":  r(`"keys":[`, `"keys":"x","y":[`),
	}
}

// replaceRisk is base with its first key's transmission risk v.
func replaceRisk(t testing.TB, base []byte, v string) []byte {
	i := bytes.Index(base, []byte(`"transmission_risk":`))
	if i < 0 {
		t.Fatal("no transmission_risk")
	}
	i += len(`"transmission_risk":`)
	j := i + bytes.IndexAny(base[i:], ",}")
	return append(append(append([]byte(nil), base[:i]...), v...), base[j:]...)
}

// TestFastUploadAgrees: on the odd forms and refusals, the fast decoder
// declines or decodes what encoding/json decodes, and decodeUpload answers
// as decodeUploadStrict does, its refusal's cause included.
func TestFastUploadAgrees(t *testing.T) {
	t.Parallel()
	for name, b := range oddBodies(t) {
		if d := sameDecoding(b); d != "" {
			t.Errorf("%s: %s", name, d)
		}
	}
}

// TestSumIsUploadSum: the used mark's sum hashed from the canonical
// encoding is uploadSum's, for every key count and bundle size (here and
// in TestFastUploadTakes), and another time does not change it.
func TestSumIsUploadSum(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 8))
	for n := range exposure.MaxKeysPerUpload + 1 {
		req := wireUpload(r, n, 1+r.IntN(300))
		d, err := decodeUploadStrict(padBody(t, &req))
		if err != nil {
			t.Fatal(err)
		}
		want := uploadSum(&d.upload)
		if d.sum() != want {
			t.Errorf("%d keys: sum %x, uploadSum %x", n, d.sum(), want)
		}
		req.Time++
		later, err := decodeUploadStrict(padBody(t, &req))
		if err != nil {
			t.Fatal(err)
		}
		if later.sum() != want {
			t.Errorf("%d keys: signed a second later, another sum", n)
		}
	}
}

// TestFastUploadTakes: what phones send — json.Marshal's bodies, padded or
// not, of 0 to 30 keys and any bundle size — the fast decoder reads itself,
// and the forms it must decline it declines.
func TestFastUploadTakes(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 62 {
		req := wireUpload(r, i%31, 1+r.IntN(protocol.MaxBundleSize))
		body, _ := json.Marshal(req)
		if i%2 == 0 {
			body = padBody(t, &req)
		}
		d, ok := fastUpload(body)
		if !ok {
			t.Fatalf("declined a phone's body of %d keys", len(req.Keys))
		}
		ref, err := decodeUploadStrict(body)
		if err != nil {
			t.Fatal(err)
		}
		if diff := diffDecoded(ref, d); diff != "" {
			t.Fatalf("decoded otherwise (-strict +fast):\n%s", diff)
		}
		// The body's buffer goes back to the pool after decoding: nothing
		// decoded may point into it.
		for j := range body {
			body[j] = 'x'
		}
		if diff := diffDecoded(ref, d); diff != "" {
			t.Fatalf("the decoded upload changed with the body (-strict +fast):\n%s", diff)
		}
		if d.sum() != uploadSum(&d.upload) {
			t.Fatalf("%d keys: the sum from the canonical encoding is not uploadSum", len(req.Keys))
		}
	}
	odd := oddBodies(t)
	for _, name := range []string{"canonical", "unpadded", "indented", "no keys", "keys empty array", "space inside", "trailing space",
		"time minus zero", "time zero", "time negative", "time max", "time min", "risk int32 max", "risk int32 min", "padding escapes",
		"padding DEL and UTF-8", "padding hex bounds", "30 keys", "largest bundle"} {
		if _, ok := fastUpload(odd[name]); !ok {
			t.Errorf("%s: declined", name)
		}
	}
	for _, name := range []string{"empty keys", "unicode space around", "field twice", "key field twice", "keys twice", "upper-case name",
		"kelvin sign", "long s", "escaped name", "escaped base64", "base64 newline escape", "bytes as array", "bytes null", "key null",
		"time null", "time fraction", "time exponent", "time past max", "time past min", "time 20 digits", "risk past int32",
		"risk below int32", "risk null", "padding null", "31 keys", "bundle past the largest", "unknown field", "unknown key field",
		"trailing object", "trailing junk", "key object empty", "base64 unpadded", "base64 url", "key 17 bytes"} {
		if _, ok := fastUpload(odd[name]); ok {
			t.Errorf("%s: taken by the fast decoder", name)
		}
	}
}

// FuzzFastUpload is the differential fuzz of the fast decoder against
// encoding/json (sameDecoding), seeded with the odd forms.
func FuzzFastUpload(f *testing.F) {
	for _, b := range oddBodies(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if d := sameDecoding(b); d != "" {
			t.Fatal(d)
		}
	})
}

// TestReadBodyPooled: a body is read into a buffer used again — an upload's
// read allocates only the request's own reader, not the body — and a
// buffer a large body grew is not kept.
func TestReadBodyPooled(t *testing.T) {
	s := &Service{}
	e := echo.New()
	body := bytes.Repeat([]byte("="), phoneapi.UploadRequestBlock)
	read := func(b []byte) *bytes.Buffer {
		req := httptest.NewRequest(http.MethodPost, phoneapi.PathUploads, bytes.NewReader(b))
		buf, err := s.readBody(e.NewContext(req, httptest.NewRecorder()), phoneapi.MaxUploadRequestSize)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), b) {
			t.Fatal("read another body")
		}
		return buf
	}
	s.release(read(body))
	req := httptest.NewRequest(http.MethodPost, phoneapi.PathUploads, bytes.NewReader(body))
	c := e.NewContext(req, httptest.NewRecorder())
	allocs := testing.AllocsPerRun(20, func() {
		req.Body = io.NopCloser(bytes.NewReader(body))
		buf, err := s.readBody(c, phoneapi.MaxUploadRequestSize)
		if err != nil || buf.Len() != len(body) {
			t.Fatalf("read %v, %v", buf, err)
		}
		s.release(buf)
	})
	// The test's two readers, the size limit's reader and the error's
	// target; a body read anew adds its buffer and the buffer's bytes
	// (which the race detector's pool does now and then: CI runs -race).
	want := 4.0
	if raceDetector {
		want += 2
	}
	if allocs > want {
		t.Errorf("reading a pooled body: %v allocations, want at most %v", allocs, want)
	}
	big := read(make([]byte, phoneapi.MaxUploadRequestSize))
	if big.Cap() <= maxPooledBody {
		t.Fatalf("a body of the largest size fits %d, the pool's bound is %d", big.Cap(), maxPooledBody)
	}
	s.release(big)
	if got, _ := s.bodies.Get().(*bytes.Buffer); got == big {
		t.Error("a buffer past the bound was kept")
	}
}
