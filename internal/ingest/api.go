package ingest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vouch-nl/vouch/docs"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneapi"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
)

// apiError is a refusal as the phone sees it: a status, a stable code and
// a text for a phone's developer. cause goes to the log, never out.
type apiError struct {
	status int
	code   string
	msg    string
	cause  error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return e.code + ": " + e.cause.Error()
	}
	return e.code
}

func (e *apiError) Unwrap() error { return e.cause }

var (
	errMalformed   = &apiError{status: http.StatusBadRequest, code: "malformed", msg: "the request is not one JSON object of the documented fields"}
	errTooLarge    = &apiError{status: http.StatusRequestEntityTooLarge, code: "too-large", msg: "the request body is too large"}
	errPhoneSig    = &apiError{status: http.StatusForbidden, code: "phone-signature-invalid", msg: "the phone's signature does not verify"}
	errStale       = &apiError{status: http.StatusForbidden, code: "time-skew", msg: "the signed time is not within 5 minutes of the server's; check the phone's clock"}
	errReplay      = &apiError{status: http.StatusConflict, code: "replay", msg: "this authorization was already used for another upload"}
	errUnavailable = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", msg: "the service cannot take this now; try again later"}
	errLicense     = &apiError{status: http.StatusForbidden, code: string(protocol.ReasonLicenseNotActive), msg: "the clinician who vouched may not vouch now"}
)

// blockOf is the padding block of the responses of c's route, 0 outside
// the phone API.
func blockOf(c echo.Context) int {
	p := c.Path()
	if p == "" || strings.HasSuffix(p, "/*") {
		p = c.Request().URL.Path
	}
	switch {
	case p == phoneapi.PathPickup:
		return phoneapi.PickupResponseBlock
	case p == phoneapi.PathUploads:
		return phoneapi.UploadResponseBlock
	case strings.HasPrefix(p, "/v1/"):
		return phoneapi.UploadResponseBlock
	}
	return 0
}

// refuse answers err as a padded ErrorResponse and logs its cause under
// the request id (never the payload).
func (s *Service) refuse(c echo.Context, err error, block int) {
	if c.Response().Committed {
		return
	}
	var ae *apiError
	var he *echo.HTTPError
	var se *server.Error
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &se) && se.Status == http.StatusServiceUnavailable:
		// The listener's own refusal (no slot for a body in time, as
		// while the bus elects a leader): the phone's "try again later",
		// with the Retry-After the listener set.
		ae = &apiError{status: errUnavailable.status, code: errUnavailable.code, msg: errUnavailable.msg, cause: err}
	case errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge:
		ae = errTooLarge
	case errors.As(err, &he) && he.Code < 500:
		ae = &apiError{status: he.Code, code: httpCode(he.Code), msg: http.StatusText(he.Code)}
	default:
		ae = &apiError{status: http.StatusInternalServerError, code: codeInternal, msg: "something went wrong on the server", cause: err}
	}
	reqID := c.Response().Header().Get(echo.HeaderXRequestID)
	if ae.status >= 500 {
		s.log.Error("phone API request failed", "request_id", reqID, "route", c.Path(), "code", ae.code, "err", err)
	} else {
		s.log.Info("phone API request refused", "request_id", reqID, "route", c.Path(), "code", ae.code, "err", err)
	}
	writePadded(c, ae.status, &phoneapi.ErrorResponse{Error: ae.code, Message: ae.msg}, block)
}

// writePadded answers v (a response type with a Padding field) padded to
// the smallest multiple of block that holds it.
func writePadded(c echo.Context, status int, v any, block int) {
	body, err := padded(v, block)
	if err != nil {
		c.Response().WriteHeader(http.StatusInternalServerError)
		return
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "no-store")
	_ = c.Blob(status, echo.MIMEApplicationJSON, body)
}

