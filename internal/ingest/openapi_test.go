//go:build !mutation

package ingest_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/labstack/echo/v4"
	"go.yaml.in/yaml/v3"

	"github.com/vouch-nl/vouch/docs"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/ingest"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// openAPI is docs/openapi.yaml, read loosely.
type openAPI map[string]any

func loadOpenAPI(t *testing.T) openAPI {
	t.Helper()
	// Into a plain map: yaml decodes nested mappings as the outer type.
	var doc map[string]any
	if err := yaml.Unmarshal(docs.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	return openAPI(doc)
}

// at follows a path of keys through the document.
func (d openAPI) at(t *testing.T, path ...string) any {
	t.Helper()
	var cur any = map[string]any(d)
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("openapi.yaml: %s is not a mapping", strings.Join(path, "."))
		}
		if cur, ok = m[k]; !ok {
			t.Fatalf("openapi.yaml has no %s", strings.Join(path, "."))
		}
	}
	return cur
}

func (d openAPI) num(t *testing.T, path ...string) int {
	t.Helper()
	switch v := d.at(t, path...).(type) {
	case int:
		return v
	case float64:
		return int(v)
	}
	t.Fatalf("openapi.yaml: %s is not a number", strings.Join(path, "."))
	return 0
}

func (d openAPI) strings(t *testing.T, path ...string) []string {
	t.Helper()
	var out []string
	for _, v := range d.at(t, path...).([]any) {
		out = append(out, fmt.Sprint(v))
	}
	slices.Sort(out)
	return out
}

func (d openAPI) schema(t *testing.T, name string) (props []string, required []string) {
	t.Helper()
	for p := range d.at(t, "components", "schemas", name, "properties").(map[string]any) {
		props = append(props, p)
	}
	slices.Sort(props)
	if _, ok := d.at(t, "components", "schemas", name).(map[string]any)["required"]; ok {
		required = d.strings(t, "components", "schemas", name, "required")
	}
	return props, required
}

