package p11

import (
	"errors"
	"testing"
	"unsafe"

	"github.com/miekg/pkcs11"
)

func TestPINErrorFromFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		flags uint
		tries int
		lock  bool
	}{
		{0, -1, false},
		{pkcs11.CKF_USER_PIN_COUNT_LOW, 2, false},
		{pkcs11.CKF_USER_PIN_FINAL_TRY, 1, false},
		{pkcs11.CKF_USER_PIN_COUNT_LOW | pkcs11.CKF_USER_PIN_FINAL_TRY, 1, false},
		{pkcs11.CKF_USER_PIN_LOCKED, 0, true},
	}
	for _, tt := range tests {
		err := pinErrorFromFlags(tt.flags)
		if tt.lock {
			if !errors.Is(err, ErrPINLocked) {
				t.Errorf("flags %#x: got %v, want locked", tt.flags, err)
			}
			continue
		}
		var pe *PINError
		if !errors.As(err, &pe) || pe.TriesLeft != tt.tries {
			t.Errorf("flags %#x: got %v, want %d tries", tt.flags, err, tt.tries)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, rv := range []uint{pkcs11.CKR_DEVICE_REMOVED, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_SESSION_HANDLE_INVALID} {
		if err := classify("sign", pkcs11.Error(rv)); !errors.Is(err, ErrTokenRemoved) {
			t.Errorf("%#x: got %v", rv, err)
		}
	}
	if err := classify("login", pkcs11.Error(pkcs11.CKR_PIN_LOCKED)); !errors.Is(err, ErrPINLocked) {
		t.Errorf("locked: got %v", err)
	}
	if err := classify("sign", pkcs11.Error(pkcs11.CKR_FUNCTION_CANCELED)); !errors.Is(err, ErrCancelled) {
		t.Errorf("cancelled on the PIN pad: got %v", err)
	}
}

// TestSignaturePIN covers where the per-signature PIN comes from, the PIN pad
// included, which SoftHSM has not.
func TestSignaturePIN(t *testing.T) {
	t.Parallel()
	given := func(pin string) PINPrompt { return func() ([]byte, error) { return []byte(pin), nil } }
	for _, tt := range []struct {
		name   string
		prompt PINPrompt
		pad    bool
		want   string
		err    error
	}{
		{"pad, no prompt", nil, true, "", nil},
		{"no pad, no prompt", nil, false, "", ErrPINNeeded},
		{"prompt first, even with a pad", given("1234"), true, "1234", nil},
		{"prompt, no pad", given("1234"), false, "1234", nil},
		{"empty from prompt, pad", given(""), true, "", nil},
		{"empty from prompt, no pad", given(""), false, "", ErrPINNeeded},
	} {
		pin, err := signaturePIN(tt.prompt, tt.pad)
		if !errors.Is(err, tt.err) || string(pin) != tt.want {
			t.Errorf("%s: got %q, %v; want %q, %v", tt.name, pin, err, tt.want, tt.err)
		}
	}
	pin := []byte("1234")
	if s := pinString(pin); s != "1234" || unsafe.StringData(s) != &pin[0] {
		t.Error("pinString copies the PIN")
	}
}
