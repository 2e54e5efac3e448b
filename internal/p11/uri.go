// Package p11 is the only package in Vouch that talks PKCS#11. It opens a
// module, finds tokens and keys by RFC 7512 "pkcs11:" URIs, logs in with a PIN
// or a protected authentication path, and exposes private keys as
// crypto.Signer. Everything above it signs through crypto.Signer and never
// sees a session handle.
package p11

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// URI is the subset of RFC 7512 that Vouch uses to name tokens and keys.
type URI struct {
	Token  string // token label
	Serial string // token serial number
	Object string // object label
	ID     []byte // object id (CKA_ID)
	Type   string // private, public, cert (optional)

	ModulePath string // query module-path
	PINValue   string // query pin-value; for tests and demos only
	PINSource  string // query pin-source (a file name)
}

// ParseURI parses a pkcs11: URI. Unknown path attributes are refused, so a
// typo never silently widens the match.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		// Not echoed: what is there instead may be anything, a PIN included.
		return u, errors.New("p11: not a pkcs11: URI (it must start with pkcs11:)")
	}
	path, query, _ := strings.Cut(rest, "?")
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return u, fmt.Errorf("p11: URI attribute %q has no value", attr)
			}
			val, err := url.PathUnescape(v)
			if err != nil {
				return u, fmt.Errorf("p11: URI attribute %s: %w", k, err)
			}
			switch k {
			case "token":
				u.Token = val
			case "serial":
				u.Serial = val
			case "object":
				u.Object = val
			case "id":
				if val != "" { // empty selects nothing, as for the other attributes
					u.ID = []byte(val)
				}
			case "type":
				switch val {
				case "private", "public", "cert":
					u.Type = val
				default:
					return u, fmt.Errorf("p11: URI type %q not supported", val)
				}
			case "manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer", "slot-id":
				// Allowed by RFC 7512; Vouch selects by token label or serial.
			default:
				return u, fmt.Errorf("p11: unknown URI attribute %q", k)
			}
		}
	}
	if strings.Contains(query, ";") {
		// Query attributes are separated by '&'; a ';' means a mistyped
		// URI whose PIN would end up inside another value (and in messages).
		return u, fmt.Errorf("p11: URI %q: its query holds ';' (query attributes are separated by '&')", redact(s))
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return u, fmt.Errorf("p11: URI query %q has no value", attr)
			}
			val, err := url.PathUnescape(v)
			if err != nil {
				if strings.HasPrefix(k, "pin-") {
					return u, fmt.Errorf("p11: URI query %s: bad percent-encoding", k) // the error would quote the PIN
				}
				return u, fmt.Errorf("p11: URI query %s: %w", k, err)
			}
			switch k {
			case "module-path":
				u.ModulePath = val
			case "pin-value":
				u.PINValue = val
			case "pin-source":
				u.PINSource = val
			case "module-name":
			default:
				return u, fmt.Errorf("p11: unknown URI query attribute %q", k)
			}
		}
	}
	if u.Token == "" && u.Serial == "" {
		return u, fmt.Errorf("p11: URI %q names no token (token= or serial=)", redact(s))
	}
	return u, nil
}

// String renders the URI without its PIN.
func (u URI) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+escape(v))
		}
	}
	add("token", u.Token)
	add("serial", u.Serial)
	add("object", u.Object)
	add("id", string(u.ID))
	add("type", u.Type)
	s := "pkcs11:" + strings.Join(parts, ";")
	if u.ModulePath != "" {
		s += "?module-path=" + escape(u.ModulePath)
	}
	return s
}

// escape percent-encodes everything but RFC 7512's unreserved characters.
func escape(v string) string {
	var sb strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// redact drops the query (which may hold a PIN) from a URI for messages.
func redact(s string) string {
	p, _, _ := strings.Cut(s, "?")
	return p
}
