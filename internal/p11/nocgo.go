//go:build !cgo

package p11

import (
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"time"
)

// Without cgo there is no PKCS#11: a module is a C library. The roles that
// never sign (ingest, store, cdn, cleanup, federate, registry-sync) are
// built this way into images FROM scratch (deploy/images.sh); everything
// that opens a module there says so instead of failing to build.

// ErrNoCgo is what every call that would load a module returns.
var ErrNoCgo = errors.New("p11: this vouch was built without cgo and cannot load a PKCS#11 module: " +
	"run the roles that sign (all, backoffice, aggregate) from the Debian-based image")

// DefaultTimeout is the cgo build's, so code that sets Module.Timeout builds.
const DefaultTimeout = 30 * time.Second

// Module is never opened in this build.
type Module struct {
	Timeout time.Duration
}

// Open always fails: see ErrNoCgo.
func Open(path string) (*Module, error) { return nil, ErrNoCgo }

// Close does nothing.
func (m *Module) Close() error { return nil }

// Signer always fails: see ErrNoCgo.
func (m *Module) Signer(u URI, pin string) (*Signer, error) { return nil, ErrNoCgo }

// Signer is never made in this build.
type Signer struct{}

var _ crypto.Signer = (*Signer)(nil)

// PINPrompt is the cgo build's.
type PINPrompt func() ([]byte, error)

// SetPINPrompt does nothing.
func (g *Signer) SetPINPrompt(p PINPrompt) {}

// Public is nil: no Signer exists in this build.
func (g *Signer) Public() crypto.PublicKey { return nil }

// Certificate is nil.
func (g *Signer) Certificate() *x509.Certificate { return nil }

// Close does nothing.
func (g *Signer) Close() {}

// Sign always fails: see ErrNoCgo.
func (g *Signer) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) { return nil, ErrNoCgo }
