package directory

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// hostile is an LDAP server that answers a bind and then every search
// request with answer(request id, page number), for the scan's bounds.
func hostile(t *testing.T, answer func(id int64, page int) [][]byte) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for page := 0; ; page++ {
					msg, err := readMessage(br, nil)
					if err != nil {
						return
					}
					r := &berReader{b: msg}
					id := berInt(r.expect(tagInteger))
					tag, _ := r.next()
					if tag == 0x60 { // bind
						c.Write(message(id, done(0x61, nil)))
						page--
						continue
					}
					for _, m := range answer(id, page) {
						if _, err := c.Write(m); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return "ldap://" + l.Addr().String()
}

// message is what a server sends: the same envelope as a request.
func message(id int64, op *ber.Packet, controls ...*ber.Packet) []byte {
	return envelope(id, op, controls...)
}

// done is a bind response (0x61) or a search done (0x65) with success.
func done(tag byte, _ []byte) *ber.Packet {
	p := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ber.Tag(tag&0x1f), nil, "done")
	p.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, 0, "code"))
	p.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "dn"))
	p.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "", "msg"))
	return p
}

func entryPacket(uzi string) *ber.Packet {
	body := searchEntry("vouchUziNumber="+uzi+",ou=people", map[string][]string{
		"vouchUziNumber": {uzi}, "vouchCardType": {"Z"}, "vouchRoleCode": {"01.015"}, "vouchLicenseStatus": {"active"}})
	raw := append([]byte{0x64}, berLen(len(body))...)
	return ber.DecodePacket(append(raw, body...))
}

func berLen(n int) []byte {
	if n < 0x80 {
		return []byte{byte(n)}
	}
	return []byte{0x82, byte(n >> 8), byte(n)}
}

func pagingControl(cookie string) *ber.Packet {
	c := ldap.NewControlPaging(2)
	c.SetCookie([]byte(cookie))
	return c.Encode()
}

// TestScanBoundsHostileRegister: a register that answers another request,
// pages more entries than asked, repeats its cookie or pages emptily
// forever fails the scan at once, rather than holding the sync's lock or
// filling memory.
func TestScanBoundsHostileRegister(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		answer func(id int64, page int) [][]byte
		want   string
	}{
		{"answers another message", func(id int64, page int) [][]byte {
			return [][]byte{message(id+7, entryPacket("123456789"))}
		}, "not to"},
		{"more entries than asked", func(id int64, page int) [][]byte {
			return [][]byte{message(id, entryPacket("123456781")), message(id, entryPacket("123456782")),
				message(id, entryPacket("123456783")), message(id, done(0x65, nil), pagingControl(""))}
		}, "more than the 2 entries"},
		{"cookie that does not move", func(id int64, page int) [][]byte {
			return [][]byte{message(id, entryPacket("123456789")), message(id, done(0x65, nil), pagingControl("same"))}
		}, "came back"},
		{"two cookies in turn", func(id int64, page int) [][]byte {
			return [][]byte{message(id, entryPacket("123456789")), message(id, done(0x65, nil), pagingControl([]string{"A", "B"}[page%2]))}
		}, "came back"},
		{"empty pages forever", func(id int64, page int) [][]byte {
			return [][]byte{message(id, done(0x65, nil), pagingControl(string(rune('a'+page%26))+string(rune('a'+page/26))))}
		}, "pages in a row"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := New(Config{URL: hostile(t, tt.answer), BaseDN: "ou=people", Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 2,
				BindDN: "cn=x", BindPassword: "y", ScanTimeout: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = c.Scan(ctx, func([]Entry) error { return nil }, func(string, error) {})
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("scan: %v, want unavailable: %q", err, tt.want)
			}
		})
	}
}

