package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// dockerd is a docker daemon the test started, on its own socket.
type dockerd struct {
	host string // DOCKER_HOST
}

// needTools fails naming make deps when a tool the images need is missing.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run make deps (it installs Debian's docker.io and mmdebstrap)", tool)
		}
	}
}

// startDockerd starts a daemon of the test's own: its socket and exec root
// in a fresh directory, its data root in the user's cache
// (vouch-images/dockerd), kept between runs so that a second run finds the
// Debian base and the layers already there. One test process at a time
// uses it (a lock beside it); a daemon left running by a killed run (its
// pid file) is stopped first. The daemon touches no host networking: no
// bridge, no iptables; containers run with --network host or none.
func startDockerd(t *testing.T) *dockerd {
	t.Helper()
	needTools(t, "dockerd", "docker", "mmdebstrap")
	if os.Geteuid() != 0 {
		t.Fatal("dockerd runs as root here (Debian's docker.io, no rootless setup): run the test as root")
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(cache, "vouch-images", "dockerd")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(state, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	deadline := time.Now().Add(10 * time.Minute)
	for syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("another test holds %s for over 10 minutes", lock.Name())
		}
		time.Sleep(500 * time.Millisecond)
	}
	pidFile := filepath.Join(state, "dockerd.pid")
	stopStale(t, pidFile)
	// Run directories of earlier runs: ours alone, under the lock.
	stale, _ := filepath.Glob(filepath.Join(os.TempDir(), "vouch-dockerd-*"))
	for _, dir := range stale {
		removeRunDir(dir)
	}
	// A short path: the socket's must fit in 108 bytes.
	run, err := os.MkdirTemp("", "vouch-dockerd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(run, "docker.sock")
	logf, err := os.Create(filepath.Join(run, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("dockerd", "--host", "unix://"+sock, "--data-root", filepath.Join(state, "data"),
		"--exec-root", filepath.Join(run, "exec"), "--pidfile", pidFile,
		"--bridge", "none", "--iptables=false", "--ip-masq=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if !t.Failed() {
			removeRunDir(run)
		} else {
			t.Logf("dockerd's log: %s", logf.Name())
		}
	})
	d := &dockerd{host: "unix://" + sock}
	deadline = time.Now().Add(60 * time.Second)
	for {
		if _, err := d.docker(context.Background(), "version"); err == nil {
			return d
		}
		select {
		case err := <-exited:
			exited <- err
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("dockerd exited: %v\n%s", err, tail(b, 3000))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("dockerd did not answer on %s within 60 s\n%s", sock, tail(b, 3000))
		}
	}
}

// stopStale stops the dockerd a killed run left (its pid file names a
// live dockerd) and removes the file.
func stopStale(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err == nil && pid > 0 {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) == "dockerd" {
			t.Logf("stopping dockerd %d, left by an earlier run", pid)
			_ = syscall.Kill(pid, syscall.SIGTERM)
			for i := 0; i < 150 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(200 * time.Millisecond)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	os.Remove(pidFile)
}

// removeRunDir removes a daemon's run directory, unmounting first what
// dockerd leaves mounted in its exec root (exec/netns/default).
func removeRunDir(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
	os.RemoveAll(dir)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// docker runs the docker client against d.
func (d *dockerd) docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("docker %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestImages: make images' script builds every role's image on a daemon of
// the test's own; each runs its role as UID 10001; the scratch ones hold no
// shell; and vouch all's image, run with --network host against the test's
// PostgreSQL, answers /readyz on its operations listener.
func TestImages(t *testing.T) {
	t.Parallel()
	d := startDockerd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	start := time.Now()
	cmd := exec.CommandContext(ctx, "./images.sh")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "VOUCH_VERSION=test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("images.sh: %v\n%s", err, out)
	}
	t.Logf("images.sh took %s:\n%s", time.Since(start).Round(time.Second), out)

	for role, kind := range imageRoles(t) {
		js, err := d.docker(ctx, "image", "inspect", "-f", "{{json .Config}}", "vouch-"+role+":test")
		if err != nil {
			t.Errorf("no image for %s: %v", role, err)
			continue
		}
		var cfg struct {
			User       string
			Entrypoint []string
		}
		if err := json.Unmarshal([]byte(js), &cfg); err != nil {
			t.Fatal(err)
		}
		command := role
		if role == "transparency" {
			command = "transparency log" // the group's server command
		}
		if cfg.User != "10001:10001" || strings.Join(cfg.Entrypoint, " ") != "/vouch "+command {
			t.Errorf("vouch-%s runs %q as %q, want /vouch %s as 10001:10001", role, cfg.Entrypoint, cfg.User, command)
		}
		if kind == "static" {
			// FROM scratch: the binary, the CA bundle, nothing to run a
			// shell with.
			if out, err := d.docker(ctx, "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", "vouch-"+role+":test", "-c", "true"); err == nil {
				t.Errorf("vouch-%s has a shell: %s", role, out)
			}
		}
	}

	// The static build cannot sign: a scratch image asked to says why
	// rather than crashing or pretending.
	dbURL := testenv.DatabaseURL(t)
	out2, err := d.docker(ctx, "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/export:uid=10001",
		"--entrypoint", "/vouch", "-e", "VOUCH_EXPORT_DIR=/export",
		"-e", "VOUCH_EXPORT_KEY_URIS=pkcs11:token=t;object=k?module-path=/opt/hsm/libpkcs11.so",
		"-e", "DATABASE_URL="+dbURL,
		"vouch-store:test", "aggregate", "-once")
	if err == nil || !strings.Contains(out2, "built without cgo") {
		t.Errorf("vouch aggregate in a scratch image: want a refusal naming the missing cgo, got %v:\n%s", err, out2)
	}

	// vouch all, with the test PKI and the test's database.
	cards := testenv.Cards(t).TrustFiles()
	trust := t.TempDir()
	if err := os.Chmod(trust, 0o755); err != nil {
		t.Fatal(err)
	}
	mount := func(src, name string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// World-readable: the container's user is 10001.
		p := filepath.Join(trust, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "/etc/vouch/trust/" + name
	}
	var cas, crls []string
	for _, c := range cards.IssuingCAs {
		cas = append(cas, string(c.Type)+":"+mount(c.File, "ca-"+string(c.Type)+".pem"))
	}
	for i, f := range cards.CRLs {
		crls = append(crls, mount(f, fmt.Sprintf("crl-%d.crl", i)))
	}
	ops := freeAddr(t)
	env := map[string]string{
		"DATABASE_URL":           dbURL,
		"VOUCH_CARD_PROFILE":     "test",
		"VOUCH_UZI_ROOTS":        mount(cards.Roots[0], "root.pem"),
		"VOUCH_UZI_CAS":          strings.Join(cas, ","),
		"VOUCH_UZI_CRLS":         strings.Join(crls, ","),
		"VOUCH_ATTESTATION_KEYS": mount(filepath.Join("..", "testdata", "bundle", "attestation.pub.pem"), "attestation.pub.pem"),
		"VOUCH_BUS_DIR":          "/state/bus",
		"VOUCH_OPS_LISTEN":       ops,
		"VOUCH_HTTP_ADDR":        freeAddr(t),
		"VOUCH_INGEST_ADDR":      freeAddr(t),
	}
	name := "vouch-images-test-all"
	// A container a killed run left behind.
	_, _ = d.docker(ctx, "rm", "-f", name)
	args := []string{"run", "-d", "--name", name, "--network", "host", "--read-only",
		"--tmpfs", "/state:rw,uid=10001,gid=10001,mode=0700", "-v", trust + ":/etc/vouch/trust:ro"}
	for k, v := range env {
		args = append(args, "-e", k+"="+v)
	}
	args = append(args, "vouch-all:test")
	if _, err := d.docker(ctx, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = d.docker(context.Background(), "rm", "-f", name) })
	logs := func() string { out, _ := d.docker(context.Background(), "logs", name); return tail([]byte(out), 4000) }

	started := time.Now()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + ops + "/readyz")
		if err == nil {
			body := new(bytes.Buffer)
			_, _ = body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Logf("vouch all's image ready after %s", time.Since(started).Round(100*time.Millisecond))
				break
			}
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		if state, _ := d.docker(ctx, "inspect", "-f", "{{.State.Running}}", name); strings.TrimSpace(state) == "false" {
			t.Fatalf("vouch all's container stopped:\n%s", logs())
		}
		if time.Since(started) > 90*time.Second {
			t.Fatalf("/readyz on %s did not answer 200 within 90 s (last: %v); the container's log:\n%s", ops, err, logs())
		}
		time.Sleep(250 * time.Millisecond)
	}
	resp, err := client.Get("http://" + ops + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
}
