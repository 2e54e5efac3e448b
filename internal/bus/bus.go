// Package bus connects Vouch to NATS JetStream: an external server or cluster
// named by URL, or, when none is configured, a server embedded in this process
// so that one machine (a laptop, CI, `vouch all`) needs nothing else.
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
	// URL of an external NATS server or cluster; empty starts an embedded server.
	URL string `env:"NATS_URL"`
	// StoreDir is the embedded server's JetStream store; empty means a
	// directory under os.TempDir.
	StoreDir string `env:"VOUCH_BUS_DIR"`
	// Host and Port the embedded server listens on for other processes.
	// Port 0 or -1 picks a free port (nats-server's own 0 would mean 4222,
	// which another server on the machine may already hold).
	Host string `env:"VOUCH_BUS_HOST, default=127.0.0.1"`
	Port int    `env:"VOUCH_BUS_PORT, default=-1"`
	// DontListen keeps the embedded server off the network; only this
	// process can connect, in process.
	DontListen bool `env:"VOUCH_BUS_DONT_LISTEN"`
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

	b := &Bus{url: cfg.URL}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		// Keep reconnecting forever: a server restart must not kill a role.
		nats.MaxReconnects(-1),
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
		dir = filepath.Join(os.TempDir(), "vouch-bus")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bus: store dir: %w", err)
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
		DontListen: cfg.DontListen,
		JetStream:  true,
		StoreDir:   dir,
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
