package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/mod/sumdb/note"
)

// TorchwoodVersion is the witness the transparency tests run: litewitness
// and witnessctl from filippo.io/torchwood, a C2SP tlog-witness
// implementation. v0.6.1 is the newest that builds with this module's Go
// (v0.10.0 needs a newer toolchain).
const TorchwoodVersion = "v0.6.1"

// Witness is a litewitness process owned by one test: it cosigns the
// checkpoints of the one log it was told about, after checking their
// consistency with the last it cosigned. Its Ed25519 key is served to it
// by an ssh-agent in the test process (litewitness signs only through the
// ssh-agent protocol). Kill is a real crash (SIGKILL); Start brings it
// back with the same key and database.
type Witness struct {
	// Name is the witness's key name, the name on its cosignature lines.
	Name string
	// VKey is its verifier key (C2SP signed-note vkey, signature type
	// 0x04 cosignature/v1): what a log's witness policy and a phone are
	// configured with.
	VKey string
	// URL is its base URL; the tlog-witness endpoint is URL/add-checkpoint.
	URL string

	bin, ctl, db, logPath, sock, fingerprint, addr string

	agent net.Listener

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
}

// NewWitness builds litewitness once per machine, makes a witness key,
// tells a fresh witness database about the log of origin whose checkpoint
// key is logVKey, and starts the witness on a free loopback port. It stops
// when the test ends.
func NewWitness(t testing.TB, origin, logVKey string) *Witness {
	t.Helper()
	bins, err := torchwood()
	if err != nil {
		missing(t, "litewitness "+TorchwoodVersion+" (built with go install from the module proxy)", err)
	}
	dir := t.TempDir()
	// A unix socket's path is at most 107 bytes; a test's TempDir can be
	// longer.
	sockDir, err := os.MkdirTemp("", "lw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	name := "witness.vouch.test/" + randomHex(t, 4)
	w := &Witness{Name: name, bin: filepath.Join(bins, "litewitness"), ctl: filepath.Join(bins, "witnessctl"),
		db: filepath.Join(dir, "witness.db"), logPath: filepath.Join(dir, "litewitness.log"),
		sock: filepath.Join(sockDir, "agent.sock")}
	if w.VKey, err = cosignatureVKey(name, pub); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	w.fingerprint = ssh.FingerprintSHA256(sshPub)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	if w.agent, err = net.Listen("unix", w.sock); err != nil {
		t.Fatal(err)
	}
	go serveAgent(w.agent, keyring)
	t.Cleanup(func() { w.agent.Close() })
	for _, args := range [][]string{
		{"add-log", "-db", w.db, "-origin", origin},
		{"add-key", "-db", w.db, "-origin", origin, "-key", logVKey},
	} {
		if out, err := exec.Command(w.ctl, args...).CombinedOutput(); err != nil {
			t.Fatalf("testenv: witnessctl %s: %v\n%s", args[0], err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = ln.Addr().String()
	ln.Close()
	w.URL = "http://" + w.addr
	t.Cleanup(func() {
		w.stop()
		if t.Failed() {
			t.Logf("litewitness's log:\n%s", w.Log())
		}
	})
	w.Start(t)
	return w
}

// serveAgent answers the ssh-agent protocol on ln until it is closed.
func serveAgent(ln net.Listener, keyring agent.Agent) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = agent.ServeAgent(keyring, c)
		}()
	}
}

// cosignatureVKey is the cosignature/v1 verifier key of an Ed25519 key.
func cosignatureVKey(name string, pub ed25519.PublicKey) (string, error) {
	vkey, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return "", err
	}
	return fnote.VKeyToCosignatureV1(vkey)
}

