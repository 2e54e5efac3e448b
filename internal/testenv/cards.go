package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/vouch-nl/vouch/internal/testpki"
)

// cardsVersion changes whenever the way cards are made changes, so a stale
// cache is never used.
const cardsVersion = "5"

var cards struct {
	once sync.Once
	man  *testpki.Manifest
	err  error
	// users holds the shared lock on the cache for the process's
	// lifetime. It must stay referenced: an unreachable *os.File is
	// closed by its finalizer, and the lock with it.
	users *os.File
}

// CardsDir is the cache directory of the test cards for kind ("" for the
// shared one): named by the way cards are made, so that two checkouts
// with different cards never rebuild each other's tokens.
func CardsDir(kind string) string {
	spec, _ := json.Marshal(testpki.Cards())
	sum := sha256.Sum256(append([]byte(cardsVersion), spec...))
	if kind != "" {
		kind += "-"
	}
	return filepath.Join(os.TempDir(), "vouch-testcards-"+kind+hex.EncodeToString(sum[:6]))
}

// Cards returns the standard test cards on SoftHSM2 tokens. They are made
// once per machine in a shared cache directory (under a file lock, because
// test packages run as parallel processes) and reused: making 30 RSA keys on
// a token takes seconds. VOUCH_TEST_CARDS names another directory (make demo
// runs the browser test against its own cards). SOFTHSM2_CONF is set for
// this process; the module must not have been loaded with another
// configuration before.
func Cards(t testing.TB) *testpki.Manifest {
	t.Helper()
	if _, err := os.Stat(testpki.DefaultModule); err != nil {
		missing(t, "SoftHSM2 ("+testpki.DefaultModule+")", err)
	}
	cards.once.Do(func() {
		dir := CardsDir("")
		if d := os.Getenv("VOUCH_TEST_CARDS"); d != "" {
			dir = d
		}
		if cards.err = os.MkdirAll(dir, 0o700); cards.err != nil {
			return
		}
		lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			cards.err = err
			return
		}
		defer lock.Close()
		if cards.err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); cards.err != nil {
			return
		}
		defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		// Every process that uses the tokens holds .users shared until it
		// exits (the descriptor is never closed), so the cache is never
		// rebuilt under a test that is using it.
		users, err := os.OpenFile(filepath.Join(dir, ".users"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			cards.err = err
			return
		}
		cards.man, cards.err = testpki.Provision(dir, testpki.DefaultModule, testpki.Cards())
		if cards.err != nil {
			// A cache left broken (a test killed while making cards): start
			// again from nothing, once — but only when no other process is
			// using it. When one is, the cache works for it, and the fault
			// is more likely this process's (a mutation test running a
			// broken p11): report it instead of pulling the tokens from
			// under the others.
			if syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				users.Close()
				return
			}
			if err := os.Remove(filepath.Join(dir, "layout")); err != nil && !os.IsNotExist(err) {
				users.Close()
				return
			}
			cards.man, cards.err = testpki.Provision(dir, testpki.DefaultModule, testpki.Cards())
		}
		if cards.err == nil {
			cards.err = syscall.Flock(int(users.Fd()), syscall.LOCK_SH)
		}
		if cards.err != nil {
			users.Close()
			return
		}
		cards.users = users
	})
	if cards.err != nil {
		t.Fatalf("testenv: making test cards: %v", cards.err)
	}
	return cards.man
}
