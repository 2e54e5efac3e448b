package testenv

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NATSServerModule is the server the cluster runs; its version is go.mod's.
const NATSServerModule = "github.com/nats-io/nats-server/v2"

// NATSCluster is three nats-server processes (built from go.mod's version,
// so that kill -9 is a real crash of a real server) with cluster routes to
// each other, JetStream on a store of their own and sync_interval: always
// (every write on disk before it is acknowledged: Jepsen found lazy fsync
// losing acknowledged writes in NATS 2.12).
type NATSCluster struct {
	Nodes []*NATSNode
}

// NATSNode is one nats-server process of a cluster, restarted with the
// same configuration and store after a kill.
type NATSNode struct {
	Name          string
	Port, Monitor int

	bin, conf string
	log       *os.File
	cmd       *exec.Cmd
	done      chan struct{}
}

// URL lists every server, for NATS_URL.
func (c *NATSCluster) URL() string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// Node is the server named name, or nil.
func (c *NATSCluster) Node(name string) *NATSNode {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// URL is the server's client URL.
func (n *NATSNode) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// NewNATSCluster starts a cluster (StartNATSCluster) with its
// configurations, stores and logs in dir, clients authorised by token. It
// stops when the test ends, logging each server's log tail if it failed.
func NewNATSCluster(t testing.TB, dir, token string) *NATSCluster {
	t.Helper()
	c, err := StartNATSCluster(dir, token)
	if c != nil {
		t.Cleanup(func() {
			c.Stop()
			if t.Failed() {
				for _, n := range c.Nodes {
					t.Logf("%s's log:\n%s", n.Name, n.Log(3000))
				}
			}
		})
	}
	if err != nil {
		t.Fatalf("testenv: nats cluster: %v", err)
	}
	return c
}

// StartNATSCluster builds nats-server (NATSServerBinary), starts three
// servers in dir and waits until all are healthy. It is NewNATSCluster's
// core for programs without a testing.TB (the bench): the caller calls
// Stop, also after an error when the cluster is not nil.
func StartNATSCluster(dir, token string) (*NATSCluster, error) {
	bin, err := NATSServerBinary()
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{Nodes: make([]*NATSNode, 3)}
	routes := make([]int, 3)
	for i := range c.Nodes {
		n := &NATSNode{bin: bin, Name: fmt.Sprintf("n%d", i+1)}
		for _, p := range []*int{&n.Port, &n.Monitor, &routes[i]} {
			if *p, err = freeLoopbackPort(); err != nil {
				return nil, err
			}
		}
		c.Nodes[i] = n
	}
	for i, n := range c.Nodes {
		var rs []string
		for j, r := range routes {
			if j != i {
				rs = append(rs, fmt.Sprintf("nats-route://127.0.0.1:%d", r))
			}
		}
		store := filepath.Join(dir, n.Name, "store")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
authorization { token: %q }
jetstream { store_dir: %q, sync_interval: always }
cluster { name: vouch-e2e, listen: 127.0.0.1:%d, routes: [%s] }
`, n.Name, n.Port, n.Monitor, token, store, routes[i], strings.Join(rs, ", "))
		n.conf = filepath.Join(dir, n.Name+".conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return c, err
		}
		if n.log, err = os.Create(filepath.Join(dir, n.Name+".log")); err != nil {
			return c, err
		}
		if err := n.Start(); err != nil {
			return c, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.WaitHealthy(60 * time.Second); err != nil {
			return c, err
		}
	}
	return c, nil
}

// Stop stops every server (SIGTERM, then SIGKILL after 20 s) and closes
// their logs.
func (c *NATSCluster) Stop() {
	for _, n := range c.Nodes {
		if n == nil {
			continue
		}
		n.stop()
		if n.log != nil {
			n.log.Close()
		}
	}
}

// Start starts the server (again, after a kill) on its configuration and
// store.
func (n *NATSNode) Start() error {
	n.cmd = exec.Command(n.bin, "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	n.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(n.cmd, n.done)
	return nil
}

// Kill9 kills the server with SIGKILL, a crash, and waits until it is gone.
func (n *NATSNode) Kill9() error {
	if err := syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %s: %w", n.Name, err)
	}
	<-n.done
	return nil
}

func (n *NATSNode) stop() {
	if n.cmd == nil {
		return
	}
	select {
	case <-n.done:
		return
	default:
	}
	syscall.Kill(-n.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.done
	}
}

// Log is the last max bytes the server logged.
func (n *NATSNode) Log(max int) string {
	if n.log == nil {
		return ""
	}
	b, _ := os.ReadFile(n.log.Name())
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// WaitHealthy waits until the server's monitoring endpoint says it is
// healthy: JetStream up and, in a cluster, current with the meta leader.
func (n *NATSNode) WaitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.Monitor)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-n.done:
			return fmt.Errorf("%s stopped:\n%s", n.Name, n.Log(3000))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not healthy after %s (%v):\n%s", n.Name, within, err, n.Log(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var natsServerBuilt struct {
	once sync.Once
	path string
	err  error
}

// NATSServerBinary builds nats-server at go.mod's version once into the
// user's cache (outside the repository), keyed by that version, and
// returns its path.
func NATSServerBinary() (string, error) {
	natsServerBuilt.once.Do(func() {
		natsServerBuilt.path, natsServerBuilt.err = buildNATSServer()
	})
	return natsServerBuilt.path, natsServerBuilt.err
}

func buildNATSServer() (string, error) {
	// go.mod's version (a test binary's build info lists no modules).
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", NATSServerModule)
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	version := strings.TrimSpace(string(out))
	if err != nil || version == "" {
		return "", fmt.Errorf("go list -m %s: %q, %w", NATSServerModule, out, err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "vouch-test", "nats-server-"+version)
	bin := filepath.Join(dir, "nats-server")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	// In the repository, so that go.mod's version is the one built.
	cmd = exec.Command("go", "build", "-o", filepath.Join(tmp, "nats-server"), NATSServerModule)
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s@%s: %w\n%s", NATSServerModule, version, err, out)
	}
	// A rename is atomic: another process building at the same time
	// leaves one whole binary either way.
	if err := os.Rename(filepath.Join(tmp, "nats-server"), bin); err != nil {
		return "", err
	}
	return bin, nil
}
