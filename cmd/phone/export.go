package main

import (
	"crypto/ecdsa"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
)

// openExport verifies an export's signature with internal/export's reader
// and returns its keys.
func openExport(zip []byte, trusted []*ecdsa.PublicKey) ([]exposure.Key, error) {
	f, err := export.Open(zip, trusted)
	if err != nil {
		return nil, err
	}
	keys := make([]exposure.Key, len(f.Keys))
	for i, k := range f.Keys {
		keys[i] = k.Key
	}
	return keys, nil
}
