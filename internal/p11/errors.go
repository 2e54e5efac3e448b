//go:build cgo

package p11

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Errors callers act on. They say what a person at the reader should do.
var (
	ErrTokenNotFound = errors.New("p11: card not found: is it in the reader?")
	ErrTokenRemoved  = errors.New("p11: the card was removed")
	ErrKeyNotFound   = errors.New("p11: key not found on the card")
	ErrPINLocked     = errors.New("p11: the PIN is locked; the card must be unblocked")
	ErrTimeout       = errors.New("p11: the card did not answer in time")
	// ErrLoggedOut: the card no longer has this session logged in, usually
	// because a wrong PIN given for another session on it logged all out.
	ErrLoggedOut = errors.New("p11: the card was logged out; sign in again with the PIN")
	// ErrPINNeeded: the key asks for the PIN at every signature and there is
	// neither a PIN prompt (Signer.SetPINPrompt) nor a PIN pad to ask it.
	ErrPINNeeded = errors.New("p11: this key needs the PIN for every signature, and nothing can ask for it")
	// ErrCertificateMismatch: the certificate under the key's id holds
	// another public key; the card was personalised wrongly.
	ErrCertificateMismatch = errors.New("p11: the certificate beside the key is another key's; the card was personalised wrongly")
	// ErrCancelled: the person cancelled on the reader's PIN pad, or let it
	// time out.
	ErrCancelled = errors.New("p11: cancelled on the reader")
)

// PINError is a wrong PIN. TriesLeft comes from the token flags, which tell
// only "few", "one" or nothing; -1 means the card does not say.
type PINError struct {
	TriesLeft int // -1 unknown, 1 final try, 2 "count low"
}

func (e *PINError) Error() string {
	switch e.TriesLeft {
	case 1:
		return "p11: wrong PIN; one try left before the card locks"
	case 2:
		return "p11: wrong PIN; only a few tries left"
	}
	return "p11: wrong PIN; the card does not say how many tries are left"
}

// pinErrorFromFlags maps the token flags after a failed login.
func pinErrorFromFlags(flags uint) error {
	switch {
	case flags&pkcs11.CKF_USER_PIN_LOCKED != 0:
		return ErrPINLocked
	case flags&pkcs11.CKF_USER_PIN_FINAL_TRY != 0:
		return &PINError{TriesLeft: 1}
	case flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0:
		return &PINError{TriesLeft: 2}
	}
	return &PINError{TriesLeft: -1}
}

// classify turns a PKCS#11 return value into one of the errors above where
// one fits, keeping the original for logs.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var rv pkcs11.Error
	if errors.As(err, &rv) {
		switch rv {
		case pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_SESSION_HANDLE_INVALID,
			pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_TOKEN_NOT_RECOGNIZED, pkcs11.CKR_SLOT_ID_INVALID:
			return fmt.Errorf("%s: %w (%v)", op, ErrTokenRemoved, err)
		case pkcs11.CKR_PIN_LOCKED:
			return fmt.Errorf("%s: %w", op, ErrPINLocked)
		case pkcs11.CKR_USER_NOT_LOGGED_IN:
			return fmt.Errorf("%s: %w", op, ErrLoggedOut)
		case pkcs11.CKR_FUNCTION_CANCELED:
			return fmt.Errorf("%s: %w", op, ErrCancelled)
		}
	}
	return fmt.Errorf("p11: %s: %w", op, err)
}
