package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain gives these tests test cards of their own. They sign tens of
// thousands of bundles with one card, and SoftHSM writes a token's file at
// every login: other test processes reading the shared cards' tokens at
// the same time met half-written files ("card not found",
// CKR_GENERAL_ERROR). Made once per machine, like the shared ones.
func TestMain(m *testing.M) {
	if os.Getenv("VOUCH_TEST_CARDS") == "" {
		os.Setenv("VOUCH_TEST_CARDS", filepath.Join(os.TempDir(), "vouch-e2e-cards"))
	}
	os.Exit(m.Run())
}
