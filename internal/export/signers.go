package export

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"

	"github.com/vouch-nl/vouch/internal/p11"
)

// OpenSigners opens every signing key cfg names on its token, one session
// each, and checks it is ECDSA P-256. close releases them all.
func OpenSigners(cfg Config) (signers []Signer, close func(), err error) {
	var opened []*p11.Signer
	mods := map[string]*p11.Module{}
	// release, not close: every error return sets the named close to nil
	// before the deferred call below runs.
	release := func() {
		for _, g := range opened {
			g.Close()
		}
		for _, m := range mods {
			m.Close()
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()
	for i, raw := range cfg.KeyURIs {
		u, err := p11.ParseURI(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("VOUCH_EXPORT_KEY_URIS: %w", err)
		}
		path := u.ModulePath
		if path == "" {
			path = "/usr/lib/softhsm/libsofthsm2.so"
		}
		m, ok := mods[path]
		if !ok {
			if m, err = p11.Open(path); err != nil {
				return nil, nil, fmt.Errorf("export signing key: %w", err)
			}
			mods[path] = m
		}
		g, err := m.Signer(u, cfg.HSMPIN)
		if err != nil {
			return nil, nil, fmt.Errorf("export signing key %d: %w", i+1, err)
		}
		opened = append(opened, g)
		pub, ok := g.Public().(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, nil, errors.New("export signing key: GAEN signs with ECDSA P-256 only")
		}
		version, id := cfg.KeyInfo(i)
		signers = append(signers, Signer{Signer: g, Version: version, ID: id})
	}
	if len(signers) == 0 {
		return nil, nil, errors.New("export: no signing key (VOUCH_EXPORT_KEY_URIS)")
	}
	return signers, release, nil
}
