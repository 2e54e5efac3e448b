package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/labstack/echo/v4"
)

// ParseProxies parses the CIDRs of trusted proxies; name is the variable
// they came from, for the error.
func ParseProxies(name string, cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not a CIDR", name, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// IPExtractor is the one rule, for every role, for whom a request comes
// from (echo's c.RealIP()). Without trusted proxies it is the TCP peer.
// When the peer is one of them, X-Forwarded-For is read from the right:
// each proxy appends the address it saw, so the first address that is not
// a trusted proxy is the client and everything left of it is whatever the
// client chose to send. Without X-Forwarded-For, X-Real-IP is believed
// from a trusted peer. A header that does not parse is not believed: the
// answer is the peer. Forwarding headers from any other peer are ignored.
func IPExtractor(trusted []netip.Prefix) echo.IPExtractor {
	return func(r *http.Request) string {
		peer, ok := parseHop(r.RemoteAddr)
		if !ok {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				return r.RemoteAddr
			}
			return host
		}
		if !contains(trusted, peer) {
			return peer.String()
		}
		if xff := r.Header.Values(echo.HeaderXForwardedFor); len(xff) > 0 {
			hops := strings.Split(strings.Join(xff, ","), ",")
			client := peer
			for i := len(hops) - 1; i >= 0; i-- {
				hop, ok := parseHop(hops[i])
				if !ok {
					return peer.String()
				}
				client = hop
				if !contains(trusted, hop) {
					break
				}
			}
			// Every hop a trusted proxy: the farthest one is all we know.
			return client.String()
		}
		if xri := r.Header.Values(echo.HeaderXRealIP); len(xri) > 0 {
			if len(xri) == 1 {
				if ip, ok := parseHop(xri[0]); ok {
					return ip.String()
				}
			}
			return peer.String()
		}
		return peer.String()
	}
}

// parseHop reads one address as proxies write it: an IP, possibly with a
// port, IPv6 possibly in brackets. IPv4-mapped IPv6 is read as IPv4 and a
// zone is dropped, so that one client has one spelling.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	ip, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
				return netip.Addr{}, false
			}
			if ip, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil {
				return netip.Addr{}, false
			}
		} else {
			ip = ap.Addr()
		}
	}
	return ip.Unmap().WithZone(""), true
}

func contains(nets []netip.Prefix, ip netip.Addr) bool {
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}