func padded(v any, block int) ([]byte, error) {
	set := func(p string) {
		switch r := v.(type) {
		case *phoneapi.PickupResponse:
			r.Padding = p
		case *phoneapi.UploadResponse:
			r.Padding = p
		case *phoneapi.ErrorResponse:
			r.Padding = p
		}
	}
	set("")
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	// "=" needs no escape in JSON: n padding characters add n bytes.
	set(phoneapi.Padding(phoneapi.PadLen(len(b), block)))
	return json.Marshal(v)
}

// filterIPs refuses clients outside the allowed networks before anything
// else is done for them.
func (s *Service) filterIPs(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		ip, err := netip.ParseAddr(c.RealIP())
		if err != nil || !s.nets.admits(ip) {
			return echo.ErrForbidden
		}
		return next(c)
	}
}

// readBody reads at most limit bytes of the request body into a buffer of
// s.bodies; the caller gives it back with s.release once nothing it
// decoded points into it (both decoders copy what they keep). An upload's
// 8 KiB body was read into a new slice grown five times.
func (s *Service) readBody(c echo.Context, limit int64) (*bytes.Buffer, error) {
	buf, _ := s.bodies.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	if n := c.Request().ContentLength; n > 0 && n <= limit {
		buf.Grow(int(n) + bytes.MinRead) // ReadFrom wants MinRead spare to read on
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(c.Response(), c.Request().Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		s.release(buf)
		return nil, errTooLarge
	case err != nil:
		s.release(buf)
		return nil, &apiError{status: http.StatusBadRequest, code: "malformed", msg: errMalformed.msg, cause: err}
	}
	return buf, nil
}

// release gives a body's buffer back to s.bodies, unless a large body
// grew it past what requests need (kept, it would hold that memory).
func (s *Service) release(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledBody {
		s.bodies.Put(buf)
	}
}

// maxPooledBody is the largest buffer kept: an upload of the largest size.
const maxPooledBody = phoneapi.MaxUploadRequestSize + 2*bytes.MinRead

// errTrailing is data after the one JSON object.
var errTrailing = errors.New("data after the JSON object")

// decodeStrict decodes exactly one JSON object of v's fields: an unknown
// field, a second value or trailing data is refused.
func decodeStrict(b []byte, v any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return jsonCause(err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return errTrailing
	}
	return nil
}

// jsonCause says what was wrong with a body without quoting it: the cause
// is logged, and a body's text must never reach a log.
func jsonCause(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("JSON syntax error at offset %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Errorf("JSON field %q has the wrong type", te.Field) // a field of ours, not the body's text
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return errors.New("unknown JSON field")
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return errors.New("JSON cut short")
	}
	return errors.New("not valid JSON (a value of the wrong form)")
}

// chaffOf reads the X-Chaff header, which every request must carry: "0"
// real, "1" chaff; anything else is malformed.
func chaffOf(c echo.Context) (bool, error) {
	switch c.Request().Header.Get(phoneapi.HeaderChaff) {
	case phoneapi.ChaffReal:
		return false, nil
	case phoneapi.ChaffFake:
		return true, nil
	}
	return false, errChaffHeader
}

var errChaffHeader = &apiError{status: http.StatusBadRequest, code: errMalformed.code,
	msg: "the X-Chaff header must be 0 (real) or 1 (chaff)", cause: errors.New("no valid X-Chaff header")}

// ErrorCodes are every ErrorResponse.error the API answers (the enum of
// docs/openapi.yaml): its own, the protocol's verdicts on a bundle, and
// the refusals of the edge (IP filter, unknown path or method).
func ErrorCodes() []string {
	codes := []string{errMalformed.code, errTooLarge.code, errPhoneSig.code, errStale.code, errReplay.code,
		errUnavailable.code, errLicense.code, codeKeysInvalid, codeRateLimited, codeInternal,
		httpCode(http.StatusForbidden), httpCode(http.StatusNotFound), httpCode(http.StatusMethodNotAllowed)}
	for _, r := range protocol.Reasons() {
		if r != protocol.ReasonOK {
			codes = append(codes, string(r))
		}
	}
	slices.Sort(codes)
	return slices.Compact(codes)
}

const (
	codeKeysInvalid = "keys-invalid"
	codeRateLimited = "rate-limited"
	codeInternal    = "internal"
)

// httpCode is the code of a refusal of the HTTP layer: its status text.
func httpCode(status int) string {
	return strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "-"))
}

