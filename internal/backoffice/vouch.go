package backoffice

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/bus"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// MaxOnsetDays bounds the symptom onset date: keys older than 14 days are
// never published, and an onset further back is more likely a typing error.
const MaxOnsetDays = 28

// PendingLifetime is how long the card may take to sign a prepared
// statement (the clinician types the PIN in between).
const PendingLifetime = 5 * time.Minute

// Refusals of the vouch page, each with its message.
var (
	errStaff      = &server.Error{Status: http.StatusForbidden, Code: "staff-may-not-vouch", Message: "vouch.staff-may-not-vouch"}
	errConsent    = &server.Error{Status: http.StatusBadRequest, Code: "no-consent", Message: "vouch.consent-required"}
	errOnsetForm  = &server.Error{Status: http.StatusBadRequest, Code: "onset-invalid", Message: "vouch.onset-invalid"}
	errOnsetLater = &server.Error{Status: http.StatusBadRequest, Code: "onset-future", Message: "vouch.onset-future"}
	errOnsetOld   = &server.Error{Status: http.StatusBadRequest, Code: "onset-too-old", Message: "vouch.onset-too-old"}
	errQuota      = &server.Error{Status: http.StatusTooManyRequests, Code: "quota-reached", Message: "vouch.quota-reached"}
	errNoPending  = &server.Error{Status: http.StatusConflict, Code: "no-pending-statement", Message: "vouch.no-pending"}
)

// codeRefusal says what is wrong with a typed code; for a check character
// that does not match, which group was likely mistyped.
func codeRefusal(typed string, err error) error {
	switch {
	case errors.Is(err, phonecode.ErrCheck):
		if g := phonecode.LikelyGroup(typed); g > 0 {
			return &server.Error{Status: http.StatusBadRequest, Code: "code-check", Message: "vouch.code-check-group", Data: map[string]any{"Group": g}}
		}
		return &server.Error{Status: http.StatusBadRequest, Code: "code-check", Message: "vouch.code-check"}
	case errors.Is(err, phonecode.ErrCharacter):
		return &server.Error{Status: http.StatusBadRequest, Code: "code-character", Message: "vouch.code-character"}
	}
	return &server.Error{Status: http.StatusBadRequest, Code: "code-length", Message: "vouch.code-length"}
}

type prepareRequest struct {
	Code    string `json:"code"`
	Consent bool   `json:"consent"`
	Onset   string `json:"onset"` // YYYY-MM-DD or ""
}

type prepareResponse struct {
	Statement []byte `json:"statement"` // for the card to sign, base64
	Code      string `json:"code"`      // as the card agent will show it
}

// prepare checks what the clinician entered and makes the statement their
// card is to sign. Everything that can refuse is checked here, before the
// clinician is asked for the PIN; the card's signature is checked in sign.
func (s *Service) prepare(c echo.Context) error {
	var req prepareRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	sess, err := s.clinician(c)
	if err != nil {
		return err
	}
	now := s.now()
	if err := s.vouches.check(c.Request().Context(), sess.UZI, now); err != nil {
		return err
	}
	code, err := phonecode.Parse(req.Code)
	if err != nil {
		return s.refuseVouch(c, codeRefusal(req.Code, err))
	}
	if !req.Consent {
		return s.refuseVouch(c, errConsent)
	}
	if err := s.checkOnset(req.Onset, now); err != nil {
		return s.refuseVouch(c, err)
	}
	ctx := c.Request().Context()
	if _, err := s.mayVouch(ctx, sess, now); err != nil {
		return s.refuseVouch(c, err)
	}
	if n, err := vouchedSince(ctx, s.deps.DB.Pool(), sess.UZI, s.dayStart(now)); err != nil {
		return err
	} else if n >= s.quota() {
		return s.refuseVouch(c, s.quotaRefusal())
	}
	var aid [protocol.AuthorizationIDLen]byte
	if _, err := rand.Read(aid[:]); err != nil {
		return err
	}
	st, err := protocol.NewStatement(s.deps.Jurisdiction, aid, code, now, req.Onset, sess.SignCert)
	if err != nil {
		return err
	}
	// The validity the admin set (settings), never past the protocol's,
	// which phones enforce.
	st.ExpiresAt = st.IssuedAt.Add(min(s.settings.Current().AuthorizationValidity, protocol.MaxValidity))
	enc := st.Marshal()
	if err := setPending(ctx, s.deps.DB.Pool(), sess.Hash, enc, now); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, prepareResponse{Statement: enc, Code: code.String()})
}