// Start starts the witness (after Kill) and returns once it answers. The
// witness must log the verifier key the test computed: litewitness says
// which key it signs with.
func (w *Witness) Start(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.proc != nil {
		t.Fatal("testenv: litewitness is running already")
	}
	logf, err := os.OpenFile(w.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(w.bin, "-name", w.Name, "-db", w.db, "-ssh-agent", w.sock, "-key", w.fingerprint, "-listen", w.addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start litewitness: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	w.proc, w.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	hc := &http.Client{Timeout: time.Second}
	for {
		resp, err := hc.Get(w.URL + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-done:
			w.proc = nil
			t.Fatalf("testenv: litewitness exited at start:\n%s", w.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("testenv: litewitness did not answer within 30s: %v\n%s", err, w.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if logged := w.loggedVKey(); logged != w.VKey {
		t.Fatalf("testenv: litewitness signs with %q, the test computed %q", logged, w.VKey)
	}
}

// loggedVKey is the last verifier key litewitness logged at its start.
func (w *Witness) loggedVKey() string {
	var vkey string
	sc := bufio.NewScanner(strings.NewReader(w.Log()))
	for sc.Scan() {
		for _, f := range strings.Fields(sc.Text()) {
			if v, ok := strings.CutPrefix(f, "vkey="); ok {
				vkey = strings.Trim(v, `"`)
			}
		}
	}
	return vkey
}

// Kill crashes the witness with SIGKILL and waits until it is gone.
func (w *Witness) Kill(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.proc == nil {
		t.Fatal("testenv: litewitness is not running")
	}
	_ = syscall.Kill(-w.proc.Process.Pid, syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
		t.Fatal("testenv: litewitness did not die within 10s of SIGKILL")
	}
	w.proc = nil
}

func (w *Witness) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.proc == nil {
		return
	}
	_ = syscall.Kill(-w.proc.Process.Pid, syscall.SIGKILL)
	select {
	case <-w.done:
	case <-time.After(10 * time.Second):
	}
	w.proc = nil
}

// Log is the tail of the witness's log.
func (w *Witness) Log() string {
	b, _ := os.ReadFile(w.logPath)
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return string(b)
}

// Cosigned is the size of the latest checkpoint of origin the witness
// cosigned (0 before the first), from its database (witnessctl list-logs).
func (w *Witness) Cosigned(t testing.TB, origin string) uint64 {
	t.Helper()
	out, err := exec.Command(w.ctl, "list-logs", "-db", w.db).Output()
	if err != nil {
		t.Fatalf("testenv: witnessctl list-logs: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var l struct {
			Origin string `json:"origin"`
			Size   uint64 `json:"size"`
		}
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("testenv: witnessctl list-logs: no log %q in %q (%v)", origin, out, err)
		}
		if l.Origin == origin {
			return l.Size
		}
	}
}

var torchwoodOnce struct {
	once sync.Once
	dir  string
	err  error
}

// torchwood is the directory holding litewitness and witnessctl of
// TorchwoodVersion, built once into the user's cache directory.
func torchwood() (string, error) {
	torchwoodOnce.once.Do(func() {
		torchwoodOnce.dir, torchwoodOnce.err = goInstall("torchwood-"+TorchwoodVersion, TorchwoodVersion,
			"filippo.io/torchwood/cmd/litewitness", "filippo.io/torchwood/cmd/witnessctl")
	})
	return torchwoodOnce.dir, torchwoodOnce.err
}

// goInstall builds the commands pkgs at version with go install from the
// module proxy into a directory of the user's cache named name, once per
// machine (a file lock keeps two test processes from building at once),
// and returns that directory. A directory holding every command is
// reused.
func goInstall(name, version string, pkgs ...string) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "vouch-test", name)
	have := func() bool {
		for _, p := range pkgs {
			if fi, err := os.Stat(filepath.Join(dir, filepath.Base(p))); err != nil || !fi.Mode().IsRegular() {
				return false
			}
		}
		return true
	}
	if have() {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if have() {
		return dir, nil // another process built them while this one waited
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	args := []string{"install"}
	for _, p := range pkgs {
		args = append(args, p+"@"+version)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = tmp // outside the module: go install pkg@version ignores it anyway
	// The default build settings, so that the build cache other builds
	// filled serves this one too.
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-mod=mod")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	for _, p := range pkgs {
		b := filepath.Base(p)
		if err := os.Rename(filepath.Join(tmp, b), filepath.Join(dir, b)); err != nil {
			return "", err
		}
	}
	if !have() {
		return "", errors.New("go install left no binaries")
	}
	return dir, nil
}
