package p11

import (
	"errors"
	"fmt"
	"strings"
	"sync"
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
	Slot           uint
	Label          string
	Serial         string
	ProtectedPath  bool // PIN is entered on the reader's pad
	LoginRequired  bool
	UserPINCountLo bool
}

// Tokens lists the tokens present.
func (m *Module) Tokens() ([]Token, error) {
	slots, err := m.lib.ctx.GetSlotList(true)
	if err != nil {
		return nil, classify("list slots", err)
	}
	var out []Token
	for _, s := range slots {
		ti, err := m.lib.ctx.GetTokenInfo(s)
		if err != nil || ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue // vanished between the two calls, or an empty slot
		}
		out = append(out, tokenFromInfo(s, ti))
	}
	return out, nil
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
// own use: a PKCS#11 session runs one operation at a time.
type Session struct {
	m     *Module
	token Token
	h     pkcs11.SessionHandle
	mu    sync.Mutex
	pin   []byte // kept only for keys that ask for the PIN at every use
	dead  error  // set once the card was removed or stopped answering
}

// Login opens a session on the token u names and logs the user in. An empty
// PIN on a token with a protected authentication path asks the reader's pad.
func (m *Module) Login(u URI, pin string) (*Session, error) {
	tok, err := m.FindToken(u)
	if err != nil {
		return nil, err
	}
	h, err := m.lib.ctx.OpenSession(tok.Slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, classify("open session", err)
	}
	s := &Session{m: m, token: tok, h: h, pin: []byte(pin)}
	if pin == "" && !tok.ProtectedPath {
		s.Close()
		return nil, fmt.Errorf("p11: a PIN is needed for %s", u)
	}
	err = s.call(func() error { return m.lib.ctx.Login(h, pkcs11.CKU_USER, pin) })
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
		s.Close()
		return nil, s.loginError(err)
	}
	return s, nil
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

// call runs one module call under the session's timeout. A call that does not
// return in time leaves the session unusable: the module still owns it.
func (s *Session) call(f func() error) error {
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

// Close logs out and closes the session, and forgets the PIN.
func (s *Session) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.pin)
	if s.dead == ErrTimeout {
		return // the module still owns the handle
	}
	_ = s.m.lib.ctx.Logout(s.h)
	_ = s.m.lib.ctx.CloseSession(s.h)
	s.dead = errors.New("p11: session closed")
}

// find returns the handles of objects matching the template.
func (s *Session) find(tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	var objs []pkcs11.ObjectHandle
	err := s.call(func() error {
		ctx := s.m.lib.ctx
		if err := ctx.FindObjectsInit(s.h, tmpl); err != nil {
			return err
		}
		var err error
		objs, _, err = ctx.FindObjects(s.h, max)
		if ferr := ctx.FindObjectsFinal(s.h); err == nil {
			err = ferr
		}
		return err
	})
	return objs, classify("find objects", err)
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
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return classify("list slots", err)
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