// clinician is the request's unlocked session if a clinician's; a staff
// session is refused, and recorded.
func (s *Service) clinician(c echo.Context) (*session, error) {
	sess, err := needSession(c)
	if err != nil {
		return nil, err
	}
	if sess.Role != roleClinician || len(sess.SignCert) == 0 {
		return nil, s.refuseVouch(c, errStaff)
	}
	return sess, nil
}

// checkOnset: empty, or a date neither in the future nor more than
// MaxOnsetDays back, in the back office's time zone.
func (s *Service) checkOnset(onset string, now time.Time) error {
	if onset == "" {
		return nil
	}
	d, err := time.ParseInLocation(time.DateOnly, onset, s.zone)
	if err != nil {
		return errOnsetForm
	}
	today := s.dayStart(now)
	switch {
	case d.After(today):
		return errOnsetLater
	case d.Before(today.AddDate(0, 0, -MaxOnsetDays)):
		return errOnsetOld
	}
	return nil
}

// dayStart is the start of now's day in the back office's zone: the quota's
// day.
func (s *Service) dayStart(now time.Time) time.Time {
	y, m, d := now.In(s.zone).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, s.zone)
}

func (s *Service) quotaRefusal() error {
	e := *errQuota
	e.Data = map[string]any{"Quota": s.quota()}
	return &e
}

// mayVouch checks the session's signature certificate and asks the register
// whether its holder may vouch now.
func (s *Service) mayVouch(ctx context.Context, sess *session, now time.Time) (uzi.Identity, error) {
	id, err := s.deps.Verifier.VerifyCard(sess.SignCert, uzi.PurposeVouch, now)
	if err != nil {
		return id, reasonRefusal(err)
	}
	dec, err := s.deps.Licenses.Decide(ctx, id)
	if dec = dec.ForVouching(s.settings.Current().Professions); !dec.Allowed {
		return id, licenseRefusal(dec, err)
	}
	return id, nil
}

type signRequest struct {
	Signature []byte `json:"signature"` // the card's, over the prepared statement
}

type signResponse struct {
	ID         string    `json:"id"`
	Code       string    `json:"code"`
	VouchedAt  time.Time `json:"vouchedAt"`
	ValidUntil time.Time `json:"validUntil"`
	Published  bool      `json:"published"`
}

// sign takes the card's signature over the prepared statement, verifies it
// again as a phone would, asks the register again, countersigns with the
// HSM's attestation key, stores the authorization with its audit row in one
// transaction, and then puts it in the public tier's bucket.
func (s *Service) sign(c echo.Context) error {
	var req signRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	sess, err := s.clinician(c)
	if err != nil {
		return err
	}
	now := s.now()
	if len(sess.Pending) == 0 || sess.PendingAt == nil || now.Sub(*sess.PendingAt) > PendingLifetime {
		return errNoPending
	}
	if err := s.vouches.check(c.Request().Context(), sess.UZI, now); err != nil {
		return err
	}
	res, err := s.deps.Verifier.VerifyStatement(sess.Pending, req.Signature, sess.SignCert, now)
	if err != nil {
		return s.refuseVouch(c, reasonRefusal(err))
	}
	if res.Identity.UZI != sess.UZI {
		return s.refuseVouch(c, reasonRefusal(&protocol.Refusal{Reason: protocol.ReasonSignerMismatch}))
	}
	ctx := c.Request().Context()
	// The register again: a license suspended since the page was opened
	// stops the vouch here.
	if _, err := s.mayVouch(ctx, sess, now); err != nil {
		return s.refuseVouch(c, err)
	}
	st := res.Statement
	att, attSig, err := s.attest(ctx, sess.Pending, res.Identity, st.ExpiresAt, now)
	if err != nil {
		return err
	}
	a := &authorization{
		ID: st.AuthorizationID, PhoneCode: st.PhoneCode[:], Statement: sess.Pending, StatementSig: req.Signature,
		Attestation: att, AttestationSig: attSig, SignerCert: sess.SignCert, UZI: sess.UZI, RoleCode: res.Identity.Role,
		CreatedAt: now, ExpiresAt: st.ExpiresAt,
	}
	idHex := hex.EncodeToString(a.ID[:])
	detail, _ := json.Marshal(map[string]any{"expires_at": st.ExpiresAt, "onset_given": st.SymptomOnset != ""})
	e := entry(c, audit.ActionVouch, "")
	e.Subject, e.Detail = idHex, string(detail)
	quotaHit := false
	err = s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		if err := quotaLock(ctx, tx, sess.UZI); err != nil {
			return err
		}
		n, err := vouchedSince(ctx, tx, sess.UZI, s.dayStart(now))
		if err != nil {
			return err
		}
		if n >= s.quota() {
			quotaHit = true
			return errQuota
		}
		if err := takePending(ctx, tx, sess.Hash, sess.Pending); err != nil {
			return err
		}
		if err := insertAuthorization(ctx, tx, a); err != nil {
			return err
		}
		_, err = audit.Append(ctx, tx, e, now)
		return err
	})
	switch {
	case quotaHit:
		return s.refuseVouch(c, s.quotaRefusal())
	case errors.Is(err, errNotFound):
		return errNoPending // signed twice, or locked in between
	case err != nil:
		return err
	}
	s.metrics.vouches.WithLabelValues("ok").Inc()
	// Stored: the phone gets it once the bucket has it. If the bus does
	// not acknowledge now, the next sweep publishes it (Run), which also
	// marks it published once it did.
	published := s.put(ctx, []authorization{*a}) == nil
	if published {
		select {
		case s.acked <- a.ID:
		default: // full: the sweep will put it again, harmlessly
		}
	}
	return c.JSON(http.StatusOK, signResponse{ID: idHex, Code: st.PhoneCode.String(), VouchedAt: now, ValidUntil: st.ExpiresAt, Published: published})
}