// busCtx bounds one wait for the bus; a phone gets 503 past it.
func (s *Service) busCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.BusTimeout)
}

// AuthorizationKey is where the back office puts the bundle of the phone
// with code (backoffice.BucketKey): the code in hex.
func AuthorizationKey(code phonecode.Code) string { return hex.EncodeToString(code[:]) }

// decodedPickup is a pickup request that decoded and has the right shape.
type decodedPickup struct {
	phone ed25519.PublicKey
	at    time.Time
	sig   []byte
}

// decodePickup decodes a pickup request strictly.
func decodePickup(b []byte) (*decodedPickup, error) {
	var req phoneapi.PickupRequest
	if err := decodeStrict(b, &req); err != nil {
		return nil, err
	}
	if len(req.PublicKey) != ed25519.PublicKeySize || len(req.Signature) != ed25519.SignatureSize {
		return nil, errors.New("public key or signature of the wrong size")
	}
	return &decodedPickup{phone: req.PublicKey, at: time.Unix(req.Time, 0), sig: req.Signature}, nil
}

// checkPhone checks the phone's signature over msg and its time.
func checkPhone(phone ed25519.PublicKey, msg, sig []byte, at, now time.Time) error {
	if d := now.Sub(at); d > protocol.PhoneClockSkew || d < -protocol.PhoneClockSkew {
		return errStale
	}
	if !protocol.VerifyPhone(phone, msg, sig, at, now) {
		return errPhoneSig
	}
	return nil
}

// pickup answers whether the phone was vouched for, with the bundle once it
// was. Chaff does the same work and is always pending.
func (s *Service) pickup(c echo.Context) error {
	chaff, err := chaffOf(c)
	if err != nil {
		return s.countPickup(err)
	}
	body, err := s.readBody(c, phoneapi.MaxPickupRequestSize)
	if err != nil {
		return s.countPickup(err)
	}
	req, err := decodePickup(body.Bytes())
	s.release(body)
	if err != nil {
		return s.countPickup(&apiError{status: errMalformed.status, code: errMalformed.code, msg: errMalformed.msg, cause: err})
	}
	now := s.now()
	if err := checkPhone(req.phone, protocol.PickupMessage(req.phone, req.at), req.sig, req.at, now); err != nil {
		return s.countPickup(err)
	}
	code := phonecode.FromPublicKey(req.phone)
	ctx, cancel := s.busCtx(c.Request().Context())
	defer cancel()
	var bundle []byte
	e, err := s.auths.Get(ctx, AuthorizationKey(code))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return s.countPickup(unavailable(err))
	case !chaff:
		bundle = e.Value()
	}
	res := &phoneapi.PickupResponse{Status: phoneapi.StatusPending}
	// Both answers are encoded whichever is sent (the other with the
	// decoy's bundle, or none), so that encoding a bundle does not make
	// ready answers slower than pending and chaff ones.
	other := &phoneapi.PickupResponse{Status: phoneapi.StatusReady, Bundle: s.decoy.bundle}
	if bundle != nil {
		res, other = other, res
		res.Bundle = bundle
	}
	_, _ = padded(other, phoneapi.PickupResponseBlock)
	s.countPickup(nil)
	writePadded(c, http.StatusOK, res, phoneapi.PickupResponseBlock)
	return nil
}

// countPickup and countUpload count a request's outcome — accepted,
// refused or unavailable — for chaff and real alike: a count that moved for
// real requests only would tell an observer which of the requests it saw
// were real. Why a request was refused is in the log; how many uploads
// were real is the readers' and the exports' to count.
func (s *Service) countPickup(err error) error {
	s.metrics.pickups.WithLabelValues(outcome(err)).Inc()
	return err
}

func (s *Service) countUpload(err error) error {
	s.metrics.uploads.WithLabelValues(outcome(err)).Inc()
	return err
}

