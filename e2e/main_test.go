package e2e

import (
	"os"
	"testing"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestMain gives these tests test cards of their own. They sign tens of
// thousands of bundles with one card, and SoftHSM writes a token's file at
// every login: other test processes reading the shared cards' tokens at
// the same time met half-written files ("card not found",
// CKR_GENERAL_ERROR). Made once per machine, like the shared ones, and
// named like them by the way cards are made.
func TestMain(m *testing.M) {
	if os.Getenv("VOUCH_TEST_CARDS") == "" {
		os.Setenv("VOUCH_TEST_CARDS", testenv.CardsDir("e2e"))
	}
	os.Exit(m.Run())
}
