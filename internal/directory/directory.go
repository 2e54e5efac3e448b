// Package directory reads the national register of care providers over
// LDAP: one card holder by UZI number (a live license check), every holder
// page by page (RFC 2696, for a full mirror), and what changed since a
// cookie (RFC 4533 syncrepl, refreshOnly). The register's schema is not
// ours, so every attribute name is configuration; entries that lack what
// Vouch needs, or carry malformed values, are reported and skipped, never
// guessed at.
package directory

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Config says where the register is and how to read it.
type Config struct {
	URL          string        `env:"VOUCH_REGISTRY_URL"`
	BindDN       string        `env:"VOUCH_REGISTRY_BIND_DN"`
	BindPassword string        `env:"VOUCH_REGISTRY_BIND_PASSWORD"`
	BaseDN       string        `env:"VOUCH_REGISTRY_BASE_DN, default=ou=people,dc=registry,dc=test"`
	Filter       string        `env:"VOUCH_REGISTRY_FILTER, default=(objectClass=vouchCareProvider)"`
	Timeout      time.Duration `env:"VOUCH_REGISTRY_TIMEOUT, default=2s"`
	// ScanTimeout is how long the register may stay silent in the middle
	// of a paged scan before the scan gives up: a frozen register must not
	// hold the sync's transaction and lock open.
	ScanTimeout time.Duration `env:"VOUCH_REGISTRY_SCAN_TIMEOUT, default=30s"`
	// CAFile holds the PEM certificates that may issue the register's TLS
	// certificate; empty trusts the system's roots.
	CAFile string `env:"VOUCH_REGISTRY_CA_FILE"`
	// StartTLS upgrades an ldap:// connection to TLS before anything is
	// sent; a bind password crosses the network only encrypted (plain
	// ldap:// is allowed to a register on this machine only).
	StartTLS   bool `env:"VOUCH_REGISTRY_STARTTLS"`
	PageSize   int  `env:"VOUCH_REGISTRY_PAGE_SIZE, default=1000"`
	Attributes Attributes
}

// Attributes names the register's attributes Vouch reads.
type Attributes struct {
	UZI        string `env:"VOUCH_REGISTRY_ATTR_UZI, default=vouchUziNumber"`
	BIG        string `env:"VOUCH_REGISTRY_ATTR_BIG, default=vouchBigNumber"`
	CardType   string `env:"VOUCH_REGISTRY_ATTR_CARD_TYPE, default=vouchCardType"`
	Role       string `env:"VOUCH_REGISTRY_ATTR_ROLE, default=vouchRoleCode"`
	AGB        string `env:"VOUCH_REGISTRY_ATTR_AGB, default=vouchAgbCode"`
	License    string `env:"VOUCH_REGISTRY_ATTR_LICENSE, default=vouchLicenseStatus"`
	ValidFrom  string `env:"VOUCH_REGISTRY_ATTR_VALID_FROM, default=vouchLicenseValidFrom"`
	ValidUntil string `env:"VOUCH_REGISTRY_ATTR_VALID_UNTIL, default=vouchLicenseValidUntil"`
	CertSerial string `env:"VOUCH_REGISTRY_ATTR_CERT_SERIAL, default=vouchCertSerial"`
}

// DefaultAttributes are the names of Vouch's own test register schema.
func DefaultAttributes() Attributes {
	return Attributes{UZI: "vouchUziNumber", BIG: "vouchBigNumber", CardType: "vouchCardType", Role: "vouchRoleCode",
		AGB: "vouchAgbCode", License: "vouchLicenseStatus", ValidFrom: "vouchLicenseValidFrom",
		ValidUntil: "vouchLicenseValidUntil", CertSerial: "vouchCertSerial"}
}

func (a Attributes) list() []string {
	return []string{a.UZI, a.BIG, a.CardType, a.Role, a.AGB, a.License, a.ValidFrom, a.ValidUntil, a.CertSerial, "entryUUID"}
}

// Validate checks the configuration before anything dials.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("directory: VOUCH_REGISTRY_URL is not set")
	case !strings.HasPrefix(c.URL, "ldap://") && !strings.HasPrefix(c.URL, "ldaps://"):
		return fmt.Errorf("directory: VOUCH_REGISTRY_URL %q is not an ldap:// or ldaps:// URL", c.URL)
	case c.BaseDN == "":
		return errors.New("directory: no base DN")
	case c.PageSize < 1 || c.PageSize > 10000:
		return fmt.Errorf("directory: page size %d outside 1..10000", c.PageSize)
	case c.ScanTimeout < 0:
		return fmt.Errorf("directory: VOUCH_REGISTRY_SCAN_TIMEOUT must not be negative, got %s", c.ScanTimeout)
	case strings.HasPrefix(c.URL, "ldap://") && !c.StartTLS && c.BindPassword != "" && !c.plaintextAllowed():
		return errors.New("directory: a bind password would cross the network in clear: use ldaps:// or VOUCH_REGISTRY_STARTTLS")
	case strings.HasPrefix(c.URL, "ldaps://") && c.StartTLS:
		return errors.New("directory: VOUCH_REGISTRY_STARTTLS is for ldap:// URLs; ldaps:// is TLS from the start")
	case c.Timeout <= 0:
		return errors.New("directory: timeout must be positive")
	}
	if _, err := ldap.CompileFilter(c.Filter); err != nil {
		return fmt.Errorf("directory: filter %q: %w", c.Filter, err)
	}
	for _, n := range []string{c.Attributes.UZI, c.Attributes.CardType, c.Attributes.License} {
		if n == "" {
			return errors.New("directory: the UZI number, card type and license attributes must be named")
		}
	}
	return nil
}

