package backoffice

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/vouch-nl/vouch/internal/audit"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/license"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// ChallengeSize and ChallengeLifetime: a login challenge is 32 random
// bytes, used once, within 5 minutes.
const (
	ChallengeSize     = 32
	ChallengeLifetime = 5 * time.Minute
)

// Refusals of sign-in and unlock.
var (
	errChallenge = &server.Error{Status: http.StatusUnauthorized, Code: "challenge-invalid", Message: "signin.challenge-invalid"}
	errOtherCard = &server.Error{Status: http.StatusForbidden, Code: "other-card", Message: "signin.other-card"}
	errSignCert  = &server.Error{Status: http.StatusBadRequest, Code: "sign-cert-invalid", Message: "signin.sign-cert-invalid"}
	// errOtherBrowser: a signed sign-in challenge posted by a browser
	// other than the one that asked for it (no or another challenge
	// cookie): the signature alone is not a bearer token.
	// errBusy: too many sign-ins are under way (the challenges' cap).
	errBusy         = &server.Error{Status: http.StatusServiceUnavailable, Code: "signin-busy", Message: "signin.busy"}
	errOtherBrowser = &server.Error{Status: http.StatusUnauthorized, Code: "challenge-other-browser", Message: "signin.challenge-invalid"}
)

type challengeRequest struct {
	Purpose string `json:"purpose"` // "sign-in" or "unlock"
}

type challengeResponse struct {
	Challenge []byte `json:"challenge"` // base64
	Origin    string `json:"origin"`    // what the card agent binds the signature to
}

// challenge issues a login challenge, for a sign-in or to unlock the
// request's locked session.
func (s *Service) challenge(c echo.Context) error {
	var req challengeRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	var bound []byte
	switch req.Purpose {
	case purposeSignIn:
	case purposeUnlock:
		sess := sessionOf(c)
		if sess == nil {
			return errSignedOut
		}
		bound = sess.Hash
	default:
		return errBadRequest
	}
	if err := s.signins.check(c.Request().Context(), c.RealIP(), s.now()); err != nil {
		return err
	}
	ch := make([]byte, ChallengeSize)
	if _, err := rand.Read(ch); err != nil {
		return err
	}
	ctx, now := c.Request().Context(), s.now()
	err := saveChallenge(ctx, s.deps.DB.Pool(), ch, req.Purpose, bound, now.Add(ChallengeLifetime), now, s.cfg.MaxChallenges)
	if errors.Is(err, errChallengesFull) {
		// Full of live challenges: expired ones go now rather than at the
		// next sweep, and past that the table stays bounded.
		if err := deleteExpiredChallenges(ctx, s.deps.DB.Pool(), now); err != nil {
			return err
		}
		err = saveChallenge(ctx, s.deps.DB.Pool(), ch, req.Purpose, bound, now.Add(ChallengeLifetime), now, s.cfg.MaxChallenges)
	}
	if errors.Is(err, errChallengesFull) {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(time.Minute.Seconds())))
		e := *errBusy
		e.Cause = err
		return &e
	}
	if err != nil {
		return err
	}
	if req.Purpose == purposeSignIn {
		// Bind the sign-in to this browser: only the one holding the
		// challenge's hash in its cookie may redeem the signed challenge.
		// (An unlock challenge is bound to the session, which is bound
		// to the browser by its own cookie.)
		s.setChallengeCookie(c, b64url.EncodeToString(hashOf(ch)), int(ChallengeLifetime.Seconds()))
	}
	return c.JSON(http.StatusOK, challengeResponse{Challenge: ch, Origin: s.Origin()})
}

type signInRequest struct {
	Challenge []byte `json:"challenge"`
	AuthCert  []byte `json:"authCert"`           // DER, the card's authentication certificate
	SignCert  []byte `json:"signCert,omitempty"` // DER, its signature certificate: a clinician vouches with it
	Signature []byte `json:"signature"`
}

type signInResponse struct {
	Redirect string `json:"redirect"`
	Holder   string `json:"holder"`
	Role     string `json:"role"`
}

