package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/protocol"
)

func TestVerifyPhone(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	msg := protocol.PickupMessage(pub, now)
	sig := ed25519.Sign(priv, msg)
	flipped := bytes.Clone(sig)
	flipped[10] ^= 1
	tests := []struct {
		name     string
		pub      ed25519.PublicKey
		msg, sig []byte
		at       time.Time
		want     bool
	}{
		{"good", pub, msg, sig, now, true},
		{"4m59s early", pub, msg, sig, now.Add(protocol.PhoneClockSkew), true},
		{"too old", pub, msg, sig, now.Add(-protocol.PhoneClockSkew - time.Second), false},
		{"too new", pub, msg, sig, now.Add(protocol.PhoneClockSkew + time.Second), false},
		{"other key", other, msg, sig, now, false},
		{"flipped bit", pub, msg, flipped, now, false},
		{"short signature", pub, msg, sig[:63], now, false},
		{"short key", pub[:31], msg, sig, now, false},
		{"other message", pub, protocol.PickupMessage(pub, now.Add(time.Second)), sig, now, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The server's clock is now; the phone claims tt.at.
			if got := protocol.VerifyPhone(tt.pub, tt.msg, tt.sig, tt.at, now); got != tt.want {
				t.Fatalf("VerifyPhone = %v, want %v", got, tt.want)
			}
		})
	}
}

// Every field of an upload is under the phone's signature: changing any
// changes the signed bytes.
func TestUploadEncodingCoversEveryField(t *testing.T) {
	t.Parallel()
	pub, _, _ := ed25519.GenerateKey(nil)
	base := func() *protocol.Upload {
		return &protocol.Upload{Bundle: []byte("bundle"), Phone: pub, At: time.Unix(1_800_000_000, 0),
			Keys: []exposure.Key{{RollingStart: 2_900_000, RollingPeriod: 144, TransmissionRisk: 1}}}
	}
	ref := base().Marshal()
	for name, edit := range map[string]func(*protocol.Upload){
		"bundle":  func(u *protocol.Upload) { u.Bundle = []byte("bundlf") },
		"phone":   func(u *protocol.Upload) { u.Phone = append(ed25519.PublicKey{}, pub...); u.Phone[0] ^= 1 },
		"time":    func(u *protocol.Upload) { u.At = u.At.Add(time.Second) },
		"key":     func(u *protocol.Upload) { u.Keys[0].Data[15] = 1 },
		"start":   func(u *protocol.Upload) { u.Keys[0].RollingStart++ },
		"period":  func(u *protocol.Upload) { u.Keys[0].RollingPeriod-- },
		"risk":    func(u *protocol.Upload) { u.Keys[0].TransmissionRisk = 2 },
		"another": func(u *protocol.Upload) { u.Keys = append(u.Keys, u.Keys[0]) },
		"none":    func(u *protocol.Upload) { u.Keys = nil },
	} {
		u := base()
		edit(u)
		if bytes.Equal(u.Marshal(), ref) {
			t.Errorf("changing the %s does not change the signed bytes", name)
		}
	}
	if !bytes.HasPrefix(ref[4:], []byte(protocol.LabelUpload)) || bytes.Contains(protocol.PickupMessage(pub, time.Unix(0, 0)), []byte(protocol.LabelUpload)) {
		t.Error("pickup and upload are not separated by their labels")
	}
}