func outcome(err error) string {
	var ae *apiError
	switch {
	case err == nil:
		return "accepted"
	case errors.As(err, &ae) && ae.status < 500:
		return "refused"
	}
	return "unavailable"
}

// decodedUpload is an upload request that decoded and has the right shape.
type decodedUpload struct {
	upload protocol.Upload
	sig    []byte
	canon  []byte // upload.Marshal(): what the phone signed
}

// decodeUpload decodes an upload request strictly and checks its shape:
// key and signature sizes, at most exposure.MaxKeysPerUpload keys of
// exposure.KeySize bytes. The GAEN rules that depend on time are
// exposure.Validate's. A body in the form phones send is read by the fast
// decoder; any other, and every refusal, by decodeUploadStrict, which is
// the reference of what is taken.
func decodeUpload(b []byte) (*decodedUpload, error) {
	if d, ok := fastUpload(b); ok {
		return d, nil
	}
	return decodeUploadStrict(b)
}

// decodeUploadStrict is decodeUpload through encoding/json (decodeStrict).
func decodeUploadStrict(b []byte) (*decodedUpload, error) {
	var req phoneapi.UploadRequest
	if err := decodeStrict(b, &req); err != nil {
		return nil, err
	}
	switch {
	case len(req.PublicKey) != ed25519.PublicKeySize || len(req.Signature) != ed25519.SignatureSize:
		return nil, errors.New("public key or signature of the wrong size")
	case len(req.Bundle) == 0 || len(req.Bundle) > protocol.MaxBundleSize:
		return nil, errors.New("no bundle, or a bundle too large")
	case len(req.Keys) > exposure.MaxKeysPerUpload:
		// Before Marshal, which counts keys in one byte.
		return nil, exposure.ErrTooManyKeys
	}
	keys := make([]exposure.Key, len(req.Keys))
	for i, k := range req.Keys {
		if len(k.Key) != exposure.KeySize {
			return nil, fmt.Errorf("key %d: not %d bytes", i, exposure.KeySize)
		}
		copy(keys[i].Data[:], k.Key)
		keys[i].RollingStart, keys[i].RollingPeriod, keys[i].TransmissionRisk = k.RollingStartIntervalNumber, k.RollingPeriod, k.TransmissionRisk
	}
	d := &decodedUpload{upload: protocol.Upload{Bundle: req.Bundle, Phone: req.PublicKey, At: time.Unix(req.Time, 0), Keys: keys}, sig: req.Signature}
	d.canon = d.upload.Marshal()
	return d, nil
}

