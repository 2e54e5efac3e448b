// Package testenv gives tests the real parts Vouch runs on: a fresh migrated
// PostgreSQL database, a seeded OpenLDAP registry, an embedded JetStream bus.
// A missing dependency fails the test and names `make deps`; tests never skip
// because the machine lacks something.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
)

// missing fails t because a dependency of the test environment is absent.
func missing(t testing.TB, what string, err error) {
	t.Helper()
	t.Fatalf("testenv: %s is not available (run `make deps` to install and start it): %v", what, err)
}

// randomHex returns n random bytes as hex, for unique names.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testenv: random: %v", err)
	}
	return hex.EncodeToString(b)
}
