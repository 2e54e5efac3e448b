//go:build cgo

package p11

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/pkcs11"
)

// DefaultTimeout bounds every call into the module that may wait on a card,
// so a card pulled mid-operation yields an error instead of a hang.
const DefaultTimeout = 30 * time.Second

// Module is an opened PKCS#11 library.
type Module struct {
	lib     *library
	Timeout time.Duration
}

// library is one loaded module. C_Initialize is process-wide state in the C
// library, so Vouch keeps one initialized context per module path and counts
// its users; this is the only package-level state, and it mirrors the C side.
type library struct {
	path string
	ctx  *pkcs11.Ctx
	refs int

	mu     sync.Mutex // guards logins
	logins map[tokenKey]*tokenLogin
}

// tokenKey names one token: a slot keeps its number when another card goes
// into the reader, so the serial and label count too.
type tokenKey struct {
	slot          uint
	serial, label string
}

// tokenLogin is the user login on one token. PKCS#11 keeps login state per
// token per process, not per session: one C_Login logs in every session of
// the process on the token, one C_Logout logs them all out, and C_Login on a
// token already logged in answers CKR_USER_ALREADY_LOGGED_IN without looking
// at the PIN. So every Session on a token shares one counted login:
//
//   - Each Login logs the token out and in again with its own PIN, so the
//     card checks (and counts) every PIN. A right PIN leaves the sessions
//     already open logged in; a wrong one leaves the token logged out, and
//     those sessions then fail with ErrLoggedOut until someone signs in
//     again with a new Session. There is no gentler way: PKCS#11 has no call
//     that checks a PIN without logging in.
//   - Modules may drop private-object handles at logout (SoftHSM does), so
//     each login bumps gen, and a Signer finds its key again when gen moved.
//   - Only the last Session of a login logs the token out.
//
// The PIN itself is never kept, here or in a Session.
type tokenLogin struct {
	// mu orders the card's use: operations hold it for reading, logging in
	// and out for writing, so no operation runs while the login changes.
	mu    sync.RWMutex
	in    bool   // the token is logged in
	users int    // Sessions of the current epoch not yet closed
	epoch uint64 // bumped whenever the token is logged out under its users
	gen   atomic.Uint64
}

// login returns the shared login state of the token; entries live as long as
// the loaded module (a handful of tokens at most).
func (l *library) login(t Token) *tokenLogin {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := tokenKey{t.Slot, t.Serial, t.Label}
	tl := l.logins[k]
	if tl == nil {
		if l.logins == nil {
			l.logins = map[tokenKey]*tokenLogin{}
		}
		tl = &tokenLogin{}
		l.logins[k] = tl
	}
	return tl
}

var libraries = struct {
	sync.Mutex
	m map[string]*library
}{m: map[string]*library{}}

// Open loads and initializes the module at path (for SoftHSM2,
// /usr/lib/softhsm/libsofthsm2.so).
func Open(path string) (*Module, error) {
	libraries.Lock()
	defer libraries.Unlock()
	if lib, ok := libraries.m[path]; ok {
		lib.refs++
		return &Module{lib: lib, Timeout: DefaultTimeout}, nil
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, fmt.Errorf("p11: cannot load module %s (install it, or run make deps)", path)
	}
	if err := ctx.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		ctx.Destroy()
		return nil, fmt.Errorf("p11: initialize %s: %w", path, err)
	}
	lib := &library{path: path, ctx: ctx, refs: 1}
	libraries.m[path] = lib
	return &Module{lib: lib, Timeout: DefaultTimeout}, nil
}

// Close releases the module; the last user finalizes it.
func (m *Module) Close() error {
	libraries.Lock()
	defer libraries.Unlock()
	m.lib.refs--
	if m.lib.refs > 0 {
		return nil
	}
	delete(libraries.m, m.lib.path)
	err := m.lib.ctx.Finalize()
	m.lib.ctx.Destroy()
	return err
}

// Token describes a token present in a slot.
type Token struct {
	Slot   uint
	Label  string
	Serial string
	// SlotDescription names the slot; a card middleware such as OpenSC
	// names it after the card reader, which is how a card in a PC/SC
	// reader is found among the tokens.
	SlotDescription string
	ProtectedPath   bool // PIN is entered on the reader's pad
	LoginRequired   bool
	UserPINCountLo  bool
}

// Tokens lists the tokens present.
func (m *Module) Tokens() ([]Token, error) {
	slots, err := m.slots()
	if err != nil {
		return nil, err
	}
	var out []Token
	for _, s := range slots {
		ti, err := m.lib.ctx.GetTokenInfo(s)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue // vanished between the two calls, or an empty slot
		}
		t := tokenFromInfo(s, ti)
		if si, err := m.lib.ctx.GetSlotInfo(s); err == nil {
			t.SlotDescription = strings.TrimRight(si.SlotDescription, " \x00")
		}
		out = append(out, t)
	}
	return out, nil
}