// without is the JSON object b without field name (in keys[0] when key).
func without(t *testing.T, b []byte, name string, inKey bool) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if inKey {
		delete(m["keys"].([]any)[0].(map[string]any), name)
	} else {
		delete(m, name)
	}
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOpenAPIMatchesTheHandlers checks what docs/openapi.yaml promises
// against what the handlers do: a required field is one without which a
// request is refused, and only those are; the enums are the values the
// handlers send and take; the bounds of numbers, lengths, counts and body
// sizes are where the handlers start refusing; every answer is padded to
// the documented block; and a failure inside the server is the documented
// 500 answer, without its cause.
func TestOpenAPIMatchesTheHandlers(t *testing.T) {
	t.Parallel()
	doc := loadOpenAPI(t)
	w := newWorld(t, nil)
	codes := map[string]bool{}
	statuses := map[string]map[int]bool{phoneapi.PathPickup: {}, phoneapi.PathUploads: {}}
	post := func(path string, body []byte, chaff string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, w.srv.URL+path, strings.NewReader(string(body)))
		if chaff != "" {
			req.Header.Set(phoneapi.HeaderChaff, chaff)
		}
		res, err := w.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b strings.Builder
		if _, err := fmt.Fprint(&b, ""); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 0, 8192)
		for {
			chunk := make([]byte, 4096)
			n, err := res.Body.Read(chunk)
			buf = append(buf, chunk[:n]...)
			if err != nil {
				break
			}
		}
		statuses[path][res.StatusCode] = true
		block := doc.num(t, "paths", path, "post", "requestBody", "x-response-pad-block")
		if len(buf)%block != 0 {
			t.Errorf("%s answered %d with %d bytes, not a multiple of %d", path, res.StatusCode, len(buf), block)
		}
		if res.StatusCode != http.StatusOK {
			codes[errorCode(buf)] = true
		}
		return res.StatusCode, buf
	}
	upload := func(r phoneapi.UploadRequest) []byte {
		b, _ := json.Marshal(r)
		return b
	}
	fresh := func(ks []phoneapi.Key) (phone, []byte, phoneapi.UploadRequest) {
		p := newPhone(t)
		bundle, _ := w.bundle(p, bundleOpts{})
		return p, bundle, p.uploadReq(bundle, ks, time.Now())
	}
	riskless := func(n int) []phoneapi.Key {
		ks := keys(t, n)
		for i := range ks {
			ks[i].TransmissionRisk = 0 // absent reads as 0: the signature stays good without it
		}
		return ks
	}

	// Required fields: without one the request is refused; without any
	// other it is not.
	t.Run("required", func(t *testing.T) {
		props, required := doc.schema(t, "PickupRequest")
		for _, f := range props {
			r := newPhone(t).pickupReq(time.Now())
			b, _ := json.Marshal(r)
			status, body := post(phoneapi.PathPickup, without(t, b, f, false), phoneapi.ChaffReal)
			if refused := status != http.StatusOK; refused != slices.Contains(required, f) {
				t.Errorf("pickup without %s: %d %s; openapi.yaml says required %v", f, status, errorCode(body), slices.Contains(required, f))
			}
		}
		props, required = doc.schema(t, "UploadRequest")
		for _, f := range props {
			_, _, r := fresh(riskless(2))
			status, body := post(phoneapi.PathUploads, without(t, upload(r), f, false), phoneapi.ChaffReal)
			if refused := status != http.StatusOK; refused != slices.Contains(required, f) {
				t.Errorf("upload without %s: %d %s; openapi.yaml says required %v", f, status, errorCode(body), slices.Contains(required, f))
			}
		}
		props, required = doc.schema(t, "Key")
		for _, f := range props {
			_, _, r := fresh(riskless(2))
			status, body := post(phoneapi.PathUploads, without(t, upload(r), f, true), phoneapi.ChaffReal)
			if refused := status != http.StatusOK; refused != slices.Contains(required, f) {
				t.Errorf("key without %s: %d %s; openapi.yaml says required %v", f, status, errorCode(body), slices.Contains(required, f))
			}
		}
		// Answers carry their required fields.
		for name, v := range map[string]any{
			"PickupResponse": phoneapi.PickupResponse{Status: phoneapi.StatusPending},
			"UploadResponse": phoneapi.UploadResponse{Status: phoneapi.StatusPublished},
			"ErrorResponse":  phoneapi.ErrorResponse{},
		} {
			b, _ := json.Marshal(v)
			var m map[string]any
			json.Unmarshal(b, &m)
			_, required := doc.schema(t, name)
			for _, f := range required {
				if _, ok := m[f]; !ok {
					t.Errorf("%s: required %s is not always sent", name, f)
				}
			}
		}
	})

	// The chaff header: required, "0" or "1".
	t.Run("X-Chaff", func(t *testing.T) {
		param := doc.at(t, "components", "parameters", "Chaff").(map[string]any)
		enum := doc.strings(t, "components", "parameters", "Chaff", "schema", "enum")
		if param["required"] != true || !cmp.Equal(enum, []string{phoneapi.ChaffReal, phoneapi.ChaffFake}) {
			t.Fatalf("X-Chaff: required %v, enum %v", param["required"], enum)
		}
		for _, h := range append(enum, "", "2", "00") {
			b, _ := json.Marshal(newPhone(t).pickupReq(time.Now()))
			status, body := post(phoneapi.PathPickup, b, h)
			if ok := status == http.StatusOK; ok != slices.Contains(enum, h) {
				t.Errorf("X-Chaff %q: %d %s", h, status, errorCode(body))
			}
		}
	})

	// Numbers, lengths and counts: the last value accepted and the first
	// refused are the documented bounds.
	t.Run("bounds", func(t *testing.T) {
		key := []string{"components", "schemas", "Key", "properties"}
		pMin, pMax := doc.num(t, append(key, "rolling_period", "minimum")...), doc.num(t, append(key, "rolling_period", "maximum")...)
		rMin, rMax := doc.num(t, append(key, "transmission_risk", "minimum")...), doc.num(t, append(key, "transmission_risk", "maximum")...)
		set := func(k phoneapi.Key, period, risk int) phoneapi.Key {
			k.RollingStartIntervalNumber = exposure.IntervalNumber(time.Now().UTC().Truncate(24*time.Hour).Add(-24*time.Hour)) + int32(exposure.MaxRollingPeriod-period)
			k.RollingPeriod, k.TransmissionRisk = int32(period), int32(risk)
			return k
		}
		ks := keys(t, 2)
		ks[0], ks[1] = set(ks[0], pMin, rMin), set(ks[1], pMax, rMax)
		ks[1].RollingStartIntervalNumber -= exposure.MaxRollingPeriod // another day
		if _, _, r := fresh(ks); true {
			if status, body := post(phoneapi.PathUploads, upload(r), phoneapi.ChaffReal); status != http.StatusOK {
				t.Errorf("keys at the documented bounds: %d %s", status, body)
			}
		}
		p := newPhone(t)
		bundle, _ := w.bundle(p, bundleOpts{})
		refused := func(what string, ks []phoneapi.Key) {
			status, body := post(phoneapi.PathUploads, upload(p.uploadReq(bundle, ks, time.Now())), phoneapi.ChaffReal)
			if status != http.StatusBadRequest {
				t.Errorf("%s: %d %s, want 400", what, status, errorCode(body))
			}
		}
		refused("period below the minimum", []phoneapi.Key{set(keys(t, 1)[0], pMin-1, rMin)})
		refused("period above the maximum", []phoneapi.Key{set(keys(t, 1)[0], pMax+1, rMin)})
		refused("risk below the minimum", []phoneapi.Key{set(keys(t, 1)[0], pMax, rMin-1)})
		refused("risk above the maximum", []phoneapi.Key{set(keys(t, 1)[0], pMax, rMax+1)})
		up := []string{"components", "schemas", "UploadRequest", "properties"}
		kMin, kMax := doc.num(t, append(up, "keys", "minItems")...), doc.num(t, append(up, "keys", "maxItems")...)
		many, err := phoneclient.RandomKeys(kMax, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, _, r := fresh(phoneclient.WireKeys(many)); true {
			if status, body := post(phoneapi.PathUploads, upload(r), phoneapi.ChaffReal); status != http.StatusOK {
				t.Errorf("%d keys: %d %s", kMax, status, errorCode(body))
			}
		}
		refused(fmt.Sprintf("%d keys", kMin-1), keys(t, kMin-1))
		refused(fmt.Sprintf("%d keys", kMax+1), keys(t, kMax+1))
		// Byte strings: the documented base64 lengths are the sizes taken.
		for _, tt := range []struct {
			path []string
			min  int
			max  int
		}{
			{append(up, "public_key"), ed25519.PublicKeySize, ed25519.PublicKeySize},
			{append(up, "signature"), ed25519.SignatureSize, ed25519.SignatureSize},
			{append(up, "bundle"), 1, protocol.MaxBundleSize},
			{append(key, "key"), exposure.KeySize, exposure.KeySize},
			{[]string{"components", "schemas", "PickupRequest", "properties", "public_key"}, ed25519.PublicKeySize, ed25519.PublicKeySize},
			{[]string{"components", "schemas", "PickupRequest", "properties", "signature"}, ed25519.SignatureSize, ed25519.SignatureSize},
		} {
			lo, hi := doc.num(t, append(tt.path, "minLength")...), doc.num(t, append(tt.path, "maxLength")...)
			if lo != base64.StdEncoding.EncodedLen(tt.min) || hi != base64.StdEncoding.EncodedLen(tt.max) {
				t.Errorf("%s: length %d..%d, want the base64 of %d..%d bytes", strings.Join(tt.path, "."), lo, hi, tt.min, tt.max)
			}
		}
		big := p.uploadReq(make([]byte, protocol.MaxBundleSize+1), keys(t, 1), time.Now())
		if status, body := post(phoneapi.PathUploads, upload(big), phoneapi.ChaffReal); status != http.StatusBadRequest || errorCode(body) != "malformed" {
			t.Errorf("a bundle past the maximum: %d %s, want 400 malformed", status, errorCode(body))
		}
		// Bodies: the documented maximum is taken, a byte more is 413;
		// the documented blocks are phoneapi's.
		for _, tt := range []struct {
			path            string
			max, block, res int
			body            func(size int) []byte
		}{
			{phoneapi.PathPickup, phoneapi.MaxPickupRequestSize, phoneapi.PickupRequestBlock, phoneapi.PickupResponseBlock, func(size int) []byte {
				r := newPhone(t).pickupReq(time.Now())
				b, _ := json.Marshal(r)
				r.Padding = strings.Repeat("=", size-len(b))
				b, _ = json.Marshal(r)
				return b
			}},
			{phoneapi.PathUploads, phoneapi.MaxUploadRequestSize, phoneapi.UploadRequestBlock, phoneapi.UploadResponseBlock, func(size int) []byte {
				_, _, r := fresh(keys(t, 14))
				b, _ := json.Marshal(r)
				r.Padding = strings.Repeat("=", size-len(b))
				b, _ = json.Marshal(r)
				return b
			}},
		} {
			body := []string{"paths", tt.path, "post", "requestBody"}
			if got := doc.num(t, append(body, "x-max-bytes")...); got != tt.max {
				t.Errorf("%s: x-max-bytes %d, the handler's %d", tt.path, got, tt.max)
			}
			if got := doc.num(t, append(body, "x-pad-block")...); got != tt.block {
				t.Errorf("%s: x-pad-block %d, phoneapi's %d", tt.path, got, tt.block)
			}
			if got := doc.num(t, append(body, "x-response-pad-block")...); got != tt.res {
				t.Errorf("%s: x-response-pad-block %d, phoneapi's %d", tt.path, got, tt.res)
			}
			if status, b := post(tt.path, tt.body(tt.max), phoneapi.ChaffReal); status != http.StatusOK {
				t.Errorf("%s: a body of the maximum, %d bytes: %d %s", tt.path, tt.max, status, errorCode(b))
			}
			if status, b := post(tt.path, tt.body(tt.max+1), phoneapi.ChaffReal); status != http.StatusRequestEntityTooLarge {
				t.Errorf("%s: a body of %d bytes: %d %s, want 413", tt.path, tt.max+1, status, errorCode(b))
			}
		}
	})

	// The 500 answer: a failure inside the server is the documented
	// refusal, padded, its cause logged and not answered.
	t.Run("500", func(t *testing.T) {
		f := newWorld(t, nil)
		f.echo.POST("/v1/fail", func(echo.Context) error { return errors.New("secret internal detail") })
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/v1/fail", nil)
		req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
		res, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var e phoneapi.ErrorResponse
		raw := make([]byte, 4096)
		n, _ := res.Body.Read(raw)
		if err := json.Unmarshal(raw[:n], &e); err != nil || res.StatusCode != http.StatusInternalServerError || e.Error != "internal" ||
			strings.Contains(string(raw[:n]), "secret") || n%phoneapi.UploadResponseBlock != 0 {
			t.Errorf("a failing handler: %d %q (%d bytes)", res.StatusCode, raw[:n], n)
		}
		if !strings.Contains(f.logs.String(), "secret internal detail") {
			t.Error("the cause was not logged")
		}
		codes["internal"] = true
		for _, path := range []string{phoneapi.PathPickup, phoneapi.PathUploads} {
			ref := doc.at(t, "paths", path, "post", "responses", "500", "$ref")
			if ref != "#/components/responses/Error" {
				t.Errorf("%s: the 500 answer is %v", path, ref)
			}
			statuses[path][http.StatusInternalServerError] = true
		}
	})

	// 429: says when to come back.
	t.Run("429", func(t *testing.T) {
		f := newWorld(t, func(c *ingest.Config) { c.RatePerSecond, c.RateBurst = 0.5, 1 })
		for range 2 {
			f.pickup(newPhone(t).pickupReq(time.Now()), false)
		}
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+phoneapi.PathPickup, nil)
		req.Header.Set(phoneapi.HeaderChaff, phoneapi.ChaffReal)
		res, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		min := doc.num(t, "components", "responses", "RateLimited", "headers", "Retry-After", "schema", "minimum")
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); res.StatusCode != http.StatusTooManyRequests || err != nil || s < min {
			t.Errorf("rate-limited: %d, Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
		}
		for _, path := range []string{phoneapi.PathPickup, phoneapi.PathUploads} {
			if ref := doc.at(t, "paths", path, "post", "responses", "429", "$ref"); ref != "#/components/responses/RateLimited" {
				t.Errorf("%s: the 429 answer is %v", path, ref)
			}
			statuses[path][http.StatusTooManyRequests] = true
		}
		codes["rate-limited"] = true
	})

	// Enums: the statuses sent, and every error code the handlers have.
	if got := doc.strings(t, "components", "schemas", "PickupResponse", "properties", "status", "enum"); !cmp.Equal(got, []string{phoneapi.StatusPending, phoneapi.StatusReady}) {
		t.Errorf("PickupResponse.status enum %v", got)
	}
	if got := doc.strings(t, "components", "schemas", "UploadResponse", "properties", "status", "enum"); !cmp.Equal(got, []string{phoneapi.StatusPublished}) {
		t.Errorf("UploadResponse.status enum %v", got)
	}
	enum := doc.strings(t, "components", "schemas", "ErrorResponse", "properties", "error", "enum")
	if diff := cmp.Diff(ingest.ErrorCodes(), enum); diff != "" {
		t.Errorf("ErrorResponse.error enum (-handlers +openapi.yaml):\n%s", diff)
	}
	for c := range codes {
		if !slices.Contains(enum, c) {
			t.Errorf("the handlers answered error %q, which the enum lacks", c)
		}
	}
	// Every status answered is documented for its operation.
	for path, seen := range statuses {
		ops := doc.at(t, "paths", path, "post", "responses").(map[string]any)
		for s := range seen {
			if _, ok := ops[strconv.Itoa(s)]; !ok {
				t.Errorf("%s answered %d, which openapi.yaml does not document", path, s)
			}
		}
	}
}