// upload verifies an upload completely and publishes its keys.
//
// The used mark decides a retry: an upload whose bundle, phone key and keys
// are those of a marked upload (the same bytes again, or signed again at a
// later time) passed every check when it was marked, so it is published
// however long ago that was — the phone got 503 or no answer, and nothing
// it was told is undone. Every other upload is checked in full.
//
// Chaff goes through the same steps with the same work: decoding, the
// phone's signature and time, the key rules, a bundle verification (the
// decoy's), the license lookup, and the same three bus round trips — the
// mark's lookup, a write and a publish, stored where no reader looks
// (ChaffBucket, ChaffStream) and gone within minutes.
func (s *Service) upload(c echo.Context) error {
	chaff, err := chaffOf(c)
	if err != nil {
		return s.countUpload(err)
	}
	body, err := s.readBody(c, phoneapi.MaxUploadRequestSize)
	if err != nil {
		return s.countUpload(err)
	}
	req, err := decodeUpload(body.Bytes())
	s.release(body)
	if errors.Is(err, exposure.ErrTooManyKeys) {
		return s.countUpload(&apiError{status: http.StatusBadRequest, code: codeKeysInvalid, msg: err.Error(), cause: err})
	}
	if err != nil {
		return s.countUpload(&apiError{status: errMalformed.status, code: errMalformed.code, msg: errMalformed.msg, cause: err})
	}
	now := s.now()
	u := &req.upload
	if !ed25519.Verify(u.Phone, req.canon, req.sig) {
		return s.countUpload(errPhoneSig)
	}
	// The upload's bus round trips are tried again through a leader
	// election, all of them within RetryWithin: a phone waits 30 s.
	ctx, cancel := context.WithTimeout(c.Request().Context(), bus.RetryWithin)
	defer cancel()
	sum := req.sum()
	st := statementOf(u.Bundle)
	var aid [protocol.AuthorizationIDLen]byte
	if chaff || st == nil {
		// No authorization to look up: a random one, never marked.
		_, _ = randRead(aid[:])
	} else {
		aid = st.AuthorizationID
	}
	id := hex.EncodeToString(aid[:])
	retry, err := s.marked(ctx, id, sum[:])
	if err != nil {
		return s.countUpload(unavailable(err))
	}
	if !retry {
		if err := checkTime(u.At, now); err != nil {
			return s.countUpload(err)
		}
		if err := exposure.Validate(u.Keys, now, s.cfg.MaxAgeDays); err != nil {
			// The rule's text is written for a phone's developer.
			return s.countUpload(&apiError{status: http.StatusBadRequest, code: codeKeysInvalid, msg: err.Error(), cause: err})
		}
	}
	// The bundle is verified for a retry too (its answer is not needed: it
	// was verified when marked), so that a retry costs what a first upload
	// does.
	var res *protocol.Result
	if chaff {
		err = s.decoy.verify()
	} else {
		res, err = s.verifier.Verify(u.Bundle, u.Phone, now)
	}
	if !retry && err != nil {
		reason := protocol.Verdict(err)
		return s.countUpload(&apiError{status: http.StatusForbidden, code: string(reason), msg: reason.Text("en"), cause: err})
	}
	if !retry {
		who := s.decoy.uzi
		if !chaff {
			who = res.Identity.UZI
		}
		ok, err := s.licenses.mayVouch(who, now)
		switch {
		case err != nil:
			return s.countUpload(unavailable(err))
		case !ok && !chaff:
			return s.countUpload(errLicense)
		}
	}
	if chaff || retry {
		err = s.chaffWrite(ctx, sum[:])
	} else {
		err = s.markUsed(ctx, id, sum[:])
	}
	if err != nil {
		return s.countUpload(err)
	}
	rec := exposure.Record{AuthorizationID: aid, Received: exposure.Coarse(now), Keys: u.Keys}
	if st != nil {
		rec.SymptomOnset = st.SymptomOnset
	}
	if chaff {
		err = s.chaffPublish(ctx, rec.Marshal())
	} else {
		// The authorization id is the message id, the same at every try
		// and at the phone's own retry: the stream keeps one.
		_, err = bus.PublishOnce(ctx, s.js, s.retry, exposure.Stream, exposure.Subject, id, rec.Marshal())
	}
	if err != nil {
		// The retries are spent. The mark stays: the phone's retry of this
		// upload publishes.
		return s.countUpload(unavailable(err))
	}
	s.countUpload(nil)
	writePadded(c, http.StatusOK, &phoneapi.UploadResponse{Status: phoneapi.StatusPublished}, phoneapi.UploadResponseBlock)
	return nil
}

// unavailable is a 503 for a bus that did not answer.
func unavailable(cause error) *apiError {
	return &apiError{status: errUnavailable.status, code: errUnavailable.code, msg: errUnavailable.msg, cause: cause}
}

// checkTime checks the phone's signed time against the server's.
func checkTime(at, now time.Time) error {
	if d := now.Sub(at); d > protocol.PhoneClockSkew || d < -protocol.PhoneClockSkew {
		return errStale
	}
	return nil
}