// slots lists the slots with a token. A reader plugged in or a card
// inserted between the two calls C_GetSlotList takes (count, then fill)
// makes the second answer CKR_BUFFER_TOO_SMALL; asking again is what the
// standard prescribes, and a few times is plenty for a person at a desk.
func (m *Module) slots() ([]uint, error) {
	var err error
	for range 5 {
		var slots []uint
		if slots, err = m.lib.ctx.GetSlotList(true); err == nil {
			return slots, nil
		}
		if !errors.Is(err, pkcs11.Error(pkcs11.CKR_BUFFER_TOO_SMALL)) {
			break
		}
	}
	return nil, classify("list slots", err)
}

func tokenFromInfo(slot uint, ti pkcs11.TokenInfo) Token {
	return Token{
		Slot:           slot,
		Label:          strings.TrimRight(ti.Label, " \x00"),
		Serial:         strings.TrimRight(ti.SerialNumber, " \x00"),
		ProtectedPath:  ti.Flags&pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH != 0,
		LoginRequired:  ti.Flags&pkcs11.CKF_LOGIN_REQUIRED != 0,
		UserPINCountLo: ti.Flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0,
	}
}

// FindToken returns the one token the URI names.
func (m *Module) FindToken(u URI) (Token, error) {
	toks, err := m.Tokens()
	if err != nil {
		return Token{}, err
	}
	var found []Token
	for _, t := range toks {
		if (u.Token == "" || t.Label == u.Token) && (u.Serial == "" || t.Serial == u.Serial) {
			found = append(found, t)
		}
	}
	switch len(found) {
	case 0:
		return Token{}, fmt.Errorf("%w (%s)", ErrTokenNotFound, u)
	case 1:
		return found[0], nil
	}
	return Token{}, fmt.Errorf("p11: %d tokens match %s; name it by serial", len(found), u)
}

// Session is a logged-in read-write session on one token. It serialises its
// own use: a PKCS#11 session runs one operation at a time. It keeps no PIN.
type Session struct {
	m      *Module
	token  Token
	h      pkcs11.SessionHandle
	login  *tokenLogin
	epoch  uint64 // login.epoch when this session logged in
	mu     sync.Mutex
	dead   error // set once the card was removed or stopped answering
	closed bool
}

// Login opens a session on the token u names and logs the user in. An empty
// PIN on a token with a protected authentication path asks the reader's pad.
// The card checks the PIN even when this process is already logged in to it;
// a wrong PIN there logs out the other sessions on the token (see
// tokenLogin). The PIN is not kept once Login returns.
func (m *Module) Login(u URI, pin string) (*Session, error) {
	tok, err := m.FindToken(u)
	if err != nil {
		return nil, err
	}
	if pin == "" && !tok.ProtectedPath {
		return nil, fmt.Errorf("p11: a PIN is needed for %s", u)
	}
	h, err := m.lib.ctx.OpenSession(tok.Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, classify("open session", err)
	}
	s := &Session{m: m, token: tok, h: h, login: m.lib.login(tok)}
	if err := s.logIn(pin); err != nil {
		if s.dead != ErrTimeout { // else the module still owns the handle
			_ = m.lib.ctx.CloseSession(h)
		}
		return nil, err
	}
	return s, nil
}

// logIn logs the token out and in again with pin, so that the card checks
// it, and joins the session to the token's login.
func (s *Session) logIn(pin string) error {
	l, ctx := s.login, s.m.lib.ctx
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen.Add(1)
	// Not logged in is the usual answer; any other failure shows below as
	// CKR_USER_ALREADY_LOGGED_IN.
	_ = s.timed(func() error { return ctx.Logout(s.h) })
	err := s.timed(func() error { return ctx.Login(s.h, pkcs11.CKU_USER, pin) })
	switch {
	case err == nil:
		l.in = true
		l.users++
		s.epoch = l.epoch
		return nil
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)):
		// The logout failed, so the card did not look at this PIN; the
		// sessions already open stay logged in.
		return errors.New("p11: the card stays logged in and cannot check the PIN; close the other sessions on it")
	}
	// The logout above ended the login the open sessions shared.
	l.in, l.users = false, 0
	l.epoch++
	return s.loginError(err)
}

func (s *Session) loginError(err error) error {
	switch {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)), errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LEN_RANGE)):
		ti, terr := s.m.lib.ctx.GetTokenInfo(s.token.Slot)
		if terr != nil {
			return &PINError{TriesLeft: -1}
		}
		return pinErrorFromFlags(ti.Flags)
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_PIN_LOCKED)):
		return ErrPINLocked
	}
	return classify("login", err)
}

// Token is the token this session is on.
func (s *Session) Token() Token { return s.token }

// call runs one operation on the card, with s.mu held by the caller: under
// the token's read lock, so the login cannot change under it, and only while
// this session's login stands.
func (s *Session) call(f func() error) error {
	release, err := s.begin()
	if err != nil {
		return err
	}
	defer release()
	return s.timed(f)
}