// ErrNotFound means the register has no card holder with that UZI number.
var ErrNotFound = errors.New("directory: not in the register")

// ErrUnavailable wraps every failure to reach or read the register, so
// callers can fall back to the mirror.
var ErrUnavailable = errors.New("directory: register unavailable")

// Client reads the register. It dials per operation: lookups are rare and
// short, and a fresh connection never carries a half-broken state across an
// outage.
type Client struct {
	cfg  Config
	tls  *tls.Config
	base *ldap.DN
}

// New returns a client for a validated configuration.
func New(cfg Config) (*Client, error) {
	if cfg.Attributes == (Attributes{}) {
		cfg.Attributes = DefaultAttributes()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	base, err := ldap.ParseDN(cfg.BaseDN)
	if err != nil {
		return nil, fmt.Errorf("directory: base DN %q: %w", cfg.BaseDN, err)
	}
	return &Client{cfg: cfg, tls: tc, base: base}, nil
}

// parseEntry reads an entry the register returned: its attributes, and a
// DN that is a well-formed name under the base DN — the DN is stored and
// logged, so a register must not put just anything there.
func (c *Client) parseEntry(le attributeSource, dn string) (Entry, error) {
	if !c.simplyUnderBase(dn) {
		if d, err := ldap.ParseDN(dn); err != nil || !c.base.AncestorOfFold(d) {
			err := &EntryError{Attribute: "dn", Problem: "is not a name under the base DN"}
			if v := le.GetEqualFoldAttributeValues("entryUUID"); len(v) == 1 && isUUID(v[0]) {
				err.EntryUUID = strings.ToLower(v[0])
			}
			return Entry{}, err
		}
	}
	return c.cfg.Attributes.parse(le, dn)
}

// simplyUnderBase is parseEntry's fast path, taken by nearly every entry of
// a register (parsing a million DNs costs seconds): one attribute=value of
// plain letters, digits and a few safe marks, then exactly the base DN.
// Anything else goes to the full parser.
func (c *Client) simplyUnderBase(dn string) bool {
	rdn, rest, ok := strings.Cut(dn, ",")
	if !ok || !strings.EqualFold(rest, c.cfg.BaseDN) {
		return false
	}
	attr, value, ok := strings.Cut(rdn, "=")
	if !ok || attr == "" || value == "" {
		return false
	}
	plain := func(s, marks string) bool {
		for i := 0; i < len(s); i++ {
			b := s[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte(marks, b) >= 0) {
				return false
			}
		}
		return true
	}
	return plain(attr, "-") && plain(value, ".-_@")
}

// Config returns the client's configuration.
func (c *Client) Config() Config { return c.cfg }

// dial connects and binds within the configured timeout.
func (c *Client) dial(ctx context.Context) (*ldap.Conn, error) {
	nc, secure, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	conn := ldap.NewConn(nc, secure)
	conn.Start()
	conn.SetTimeout(c.cfg.Timeout)
	if c.cfg.BindDN != "" {
		if err := conn.Bind(c.cfg.BindDN, c.cfg.BindPassword); err != nil {
			conn.Close()
			return nil, fmt.Errorf("%w: bind: %v", ErrUnavailable, err)
		}
	}
	return conn, nil
}

// UZIFilter is the filter that finds one card holder: the configured filter
// and the UZI attribute equal to uzi, escaped, so no value can widen it.
func (c *Client) UZIFilter(uzi string) string {
	return fmt.Sprintf("(&%s(%s=%s))", c.cfg.Filter, c.cfg.Attributes.UZI, ldap.EscapeFilter(uzi))
}

// Lookup returns the card holder with UZI number uzi, asking the register
// now, within the configured timeout.
func (c *Client) Lookup(ctx context.Context, uzi string) (Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	conn, err := c.dial(ctx)
	if err != nil {
		return Entry{}, err
	}
	defer conn.Close()
	req := ldap.NewSearchRequest(c.cfg.BaseDN, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2,
		int(c.cfg.Timeout.Seconds()+1), false, c.UZIFilter(uzi), c.cfg.Attributes.list(), nil)
	res, err := searchCtx(ctx, conn, req)
	if ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return Entry{}, errors.New("directory: several entries for one UZI number")
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	switch len(res.Entries) {
	case 0:
		return Entry{}, ErrNotFound
	case 1:
	default:
		return Entry{}, fmt.Errorf("directory: %d entries for one UZI number", len(res.Entries))
	}
	e, err := c.parseEntry(res.Entries[0], res.Entries[0].DN)
	if err != nil {
		return Entry{}, err
	}
	if e.UZI != uzi {
		return Entry{}, ErrNotFound // a register that matched loosely; trust only exact
	}
	return e, nil
}

// searchCtx runs a search that gives up when ctx ends.
func searchCtx(ctx context.Context, conn *ldap.Conn, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	type result struct {
		res *ldap.SearchResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := conn.Search(req)
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		return r.res, r.err
	case <-ctx.Done():
		conn.Close() // unblocks the search
		return nil, ctx.Err()
	}
}

// Scan reads every card holder, page by page (RFC 2696), calling page with
// each page's well-formed entries and skip with each malformed one. Memory
// stays at one page whatever the register's size.
func (c *Client) Scan(ctx context.Context, page func([]Entry) error, skip func(dn string, err error)) error {
	return c.scanPages(ctx, page, skip)
}
