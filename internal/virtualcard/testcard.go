package virtualcard

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// FromTestCard makes the virtual card of a SoftHSM test card: its two keys
// stay on the token, opened here with the card's PIN, and the virtual card
// asks for that same PIN. close releases the token.
func FromTestCard(m *p11.Module, mc testpki.ManifestCard) (card *Card, close func(), err error) {
	var signers []*p11.Signer
	close = func() {
		for _, s := range signers {
			s.Close()
		}
	}
	defer func() {
		if err != nil {
			close()
		}
	}()
	open := func(uri string) (Key, error) {
		u, err := p11.ParseURI(uri)
		if err != nil {
			return Key{}, err
		}
		s, err := m.Signer(u, mc.PIN)
		if err != nil {
			return Key{}, fmt.Errorf("virtualcard: card %s: %w", mc.Name, err)
		}
		signers = append(signers, s)
		// The signature key wants its PIN at every signature: the card
		// asked for it already (VERIFY), so the token gets it from here.
		s.SetPINPrompt(func() ([]byte, error) { return []byte(mc.PIN), nil })
		if s.Certificate() == nil {
			return Key{}, errors.New("virtualcard: no certificate beside the key on " + mc.Token)
		}
		return Key{Cert: s.Certificate().Raw, Signer: s}, nil
	}
	auth, err := open(mc.AuthURI)
	if err != nil {
		return nil, close, err
	}
	sign, err := open(mc.SignURI)
	if err != nil {
		return nil, close, err
	}
	cfg := Config{PIN: mc.PIN, Auth: auth, Sign: sign}
	g := sha256.Sum256([]byte("vouch virtual card:" + mc.Token))
	copy(cfg.GUID[:], g[:])
	card, err = New(cfg)
	return card, close, err
}