// sum is uploadSum(&d.upload), hashed from the canonical encoding the
// phone's signature was checked on, with its time's eight bytes as zeros,
// in place of encoding the upload a second time. In Upload.Marshal the
// time comes just before the key count (one byte) and the keys (33 bytes
// each); TestSumIsUploadSum holds the two equal.
func (d *decodedUpload) sum() [sha256.Size]byte {
	at := len(d.canon) - 1 - uploadKeyLen*len(d.upload.Keys) - 8
	h := sha256.New()
	h.Write(d.canon[:at])
	h.Write(make([]byte, 8))
	h.Write(d.canon[at+8:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// uploadKeyLen is a key's length in Upload.Marshal: its data, the rolling
// start and period as int64, the risk as one byte.
const uploadKeyLen = exposure.KeySize + 8 + 8 + 1

// uploadSum is what the used mark holds: SHA-256 of the canonical upload
// with its time left out, so that the same bundle, phone key and keys
// (in the same order) signed again later are the same upload.
func uploadSum(u *protocol.Upload) [sha256.Size]byte {
	c := *u
	c.At = time.Unix(0, 0)
	return sha256.Sum256(c.Marshal())
}

// statementOf parses a bundle's statement without verifying anything, nil
// when it does not parse: it names the authorization whose mark is looked
// up, and the mark was made only after the same bytes were verified.
func statementOf(bundle []byte) *protocol.Statement {
	b, err := protocol.ParseBundle(bundle)
	if err != nil {
		return nil
	}
	st, err := protocol.ParseStatement(b.Statement)
	if err != nil {
		return nil
	}
	return st
}

// marked reports whether the authorization id is marked used by the upload
// whose sum is sum.
func (s *Service) marked(ctx context.Context, id string, sum []byte) (bool, error) {
	var e jetstream.KeyValueEntry
	err := s.retry.Do(ctx, func(ctx context.Context) (err error) {
		e, err = s.used.Get(ctx, id)
		return err
	})
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	return subtle.ConstantTimeCompare(e.Value(), sum) == 1, nil
}

// markUsed marks the authorization id used by the upload whose sum is sum,
// atomically: the first upload creates the mark; the same upload again
// (two at once) finds its own sum and goes on; another upload with it is a
// replay.
//
// A create whose answer was lost in a leader election is tried again: if
// the first try landed, the next finds the upload's own sum, so the mark
// is made once either way.
func (s *Service) markUsed(ctx context.Context, id string, sum []byte) error {
	err := s.retry.DoOn(ctx, s.js, "KV_"+exposure.UsedBucket, func(ctx context.Context) error {
		_, err := s.used.Create(ctx, id, sum)
		return err
	})
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return unavailable(err)
	}
	var e jetstream.KeyValueEntry
	err = s.retry.Do(ctx, func(ctx context.Context) (err error) {
		e, err = s.used.Get(ctx, id)
		return err
	})
	if err != nil {
		return unavailable(err)
	}
	if subtle.ConstantTimeCompare(e.Value(), sum) != 1 {
		return errReplay
	}
	return nil
}

// chaffWrite is the write of chaff (and of a retry, whose mark exists): a
// mark of a random id in the chaff bucket, which a real mark costs — the
// same write, stored on the same kind of store — and which no reader
// reads; its entries expire within minutes.
func (s *Service) chaffWrite(ctx context.Context, sum []byte) error {
	var r [protocol.AuthorizationIDLen]byte
	_, _ = randRead(r[:])
	err := s.retry.DoOn(ctx, s.js, "KV_"+ChaffBucket, func(ctx context.Context) error {
		_, err := s.chaffMarks.Create(ctx, hex.EncodeToString(r[:]), sum)
		return err
	})
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) { // a try that landed
		return unavailable(err)
	}
	return nil
}

// chaffPublish is chaff's publish: the record to the chaff stream, which
// costs what a real publish does and which no reader consumes.
func (s *Service) chaffPublish(ctx context.Context, rec []byte) error {
	var r [protocol.AuthorizationIDLen]byte
	_, _ = randRead(r[:])
	_, err := bus.PublishOnce(ctx, s.js, s.retry, ChaffStream, ChaffSubject, hex.EncodeToString(r[:]), rec)
	return err
}

// openAPI serves the API's description.
func (s *Service) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", docs.OpenAPI)
}