// attest has the HSM countersign, on an HSM session no other request is
// using: a PKCS#11 session runs one operation at a time.
func (s *Service) attest(ctx context.Context, statement []byte, id uzi.Identity, expires, now time.Time) ([]byte, []byte, error) {
	var signer crypto.Signer
	select {
	case signer = <-s.signers:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	defer func() { s.signers <- signer }()
	enc, sig, err := protocol.Attest(signer, statement, id, protocol.LicenseActive, expires, now)
	if err != nil {
		return nil, nil, fmt.Errorf("backoffice: attest: %w", err)
	}
	return enc, sig, nil
}

// refuseVouch records a refused vouch and returns its refusal.
func (s *Service) refuseVouch(c echo.Context, err error) error {
	var se *server.Error
	if !errors.As(err, &se) {
		return err
	}
	s.metrics.vouches.WithLabelValues(se.Code).Inc()
	s.record(c, entry(c, audit.ActionVouchRefused, se.Code))
	return s.withNextStep(c, se)
}

// bundleOf is what the phone picks up.
func bundleOf(a *authorization) []byte {
	return (&protocol.Bundle{Statement: a.Statement, StatementSignature: a.StatementSig, Cert: a.SignerCert,
		Attestation: a.Attestation, AttestationSignature: a.AttestationSig}).Marshal()
}

// BucketKey is an authorization's key in the public tier's bucket: the
// phone code in hex (the code's check symbols are not allowed in keys).
func BucketKey(code phonecode.Code) string { return hex.EncodeToString(code[:]) }

// publish puts authorizations in the bucket and marks them published once
// the bus acknowledged them.
func (s *Service) publish(ctx context.Context, as []authorization) error {
	if err := s.put(ctx, as); err != nil {
		return err
	}
	ids := make([][16]byte, len(as))
	for i := range as {
		ids[i] = as[i].ID
	}
	return markPublished(ctx, s.deps.DB.Pool(), ids, s.now())
}

// put puts authorizations in the bucket and returns once the bus
// acknowledged them.
func (s *Service) put(ctx context.Context, as []authorization) error {
	if len(as) == 0 {
		return nil
	}
	entries := make([]bus.KeyValue, len(as))
	for i := range as {
		var code phonecode.Code
		copy(code[:], as[i].PhoneCode)
		entries[i] = bus.KeyValue{Key: BucketKey(code), Value: bundleOf(&as[i])}
	}
	if err := s.deps.Publisher.PutAll(ctx, entries); err != nil {
		s.deps.Log.Warn("authorizations: the bus did not acknowledge; the sweep retries", "count", len(as), "err", err)
		return err
	}
	return nil
}

// publishPending publishes what was stored but not acknowledged.
func (s *Service) publishPending(ctx context.Context) error {
	for {
		as, err := unpublished(ctx, s.deps.DB.Pool(), s.now(), 500)
		if err != nil || len(as) == 0 {
			return err
		}
		if err := s.publish(ctx, as); err != nil {
			return err
		}
		if len(as) < 500 {
			return nil
		}
	}
}

func parseCert(der []byte) (*x509.Certificate, error) {
	if len(der) == 0 || len(der) > protocol.MaxCertSize {
		return nil, errors.New("backoffice: certificate size")
	}
	return x509.ParseCertificate(der)
}
