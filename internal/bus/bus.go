// Package bus connects Vouch to NATS JetStream: an external server or cluster
// named by URL, or, when none is configured, a server embedded in this process
// so that one machine (a laptop, CI, `vouch all`) needs nothing else. Streams
// and buckets are made with the configured replicas on file storage, and
// writes are retried through a leader election (Retry).
package bus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config selects an external server (URL) or configures the embedded one.
type Config struct {
	// URL of an external NATS server or cluster, several servers of one
	// cluster separated by commas (nats://a:4222,nats://b:4222): the client
	// connects to any that answers and moves to another when it goes.
	// Empty starts an embedded server.
	URL string `env:"NATS_URL"`
	// Token authenticates this process to the server: to an external one,
	// and the embedded one requires it of every client when it listens.
	// Read it from a file with VOUCH_BUS_TOKEN_FILE.
	Token string `env:"VOUCH_BUS_TOKEN"`
	// CredsFile is a NATS credentials file (a user JWT and its NKey seed,
	// as nsc writes it) for a server run in operator mode; NKeyFile a file
	// holding a user's NKey seed (SU...) for a server that lists the public
	// key. At most one of them, and neither with a token.
	CredsFile string `env:"VOUCH_BUS_CREDS_FILE"`
	NKeyFile  string `env:"VOUCH_BUS_NKEY_FILE"`
	// CAFile (PEM) verifies the servers' certificates and makes the
	// connection TLS; CertFile and KeyFile (PEM, both or neither) are this
	// client's certificate for servers that ask for one (verify: true).
	CAFile   string `env:"VOUCH_BUS_CA_FILE"`
	CertFile string `env:"VOUCH_BUS_CERT_FILE"`
	KeyFile  string `env:"VOUCH_BUS_KEY_FILE"`
	// Replicas of every stream and bucket this process creates: 1 on one
	// machine, 3 (or 5) on a cluster of as many servers, so that losing
	// one server loses no acknowledged write. Every role must use the same.
	Replicas int `env:"VOUCH_BUS_REPLICAS, default=1"`
	// StoreDir is the embedded server's JetStream store; empty means
	// $XDG_STATE_HOME/vouch/bus (~/.local/state/vouch/bus). Other users
	// may not write it: whoever can write it can write license states.
	StoreDir string `env:"VOUCH_BUS_DIR"`
	// Listen lets other processes reach the embedded server on Host:Port,
	// with Token. Off by default: the roles of `vouch all` connect in
	// process, and nothing else needs to.
	Listen bool `env:"VOUCH_BUS_LISTEN"`
	// Host and Port the embedded server listens on when Listen is set.
	// Port 0 or -1 picks a free port (nats-server's own 0 would mean 4222,
	// which another server on the machine may already hold).
	Host string `env:"VOUCH_BUS_HOST, default=127.0.0.1"`
	Port int    `env:"VOUCH_BUS_PORT, default=-1"`
	// Name identifies this client (and the embedded server) in monitoring.
	Name string `env:"VOUCH_BUS_NAME, default=vouch"`
	// StartTimeout bounds waiting for the embedded server to accept clients.
	StartTimeout time.Duration `env:"VOUCH_BUS_START_TIMEOUT, default=10s"`
}

// Bus is a connection to JetStream, and the embedded server when there is one.
type Bus struct {
	srv *server.Server // nil when connected to an external server
	nc  *nats.Conn
	js  jetstream.JetStream
	url string
	// replicas of the streams and buckets this process creates.
	replicas int
}

// Start connects to cfg.URL, or starts an embedded JetStream server and
// connects to it in process.
func Start(ctx context.Context, cfg Config) (*Bus, error) {
	if cfg.Name == "" {
		cfg.Name = "vouch"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 10 * time.Second
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bus: start: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bus{url: cfg.URL, replicas: max(cfg.Replicas, 1)}
	opts, err := cfg.clientOptions()
	if err != nil {
		return nil, err
	}
	if cfg.URL == "" {
		srv, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		b.url = srv.ClientURL()
		opts = append(opts, nats.InProcessServer(srv))
	}

	nc, err := nats.Connect(b.url, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("bus: connect %s: %w", b.url, err)
	}
	b.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.js = js
	return b, nil
}

func startEmbedded(cfg Config) (*server.Server, error) {
	dir := cfg.StoreDir
	if dir == "" {
		var err error
		if dir, err = defaultStoreDir(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bus: store dir: %w", err)
	}
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("bus: store dir: %w", err)
	} else if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("bus: store dir %s is writable by other users (mode %04o): make it 0700, or name another with VOUCH_BUS_DIR",
			dir, st.Mode().Perm())
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	sopts := &server.Options{
		ServerName: cfg.Name,
		Host:       host,
		Port:       port,
		DontListen: !cfg.Listen,
		// Every client, in process or not, shows the token when there is one.
		Authorization: cfg.Token,
		JetStream:     true,
		StoreDir:      dir,
		// The process owns signals and logging; the server must not.
		NoSigs: true,
		NoLog:  true,
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(cfg.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("bus: embedded server not ready after %s", cfg.StartTimeout)
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("bus: embedded server started without JetStream")
	}
	return srv, nil
}

// minTokenLen is the shortest token a listening server accepts: long enough
// that guessing it is hopeless.
const minTokenLen = 32

// defaultStoreDir is $XDG_STATE_HOME/vouch/bus, or ~/.local/state/vouch/bus:
// the user's own, never a shared temporary directory.
func defaultStoreDir() (string, error) {
	if d := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "vouch", "bus"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("bus: no VOUCH_BUS_DIR and no home directory for the store: %w", err)
	}
	return filepath.Join(home, ".local", "state", "vouch", "bus"), nil
}

// Conn returns the core NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// JetStream returns the JetStream API on the connection.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// ClientURL is the URL other processes can use to reach the server. For an
// embedded server started with DontListen it is not reachable from outside.
func (b *Bus) ClientURL() string { return b.url }

// Embedded reports whether the server runs inside this process.
func (b *Bus) Embedded() bool { return b.srv != nil }

// Healthy reports whether the connection is up and JetStream answers.
func (b *Bus) Healthy() error {
	if b.srv != nil {
		if !b.srv.Running() {
			return errors.New("bus: embedded server stopped")
		}
		if st := b.srv.Healthz(nil); st.Error != "" {
			return fmt.Errorf("bus: embedded server unhealthy: %s", st.Error)
		}
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("bus: connection %s", b.nc.Status())
	}
	// A bounded round trip: the signature has no ctx because health checks
	// are called from probes that only want a yes or no quickly.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("bus: jetstream: %w", err)
	}
	return nil
}

// Close closes the connection and stops the embedded server, if any.
func (b *Bus) Close() {
	if b.nc != nil {
		b.nc.Close()
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}

// Replicas is how many servers hold each stream and bucket this process
// creates (VOUCH_BUS_REPLICAS).
func (b *Bus) Replicas() int { return b.replicas }