// begin takes the token's read lock for an operation and checks the session
// may still use the card; release the lock when the operation is over.
func (s *Session) begin() (release func(), err error) {
	if s.dead != nil {
		return nil, s.dead
	}
	l := s.login
	l.mu.RLock()
	if !l.in || l.epoch != s.epoch {
		l.mu.RUnlock()
		return nil, ErrLoggedOut
	}
	return l.mu.RUnlock, nil
}

// usable reports why the session cannot use the card now, if it cannot.
func (s *Session) usable() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	release, err := s.begin()
	if err != nil {
		return err
	}
	release()
	return nil
}

// timed runs one module call under the session's timeout. A call that does
// not return in time leaves the session unusable: the module still owns it.
func (s *Session) timed(f func() error) error {
	if s.dead != nil {
		return s.dead
	}
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTimer(s.m.Timeout)
	defer t.Stop()
	select {
	case err := <-done:
		if errors.Is(classify("", err), ErrTokenRemoved) {
			s.dead = ErrTokenRemoved
		}
		return err
	case <-t.C:
		s.dead = ErrTimeout
		return ErrTimeout
	}
}

// Close closes the session. The last session of the token's login logs the
// token out; logging out earlier would log out every other session too.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	l := s.login
	l.mu.Lock()
	defer l.mu.Unlock()
	last := false
	if l.in && l.epoch == s.epoch {
		l.users--
		last = l.users == 0
	}
	if s.dead == ErrTimeout {
		s.dead = errors.New("p11: session closed")
		return // the module still owns the handle; the next Login logs out
	}
	if last {
		_ = s.m.lib.ctx.Logout(s.h)
		l.in = false
	}
	_ = s.m.lib.ctx.CloseSession(s.h)
	s.dead = errors.New("p11: session closed")
}

// find returns the handles of objects matching the template.
func (s *Session) find(tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	var objs []pkcs11.ObjectHandle
	err := s.call(func() error {
		var err error
		objs, err = findObjects(s.m.lib.ctx, s.h, tmpl, max)
		return err
	})
	return objs, classify("find objects", err)
}

// findObjects is one search, for callers that hold the token's lock.
func findObjects(ctx *pkcs11.Ctx, h pkcs11.SessionHandle, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(h, tmpl); err != nil {
		return nil, err
	}
	objs, _, err := ctx.FindObjects(h, max)
	if ferr := ctx.FindObjectsFinal(h); err == nil {
		err = ferr
	}
	return objs, err
}

// objectTemplate selects by class and the URI's id and label.
func objectTemplate(class uint, u URI) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if len(u.ID) > 0 {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID))
	}
	if u.Object != "" {
		t = append(t, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	return t
}

func (s *Session) findOne(class uint, u URI) (pkcs11.ObjectHandle, error) {
	objs, err := s.find(objectTemplate(class, u), 2)
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 0:
		return 0, fmt.Errorf("%w (%s)", ErrKeyNotFound, u)
	case 1:
		return objs[0], nil
	}
	return 0, fmt.Errorf("p11: more than one object matches %s", u)
}

func (s *Session) attrs(o pkcs11.ObjectHandle, types ...uint) (map[uint][]byte, error) {
	tmpl := make([]*pkcs11.Attribute, len(types))
	for i, t := range types {
		tmpl[i] = pkcs11.NewAttribute(t, nil)
	}
	var got []*pkcs11.Attribute
	err := s.call(func() error {
		var err error
		got, err = s.m.lib.ctx.GetAttributeValue(s.h, o, tmpl)
		return err
	})
	if err != nil {
		return nil, classify("read attributes", err)
	}
	out := make(map[uint][]byte, len(got))
	for _, a := range got {
		out[a.Type] = a.Value
	}
	return out, nil
}

// InitToken initializes a new token in a free slot and sets its user PIN. It
// is for making test cards and HSM tokens (SoftHSM always offers a free slot);
// a real card is personalised elsewhere.
func (m *Module) InitToken(label, soPIN, userPIN string) error {
	ctx := m.lib.ctx
	slots, err := m.slots()
	if err != nil {
		return err
	}
	for _, slot := range slots {
		ti, err := ctx.GetTokenInfo(slot)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			continue
		}
		if err := ctx.InitToken(slot, soPIN, label); err != nil {
			return classify("init token", err)
		}
		h, err := ctx.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			return classify("open session", err)
		}
		defer func() { _ = ctx.CloseSession(h) }()
		if err := ctx.Login(h, pkcs11.CKU_SO, soPIN); err != nil {
			return classify("SO login", err)
		}
		defer func() { _ = ctx.Logout(h) }()
		if err := ctx.InitPIN(h, userPIN); err != nil {
			return classify("init PIN", err)
		}
		return nil
	}
	return errors.New("p11: no free slot to initialize a token in")
}

// present reports whether the session's token is still in its slot.
func (s *Session) present() bool {
	_, err := s.m.FindToken(URI{Token: s.token.Label, Serial: s.token.Serial})
	return err == nil
}
