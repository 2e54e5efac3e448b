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

// URI is the subset of RFC 7512 that Vouch uses to name tokens and keys. It
// has no PIN: ParseURI refuses pin-value and pin-source, so neither a URI
// nor its String can carry one.
type URI struct {
	Token  string // token label
	Serial string // token serial number
	Object string // object label
	ID     []byte // object id (CKA_ID)
	Type   string // private, public, cert (optional)

	ModulePath string // query module-path
}

// errURIPIN refuses a PIN in a URI. A URI ends up in shell history, process
// lists, configuration and messages; the PIN is asked for separately.
func errURIPIN(attr string) error {
	return fmt.Errorf("p11: URI attribute %s refused: PINs are never taken from a URI: the card asks for it", attr)
}

// ParseURI parses a pkcs11: URI. It is stricter than RFC 7512, because a
// mistyped URI may hold a PIN that would otherwise land in another value and
// from there in messages:
//
//   - unknown attributes are refused, so a typo never silently widens the
//     match;
//   - pin-value and pin-source are refused: a PIN never comes from a URI;
//   - a raw '=', '&' or '?' inside a value is refused (percent-encode it):
//     it is nearly always a mistyped separator;
//   - no error quotes a value or an unknown attribute name, only the names
//     Vouch knows and positions.
func ParseURI(s string) (URI, error) {
	var u URI
	rest, ok := strings.CutPrefix(s, "pkcs11:")
	if !ok {
		// Not echoed: what is there instead may be anything, a PIN included.
		return u, errors.New("p11: not a pkcs11: URI (it must start with pkcs11:)")
	}
	path, query, _ := strings.Cut(rest, "?")
	if path != "" {
		for i, attr := range strings.Split(path, ";") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return u, fmt.Errorf("p11: URI path attribute %d has no '=' and value", i+1)
			}
			switch k {
			case "pin-value", "pin-source": // query attributes, and refused there too
				return u, errURIPIN(k)
			case "token", "serial", "object", "id", "type",
				"manufacturer", "model", "library-manufacturer", "library-description", "library-version", "slot-description", "slot-manufacturer", "slot-id":
			default:
				return u, fmt.Errorf("p11: URI path attribute %d is not one Vouch knows (token, serial, object, id, type, ...)", i+1)
			}
			if strings.ContainsAny(v, "=&?") {
				return u, fmt.Errorf("p11: URI attribute %s: its value holds a raw '=', '&' or '?' (a mistyped separator? percent-encode them otherwise)", k)
			}
			val, err := url.PathUnescape(v)
			if err != nil {
				return u, fmt.Errorf("p11: URI attribute %s: bad percent-encoding", k) // url's error quotes the value
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
					return u, errors.New("p11: URI attribute type must be private, public or cert")
				}
			default:
				// Allowed by RFC 7512; Vouch selects by token label or serial.
			}
		}
	}
	if strings.Contains(query, "?") {
		// A second '?' is a mistyped '&': whatever follows would end up
		// inside module-path, and the module path in messages.
		return u, errors.New("p11: URI query holds a second '?' (query attributes are separated by '&')")
	}
	if strings.Contains(query, ";") {
		// Query attributes are separated by '&'; a ';' means a mistyped
		// URI whose PIN would end up inside another value (and in messages).
		return u, errors.New("p11: URI query holds ';' (query attributes are separated by '&')")
	}
	if query != "" {
		for i, attr := range strings.Split(query, "&") {
			k, v, ok := strings.Cut(attr, "=")
			if !ok {
				return u, fmt.Errorf("p11: URI query attribute %d has no '=' and value", i+1)
			}
			switch k {
			case "pin-value", "pin-source":
				return u, errURIPIN(k)
			case "module-path", "module-name":
			default:
				return u, fmt.Errorf("p11: URI query attribute %d is not one Vouch knows (module-path, module-name)", i+1)
			}
			if strings.Contains(v, "=") {
				return u, fmt.Errorf("p11: URI query attribute %s: its value holds a raw '=' (a mistyped '&'? percent-encode it otherwise)", k)
			}
			val, err := url.PathUnescape(v)
			if err != nil {
				return u, fmt.Errorf("p11: URI query attribute %s: bad percent-encoding", k)
			}
			if k == "module-path" {
				u.ModulePath = val
			}
		}
	}
	if u.Token == "" && u.Serial == "" {
		return u, fmt.Errorf("p11: URI %s names no token (token= or serial=)", u)
	}
	return u, nil
}

// String renders the URI. It cannot show a PIN: URI holds none.
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