// signIn opens a session for the card that signed a sign-in challenge:
// chain, card profile and revocation through the verifier, the license
// through the register, then a session bound to the card.
func (s *Service) signIn(c echo.Context) error {
	var req signInRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	if len(req.Challenge) != ChallengeSize || len(req.AuthCert) == 0 || len(req.Signature) == 0 {
		return errBadRequest
	}
	if err := s.signins.check(c.Request().Context(), c.RealIP(), s.now()); err != nil {
		return err
	}
	ctx, now := c.Request().Context(), s.now()
	if !s.challengeFromThisBrowser(c, req.Challenge) {
		// Refused before the challenge is used: whoever took a signed
		// challenge cannot spend the clinician's own sign-in.
		var id uzi.Identity
		if cert, err := parseCert(req.AuthCert); err == nil {
			id, _ = uzi.FromCertificate(cert)
		}
		return s.refuseSignIn(c, audit.ActionSignInRefused, id.UZI, errOtherBrowser)
	}
	id, res, err := s.checkLogin(ctx, req.Challenge, purposeSignIn, nil, req.AuthCert, req.Signature, now)
	if err != nil {
		return s.refuseSignIn(c, audit.ActionSignInRefused, id.UZI, err)
	}
	dec, err := s.deps.Licenses.Decide(ctx, id)
	if !dec.Allowed {
		return s.refuseSignIn(c, audit.ActionSignInRefused, id.UZI, licenseRefusal(dec, err))
	}
	role := roleStaff
	if dec.ForVouching(s.settings.Current().Professions).Allowed {
		role = roleClinician
	}
	var signCert []byte
	if role == roleClinician {
		// A clinician vouches with the card's other key: its certificate
		// must be this card holder's, and fit for vouching, now.
		sid, err := s.deps.Verifier.VerifyCard(req.SignCert, uzi.PurposeVouch, now)
		if err != nil || sid.UZI != id.UZI || sid.CardType != id.CardType {
			e := *errSignCert
			e.Cause = err
			return s.refuseSignIn(c, audit.ActionSignInRefused, id.UZI, &e)
		}
		signCert = req.SignCert
	}
	token, cookie, err := newToken()
	if err != nil {
		return err
	}
	sess := &session{
		Hash: hashOf(token), UZI: id.UZI, Holder: res.Cert.Subject.CommonName, Role: role, CardType: string(id.CardType),
		RoleCode: id.Role, AuthCertHash: hashOf(req.AuthCert), SignCert: signCert, Lang: langOf(c), CreatedAt: now,
	}
	detail, _ := json.Marshal(map[string]string{"role": role, "card_type": string(id.CardType), "role_code": id.Role, "license_source": dec.Source})
	e := entry(c, audit.ActionSignIn, "")
	e.Actor, e.Detail = id.UZI, string(detail)
	old := sessionOf(c)
	if err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		if old != nil { // a new sign-in replaces the session this browser had
			if err := deleteSession(ctx, tx, old.Hash); err != nil {
				return err
			}
		}
		if err := createSession(ctx, tx, sess); err != nil {
			return err
		}
		_, err := audit.Append(ctx, tx, e, now)
		return err
	}); err != nil {
		return err
	}
	s.metrics.signins.WithLabelValues("ok").Inc()
	s.setSessionCookie(c, cookie)
	redirect := "/vouch"
	if role == roleStaff {
		redirect = "/staff"
	}
	return c.JSON(http.StatusOK, signInResponse{Redirect: redirect, Holder: sess.Holder, Role: role})
}

// checkLogin consumes the challenge and verifies the card's signature over
// it for the configured origin. The identity is returned even with an
// error when the certificate named one, for the audit row.
func (s *Service) checkLogin(ctx context.Context, challenge []byte, purpose string, bound, cert, sig []byte, now time.Time) (uzi.Identity, *protocol.LoginResult, error) {
	var id uzi.Identity
	if c, err := parseCert(cert); err == nil {
		id, _ = uzi.FromCertificate(c)
	}
	if err := useChallenge(ctx, s.deps.DB.Pool(), challenge, purpose, bound, now); err != nil {
		if errors.Is(err, errNotFound) {
			e := *errChallenge
			e.Cause = err
			return id, nil, &e
		}
		return id, nil, err
	}
	res, err := s.deps.Verifier.VerifyLogin(cert, s.Origin(), challenge, sig, now)
	if err != nil {
		return id, nil, reasonRefusal(err)
	}
	return res.Identity, res, nil
}

// refuseSignIn records a refused sign-in or unlock and returns its
// refusal; an internal error is returned as it is, for the logs.
func (s *Service) refuseSignIn(c echo.Context, action, actor string, err error) error {
	var se *server.Error
	if !errors.As(err, &se) {
		return err
	}
	err = s.withNextStep(c, se)
	s.metrics.signins.WithLabelValues(se.Code).Inc()
	e := entry(c, action, se.Code)
	if e.Actor == "" {
		e.Actor = actor
	}
	s.record(c, e)
	return err
}

// registration are the license refusals only the card holder can see to,
// with whoever keeps their registration.
var registration = map[string]bool{
	string(license.ReasonSuspended): true, string(license.ReasonRevoked): true, string(license.ReasonNotYetValid): true,
	string(license.ReasonExpired): true, string(license.ReasonNotRegistered): true, string(license.ReasonCardMismatch): true,
	string(license.ReasonRegisterEntryInvalid): true,
}

// withNextStep adds to a refusal for the card holder's registration whom
// to contact (Config.Contact, else a general text); any other refusal is
// returned as it is.
func (s *Service) withNextStep(c echo.Context, se *server.Error) error {
	if !registration[se.Code] {
		return se
	}
	lang := langOf(c)
	next := s.cfg.Contact
	if next == "" {
		next = i18n.T(lang, "signin.contact-default")
	}
	e := *se
	e.Message, e.Data = "signin.refused-next", map[string]any{"Reason": i18n.T(lang, se.Message, se.Data), "Next": next}
	return &e
}

