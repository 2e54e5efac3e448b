package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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
	ensureReaders(t)
	return VirtualReaders
}

// ensureReaders makes pcscd run with vpcd's readers, empty; the caller
// holds the readers' lock.
func ensureReaders(t testing.TB) {
	t.Helper()
	err := waitReaders(2 * time.Second)
	if errors.Is(err, errNoReader) {
		// A pcscd answers without vpcd's readers: vpcd was installed after
		// it started, or its ports were still held (by a pcscd on its way
		// out) when it started. CI met the second. Ask it to read its
		// reader configuration again; if that does not bring them, it is
		// restarted below.
		exec.Command("/usr/sbin/pcscd", "--hotplug").Run()
		err = waitReaders(3 * time.Second)
	}
	// Not running, or without the readers: (re)start it, for this
	// machine, a few times. It is left running, like the machine's
	// PostgreSQL; not with --auto-exit, whose exit a later test could race.
	for try := 0; err != nil && try < 3; try++ {
		stopPCSCD(t)
		cmd := exec.Command("/usr/sbin/pcscd", "--foreground")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			missing(t, "pcscd", err)
		}
		go cmd.Wait()
		err = waitReaders(10 * time.Second)
	}
	if err != nil {
		missing(t, "pcscd with vpcd's readers", err)
	}
}

// pcscdPIDFile is where pcscd writes its pid; its socket is beside it.
const pcscdPIDFile = "/run/pcscd/pcscd.pid"

// stopPCSCD stops the running pcscd (the caller holds the readers' lock)
// and waits until it is gone and its ports are free.
func stopPCSCD(t testing.TB) {
	t.Helper()
	for _, pid := range pcscdPIDs() {
		p, err := os.FindProcess(pid)
		if err != nil {
			continue
		}
		p.Signal(syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if alive(pid) {
			p.Signal(syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// pcscdPIDs are the running pcscd processes: the one its pid file names,
// and any other (a pid file can be gone while its daemon runs: one
// removes it on the way out while the next has started).
func pcscdPIDs() []int {
	var pids []int
	if b, err := os.ReadFile(pcscdPIDFile); err == nil {
		if pid, err := strconv.Atoi(strings.Trim(string(b), "\x00 \t\r\n")); err == nil && pid > 1 && alive(pid) {
			pids = append(pids, pid)
		}
	}
	es, _ := os.ReadDir("/proc")
	for _, e := range es {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || slices.Contains(pids, pid) {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "pcscd" && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// alive tells whether process pid runs: not gone, and no zombie (a
// container's init may never reap a pcscd whose test process ended).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// errNoReader: a pcscd answers, but without (all of) vpcd's readers.
var errNoReader = errors.New("pcscd answers without the reader")

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
	if errors.Is(err, scard.ErrNoReadersAvailable) {
		return fmt.Errorf("%w: %w", errNoReader, err)
	}
	if err != nil {
		return err
	}
	states := make([]scard.ReaderState, 0, len(VirtualReaders))
	for _, r := range VirtualReaders {
		if !slices.Contains(names, r.Name) {
			return fmt.Errorf("%w %s", errNoReader, r.Name)
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

// WaitCard waits until PC/SC itself sees a card in reader (present) or
// none, so that what a test does next starts from that state and not
// from the moment between a card's removal and pcscd noticing it.
func WaitCard(t testing.TB, reader VirtualReader, present bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sc, err := scard.EstablishContext()
		if err == nil {
			states := []scard.ReaderState{{Reader: reader.Name}}
			err = sc.GetStatusChange(states, 0)
			sc.Release()
			if err == nil || errors.Is(err, scard.ErrTimeout) {
				if (states[0].EventState&scard.StatePresent != 0) == present {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: PC/SC did not see the card %s in %s within 10 s (%v)", map[bool]string{true: "put", false: "taken out"}[present], reader.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