// TestLookupTrustsOnlyAnExactMatch: a register that answers a lookup with
// another card holder's entry (a loose matching rule) has not found the one
// asked for.
func TestLookupTrustsOnlyAnExactMatch(t *testing.T) {
	t.Parallel()
	url := hostile(t, func(id int64, page int) [][]byte {
		return [][]byte{message(id, entryPacket("123456780")), message(id, done(0x65, nil))}
	})
	c, err := New(Config{URL: url, BaseDN: "ou=people", Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := c.Lookup(context.Background(), "123456789"); !errors.Is(err, ErrNotFound) {
		t.Errorf("lookup of 123456789 answered with 123456780: %+v, %v", e, err)
	}
	if e, err := c.Lookup(context.Background(), "123456780"); err != nil || e.UZI != "123456780" {
		t.Errorf("exact match: %+v, %v", e, err)
	}
}

// TestEntriesOutsideTheBaseAreSkipped: an entry whose DN is not a name
// under the base DN is skipped, not mirrored.
func TestEntriesOutsideTheBaseAreSkipped(t *testing.T) {
	t.Parallel()
	outside := func(id int64, dn string) []byte {
		body := searchEntry(dn, map[string][]string{"vouchUziNumber": {"123456781"}, "vouchCardType": {"Z"},
			"vouchRoleCode": {"01.015"}, "vouchLicenseStatus": {"active"}})
		return message(id, ber.DecodePacket(append(append([]byte{0x64}, berLen(len(body))...), body...)))
	}
	url := hostile(t, func(id int64, page int) [][]byte {
		return [][]byte{message(id, entryPacket("123456789")), outside(id, "cn=x,o=elsewhere"), outside(id, "not a DN"),
			message(id, done(0x65, nil), pagingControl(""))}
	})
	c, err := New(Config{URL: url, BaseDN: "ou=people", Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 5})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var skipped []string
	err = c.Scan(context.Background(), func(p []Entry) error {
		for _, e := range p {
			got = append(got, e.UZI)
		}
		return nil
	}, func(dn string, err error) { skipped = append(skipped, dn+": "+err.Error()) })
	if err != nil || len(got) != 1 || got[0] != "123456789" || len(skipped) != 2 {
		t.Errorf("scan: %v, entries %v, skipped %q", err, got, skipped)
	}
}

// FuzzDNFastPath: the fast path never accepts a DN that the full parse
// would refuse or place outside the base.
func FuzzDNFastPath(f *testing.F) {
	for _, dn := range []string{"vouchUziNumber=123456789,ou=people,dc=registry,dc=test", "cn=a\\,b,ou=people,dc=registry,dc=test",
		"cn=*)(uid\\3D*,ou=people,dc=registry,dc=test", "cn=x,o=elsewhere", "=x,ou=people,dc=registry,dc=test", "cn= x ,OU=People,dc=registry,dc=test"} {
		f.Add(dn)
	}
	c, err := New(Config{URL: "ldap://127.0.0.1:1", BaseDN: "ou=people,dc=registry,dc=test", Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 5})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, dn string) {
		if !c.simplyUnderBase(dn) {
			return
		}
		d, err := ldap.ParseDN(dn)
		if err != nil || !c.base.AncestorOfFold(d) {
			t.Fatalf("fast path took %q; the parser says %v, under base %v", dn, err, err == nil && c.base.AncestorOfFold(d))
		}
	})
}

// FuzzSyncMessage feeds the sync reader controls decoded from arbitrary
// bytes, with and without an entry: it never panics, never takes an entry
// without a sync state, and never loses the cookie it had.
func FuzzSyncMessage(f *testing.F) {
	done := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "controls")
	ctl := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "control")
	ctl.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, ldap.ControlTypeSyncDone, "oid"))
	val := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "done")
	val.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "rid=000,csn=20261122041234.000001Z#000000#000#000000", "cookie"))
	ctl.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, string(val.Bytes()), "value"))
	done.AppendChild(ctl)
	f.Add(done.Bytes(), false)
	f.Add(done.Bytes(), true)
	f.Add([]byte{0x30, 0x00}, true)
	c, err := New(Config{URL: "ldap://127.0.0.1:1", BaseDN: "ou=people", Filter: "(objectClass=*)", Timeout: time.Second, PageSize: 5})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, controls []byte, withEntry bool) {
		p, err := ber.DecodePacketErr(controls)
		if err != nil {
			return
		}
		var ctls []ldap.Control
		for _, child := range p.Children {
			if ctl, err := ldap.DecodeControl(child); err == nil && ctl != nil {
				ctls = append(ctls, ctl)
			}
		}
		var le *ldap.Entry
		if withEntry {
			le = ldap.NewEntry("vouchUziNumber=123456789,ou=people", map[string][]string{"vouchUziNumber": {"123456789"},
				"vouchCardType": {"Z"}, "vouchRoleCode": {"01.015"}, "vouchLicenseStatus": {"active"}})
		}
		ch := &Changes{Cookie: []byte("before")}
		_, err = c.take(ch, le, ctls, func(string, error) {})
		if len(ch.Cookie) == 0 {
			t.Fatal("the cookie was lost")
		}
		if withEntry && err == nil && findSyncState(ctls) == nil {
			t.Fatal("an entry without a sync state was taken")
		}
		if !withEntry && len(ch.Upserts) > 0 {
			t.Fatal("upserts without an entry")
		}
	})
}
