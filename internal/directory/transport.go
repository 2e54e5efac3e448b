package directory

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
)

// Both LDAP stacks — go-ldap for lookups and changes, the scan's own
// reader — reach the register through connect, so they dial, set up TLS
// and check the register's certificate the same way.

// tlsConfig is the TLS configuration for the register: the configured CA
// file's certificates as roots (the system's otherwise), TLS 1.2 or newer.
func (c Config) tlsConfig() (*tls.Config, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("directory: VOUCH_REGISTRY_CA_FILE: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("directory: VOUCH_REGISTRY_CA_FILE %s holds no PEM certificate", c.CAFile)
		}
	}
	return cfg, nil
}

// plaintextAllowed reports whether a bind may cross the network in clear:
// only to a register on this machine (the test registers).
func (c Config) plaintextAllowed() bool {
	u, err := url.Parse(c.URL)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(u.Hostname())
	return err == nil && ip.IsLoopback()
}

// connect dials the register and returns a connection ready for LDAP:
// TLS from the start for ldaps://, after the StartTLS operation with
// VOUCH_REGISTRY_STARTTLS, in clear otherwise. secure says whether it is
// encrypted.
func (c *Client) connect(ctx context.Context) (conn net.Conn, secure bool, err error) {
	u, err := url.Parse(c.cfg.URL)
	if err != nil {
		return nil, false, err
	}
	port := map[string]string{"ldap": "389", "ldaps": "636"}[u.Scheme]
	if u.Port() != "" {
		port = u.Port()
	}
	d := &net.Dialer{Timeout: c.cfg.Timeout}
	if dl, ok := ctx.Deadline(); ok {
		d.Deadline = dl
	}
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if u.Scheme != "ldaps" && !c.cfg.StartTLS {
		return nc, false, nil
	}
	if u.Scheme != "ldaps" {
		if err := startTLS(nc, c.cfg.Timeout); err != nil {
			nc.Close()
			return nil, false, fmt.Errorf("%w: StartTLS: %v", ErrUnavailable, err)
		}
	}
	tc := tls.Client(nc, c.tls)
	hctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		nc.Close()
		return nil, false, fmt.Errorf("%w: TLS: %v", ErrUnavailable, err)
	}
	return tc, true, nil
}

// oidStartTLS is the StartTLS extended operation (RFC 4511 4.14).
const oidStartTLS = "1.3.6.1.4.1.1466.20037"

// startTLS asks the register to begin TLS on nc and waits for its yes.
func startTLS(nc net.Conn, timeout time.Duration) error {
	nc.SetDeadline(time.Now().Add(timeout))
	defer nc.SetDeadline(time.Time{})
	req := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 23, nil, "Extended Request")
	req.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, oidStartTLS, "Request Name"))
	if _, err := nc.Write(envelope(1, req)); err != nil {
		return err
	}
	// Unbuffered beyond this one message: what follows is the TLS
	// handshake, which must reach tls.Client whole.
	resp, err := readMessage(bufio.NewReaderSize(onlyMessage{nc}, 16), nil)
	if err != nil {
		return err
	}
	r := &berReader{b: resp}
	if id := berInt(r.expect(tagInteger)); r.err == nil && id != 1 {
		return fmt.Errorf("an answer to message %d", id)
	}
	tag, body := r.next()
	if r.err != nil {
		return r.err
	}
	if tag != 0x78 { // [APPLICATION 24] ExtendedResponse
		return errors.New("no extended response")
	}
	return resultError(body)
}

// onlyMessage reads a byte at a time, so the bufio.Reader over it never
// takes bytes past the message it reads.
type onlyMessage struct{ c net.Conn }

func (o onlyMessage) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.c.Read(p)
}
