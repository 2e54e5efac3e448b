package bus

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Validate checks cfg before anything connects, naming the variable at
// fault: a cluster misconfigured by one variable should say which, not
// fail later with a server's "authorization violation".
func (cfg *Config) Validate() error {
	var errs []error
	switch cfg.Replicas {
	case 0, 1, 3, 5: // 0: a Config made in code, 1
	default:
		errs = append(errs, fmt.Errorf("VOUCH_BUS_REPLICAS must be 1, 3 or 5 (an odd number of servers keeps a majority), got %d", cfg.Replicas))
	}
	if cfg.URL == "" {
		if cfg.Replicas > 1 {
			errs = append(errs, fmt.Errorf("VOUCH_BUS_REPLICAS=%d needs a cluster of as many servers in NATS_URL: the embedded server is one", cfg.Replicas))
		}
		if cfg.Listen && len(cfg.Token) < minTokenLen {
			errs = append(errs, fmt.Errorf("an embedded server that listens (VOUCH_BUS_LISTEN) needs VOUCH_BUS_TOKEN of at least %d characters: "+
				"without it any local user could write license states", minTokenLen))
		}
		for name, v := range map[string]string{"VOUCH_BUS_CREDS_FILE": cfg.CredsFile, "VOUCH_BUS_NKEY_FILE": cfg.NKeyFile,
			"VOUCH_BUS_CA_FILE": cfg.CAFile, "VOUCH_BUS_CERT_FILE": cfg.CertFile, "VOUCH_BUS_KEY_FILE": cfg.KeyFile} {
			if v != "" {
				errs = append(errs, fmt.Errorf("%s is for an external server (NATS_URL), and NATS_URL is not set", name))
			}
		}
		return joinErrs(errs)
	}
	for _, u := range strings.Split(cfg.URL, ",") {
		if err := checkServerURL(strings.TrimSpace(u)); err != nil {
			errs = append(errs, err)
		}
	}
	if n := countSet(cfg.Token, cfg.CredsFile, cfg.NKeyFile); n > 1 {
		errs = append(errs, errors.New("set one of VOUCH_BUS_TOKEN, VOUCH_BUS_CREDS_FILE and VOUCH_BUS_NKEY_FILE: a server takes one way to authenticate a client"))
	}
	if cfg.CredsFile != "" {
		if err := checkCreds(cfg.CredsFile); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.NKeyFile != "" {
		if _, err := nats.NkeyOptionFromSeed(cfg.NKeyFile); err != nil {
			errs = append(errs, fmt.Errorf("VOUCH_BUS_NKEY_FILE %s: %w", cfg.NKeyFile, err))
		}
	}
	if cfg.CAFile != "" {
		if _, err := loadCAs(cfg.CAFile); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case (cfg.CertFile == "") != (cfg.KeyFile == ""):
		errs = append(errs, errors.New("VOUCH_BUS_CERT_FILE and VOUCH_BUS_KEY_FILE go together: set both or neither"))
	case cfg.CertFile != "":
		if _, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("VOUCH_BUS_CERT_FILE and VOUCH_BUS_KEY_FILE: %w", err))
		}
	}
	return joinErrs(errs)
}

func joinErrs(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("bus: %w", errors.Join(errs...))
}

func countSet(vs ...string) int {
	n := 0
	for _, v := range vs {
		if v != "" {
			n++
		}
	}
	return n
}

// checkServerURL checks one server of NATS_URL.
func checkServerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("NATS_URL: %q is not a server URL (nats://host:port, several separated by commas)", s)
	}
	switch u.Scheme {
	case "nats", "tls":
	default:
		return fmt.Errorf("NATS_URL: %q: scheme %q, want nats:// or tls://", s, u.Scheme)
	}
	if u.User != nil {
		// A password in a URL ends up in logs and process listings.
		return fmt.Errorf("NATS_URL: %s carries credentials: use VOUCH_BUS_TOKEN_FILE, VOUCH_BUS_CREDS_FILE or VOUCH_BUS_NKEY_FILE", u.Redacted())
	}
	return nil
}

// checkCreds checks that path is a readable credentials file: a user JWT
// and an NKey seed, each between its markers.
func checkCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("VOUCH_BUS_CREDS_FILE: %w", err)
	}
	s := string(b)
	if !strings.Contains(s, "BEGIN NATS USER JWT") || !strings.Contains(s, "BEGIN USER NKEY SEED") {
		return fmt.Errorf("VOUCH_BUS_CREDS_FILE %s is not a NATS credentials file (a user JWT and an NKey seed)", path)
	}
	return nil
}

// loadCAs reads the PEM certificates of path.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("VOUCH_BUS_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("VOUCH_BUS_CA_FILE %s holds no PEM certificate", path)
	}
	return pool, nil
}

// clientOptions are the connection's options for cfg, which Validate
// passed.
func (cfg *Config) clientOptions() ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name),
		// Keep reconnecting forever: a server restart must not kill a role.
		nats.MaxReconnects(-1),
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.URL == "" {
		return opts, nil
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("bus: VOUCH_BUS_NKEY_FILE: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.CAFile != "" || cfg.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pool, err := loadCAs(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("bus: %w", err)
			}
			tc.RootCAs = pool
		}
		if cfg.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("bus: VOUCH_BUS_CERT_FILE and VOUCH_BUS_KEY_FILE: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}
