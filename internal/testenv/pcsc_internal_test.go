package testenv

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPCSCRecoversFromPcscdWithoutReaders: a pcscd that answers without
// vpcd's readers (CI met one: started while the ports were still held) is
// replaced, instead of failing every test that uses the readers.
func TestPCSCRecoversFromPcscdWithoutReaders(t *testing.T) {
	PCSC(t) // the lock, and a pcscd as every test finds it
	stopPCSCD(t)

	// A pcscd with an empty reader configuration: it answers, without readers.
	conf := t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "none"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/sbin/pcscd", "--foreground", "-c", conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if err = readersReady(); err != nil && isNoReader(err) {
			break
		}
	}
	if !isNoReader(err) {
		t.Fatalf("the empty pcscd: readersReady = %v, want no reader", err)
	}

	ensureReaders(t)
	if err := readersReady(); err != nil {
		t.Fatalf("after ensureReaders: %v", err)
	}
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("the pcscd without readers still runs")
	}
}

func isNoReader(err error) bool {
	return err != nil && errors.Is(err, errNoReader)
}
