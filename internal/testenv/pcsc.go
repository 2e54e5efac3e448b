package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ebfe/scard"

	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/virtualcard"
)

// VirtualReader is one of vpcd's readers: its PC/SC name and the address
// a virtual card connects to.
type VirtualReader struct {
	Name string
	Addr string
}

// The two readers vsmartcard's vpcd adds to pcscd.
var VirtualReaders = []VirtualReader{
	{Name: "Virtual PCD 00 00", Addr: "127.0.0.1:35963"},
	{Name: "Virtual PCD 00 01", Addr: "127.0.0.1:35964"},
}

// OpenSCModule is OpenSC's PKCS#11 module, which reads the virtual cards.
const OpenSCModule = "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so"

// PCSC gives the test the machine's one pcscd with vpcd's two virtual
// readers, empty, starting pcscd when it does not run. pcscd's socket is
// machine-wide, so the test holds a machine-wide lock until it ends: tests
// that use the readers, in any package, run one at a time.
func PCSC(t testing.TB) []VirtualReader {
	t.Helper()
	for _, f := range []string{"/usr/sbin/pcscd", "/usr/lib/pcsc/drivers/serial/libifdvpcd.so", OpenSCModule} {
		if _, err := os.Stat(f); err != nil {
			missing(t, "PC/SC with the virtual reader and OpenSC ("+f+")", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "vouch-pcscd.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		lock.Close()
	})
	if err := waitReaders(2 * time.Second); err != nil {
		// Not running (or without vpcd): start it, for this machine. It is
		// left running, like the machine's PostgreSQL.
		cmd := exec.Command("/usr/sbin/pcscd", "--foreground", "--auto-exit")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			missing(t, "pcscd", err)
		}
		go cmd.Wait()
		if err := waitReaders(10 * time.Second); err != nil {
			missing(t, "pcscd with vpcd's readers", err)
		}
	}
	return VirtualReaders
}

// waitReaders waits until PC/SC lists vpcd's readers, all empty.
func waitReaders(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := readersReady()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func readersReady() error {
	sc, err := scard.EstablishContext()
	if err != nil {
		return err
	}
	defer sc.Release()
	names, err := sc.ListReaders()
	if err != nil {
		return err
	}
	states := make([]scard.ReaderState, 0, len(VirtualReaders))
	for _, r := range VirtualReaders {
		if !slices.Contains(names, r.Name) {
			return errors.New("no reader " + r.Name)
		}
		states = append(states, scard.ReaderState{Reader: r.Name})
	}
	if err := sc.GetStatusChange(states, 0); err != nil && !errors.Is(err, scard.ErrTimeout) {
		return err
	}
	for _, s := range states {
		if s.EventState&scard.StatePresent != 0 {
			return errors.New("a card is still in " + s.Reader)
		}
	}
	return nil
}

// InsertCard makes the virtual card of the named test card (its keys on
// SoftHSM; see Cards) and puts it into reader; it is pulled out when the
// test ends. The card's PIN counter starts full.
func InsertCard(t testing.TB, man *testpki.Manifest, name string, reader VirtualReader) (*virtualcard.Card, *virtualcard.Inserted) {
	t.Helper()
	var mc *testpki.ManifestCard
	for i := range man.Cards {
		if man.Cards[i].Name == name {
			mc = &man.Cards[i]
		}
	}
	if mc == nil {
		t.Fatalf("testenv: no test card %q", name)
	}
	m, err := p11.Open(man.Module)
	if err != nil {
		t.Fatal(err)
	}
	card, closeCard, err := virtualcard.FromTestCard(m, *mc)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	in, err := card.Insert(context.Background(), reader.Addr)
	if err != nil {
		closeCard()
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Remove()
		closeCard()
		m.Close()
	})
	return card, in
}
