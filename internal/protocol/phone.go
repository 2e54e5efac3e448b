package protocol

import (
	"crypto/ed25519"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// Labels of the messages the phone's own key signs.
const (
	LabelPickup = "vouch/pickup/v1"
	LabelUpload = "vouch/upload/v1"
)

// PhoneClockSkew is how far a phone's signed time may lie from the
// server's: a signature is fresh only that long, so a recorded request
// cannot be replayed later.
const PhoneClockSkew = 5 * time.Minute

// PickupMessage is what the phone signs to pick up its bundle: its public
// key and the time, so that only the phone (not whoever saw its code) can
// ask, and only now.
func PickupMessage(phone ed25519.PublicKey, at time.Time) []byte {
	e := newEncoder(LabelPickup)
	e.bytes(phone)
	e.i64(at.Unix())
	return e.b
}

// Upload is what the phone signs to publish its keys: the bundle it picked
// up, its key, the time and the keys, in the order the phone sent them.
type Upload struct {
	Bundle []byte
	Phone  ed25519.PublicKey
	At     time.Time // whole seconds
	Keys   []exposure.Key
}

// Marshal returns the canonical encoding the phone signs.
func (u *Upload) Marshal() []byte {
	e := newEncoder(LabelUpload)
	e.bytes(u.Bundle)
	e.bytes(u.Phone)
	e.i64(u.At.Unix())
	e.b = append(e.b, byte(len(u.Keys)))
	for _, k := range u.Keys {
		e.b = append(e.b, k.Data[:]...)
		e.i64(int64(k.RollingStart))
		e.i64(int64(k.RollingPeriod))
		e.u8(uint8(k.TransmissionRisk))
	}
	return e.b
}

// VerifyPhone checks the phone's Ed25519 signature over msg and that at is
// within PhoneClockSkew of now. It says nothing about the bundle.
func VerifyPhone(phone ed25519.PublicKey, msg, sig []byte, at, now time.Time) bool {
	if len(phone) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	if d := now.Sub(at); d > PhoneClockSkew || d < -PhoneClockSkew {
		return false
	}
	return ed25519.Verify(phone, msg, sig)
}