// reasonRefusal turns a verifier's refusal into what the person sees.
func reasonRefusal(err error) error {
	r := protocol.Verdict(err)
	status := http.StatusForbidden
	if r == protocol.ReasonMalformed || r == protocol.ReasonTruncated || r == protocol.ReasonTooLarge {
		status = http.StatusBadRequest
	}
	return &server.Error{Status: status, Code: string(r), Message: r.MessageID(), Cause: err}
}

// licenseRefusal turns a license decision that does not allow into what the
// person sees; an unreachable register is a 503, so they try again.
func licenseRefusal(dec license.Decision, err error) error {
	status := http.StatusForbidden
	if dec.Reason == license.ReasonUnavailable {
		status = http.StatusServiceUnavailable
	}
	return &server.Error{Status: status, Code: string(dec.Reason), Message: dec.Reason.MessageID(), Cause: err}
}

// signOut ends the session.
func (s *Service) signOut(c echo.Context) error {
	sess := sessionOf(c)
	if sess != nil {
		ctx := c.Request().Context()
		if err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
			if err := deleteSession(ctx, tx, sess.Hash); err != nil {
				return err
			}
			_, err := audit.Append(ctx, tx, entry(c, audit.ActionSignOut, ""), s.now())
			return err
		}); err != nil {
			return err
		}
	}
	s.clearSessionCookie(c)
	return c.JSON(http.StatusOK, signInResponse{Redirect: "/signin"})
}

// lock locks the session: the page asks when the card left the reader.
// Nothing but unlocking (with the same card) or signing out works until
// then.
func (s *Service) lock(c echo.Context) error {
	sess := sessionOf(c)
	if sess == nil {
		return errSignedOut
	}
	ctx, now := c.Request().Context(), s.now()
	if err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		changed, err := setLocked(ctx, tx, sess.Hash, &now, now)
		if err != nil || !changed {
			return err
		}
		_, err = audit.Append(ctx, tx, entry(c, audit.ActionLock, ""), now)
		return err
	}); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"locked": true})
}

type unlockRequest struct {
	Challenge []byte `json:"challenge"`
	AuthCert  []byte `json:"authCert"`
	Signature []byte `json:"signature"`
}

// unlock opens a locked session again for the card that opened it, which
// signs a fresh unlock challenge (and so its holder typed the PIN).
func (s *Service) unlock(c echo.Context) error {
	var req unlockRequest
	if err := bind(c, &req); err != nil {
		return err
	}
	sess := sessionOf(c)
	if sess == nil {
		return errSignedOut
	}
	if len(req.Challenge) != ChallengeSize || len(req.AuthCert) == 0 || len(req.Signature) == 0 {
		return errBadRequest
	}
	if err := s.signins.check(c.Request().Context(), c.RealIP(), s.now()); err != nil {
		return err
	}
	ctx, now := c.Request().Context(), s.now()
	if _, _, err := s.checkLogin(ctx, req.Challenge, purposeUnlock, sess.Hash, req.AuthCert, req.Signature, now); err != nil {
		return s.refuseSignIn(c, audit.ActionUnlockRefused, "", err)
	}
	if !equalHash(hashOf(req.AuthCert), sess.AuthCertHash) {
		return s.refuseSignIn(c, audit.ActionUnlockRefused, "", errOtherCard)
	}
	if err := s.deps.DB.InTx(ctx, func(tx pgx.Tx) error {
		changed, err := setLocked(ctx, tx, sess.Hash, nil, now)
		if err != nil || !changed {
			return err
		}
		_, err = audit.Append(ctx, tx, entry(c, audit.ActionUnlock, ""), now)
		return err
	}); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"locked": false})
}

// heartbeat: the page's watch sees the session's card in a reader. A
// session without one for the configured timeout is locked (loadSession, Run).
func (s *Service) heartbeat(c echo.Context) error {
	sess, err := needSession(c)
	if err != nil {
		return err
	}
	if err := heartbeat(c.Request().Context(), s.deps.DB.Pool(), sess.Hash, s.now()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"locked": false})
}

// switchLanguage keeps the language chosen on the page: in the session
// when there is one, and in a cookie for the sign-in page.
func (s *Service) switchLanguage(c echo.Context) error {
	lang := c.FormValue("lang")
	if !slices.Contains(s.offered(), lang) {
		return errBadRequest
	}
	if sess := sessionOf(c); sess != nil {
		if err := setLang(c.Request().Context(), s.deps.DB.Pool(), sess.Hash, lang); err != nil {
			return err
		}
	}
	c.SetCookie(&http.Cookie{Name: langCookie, Value: lang, Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: 365 * 24 * 3600})
	return c.Redirect(http.StatusSeeOther, s.backPath(c.FormValue("back")))
}
