package directory

import (
	"bufio"
	"bytes"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
)

// searchEntry encodes a SearchResultEntry body the way a server does.
func searchEntry(dn string, attrs map[string][]string) []byte {
	p := ber.Encode(ber.ClassApplication, ber.TypeConstructed, 4, nil, "entry")
	p.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, dn, "dn"))
	al := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attrs")
	for name, vals := range attrs {
		pa := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attr")
		pa.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, name, "type"))
		set := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "vals")
		for _, v := range vals {
			set.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, v, "val"))
		}
		pa.AppendChild(set)
		al.AppendChild(pa)
	}
	p.AppendChild(al)
	b := p.Bytes()
	r := &berReader{b: b}
	_, body := r.next()
	return body
}

func TestReadEntry(t *testing.T) {
	t.Parallel()
	body := searchEntry("vouchUziNumber=123456789,ou=people", map[string][]string{
		"vouchUziNumber": {"123456789"}, "vouchCardType": {"Z"}, "vouchRoleCode": {"01.015"}, "vouchLicenseStatus": {"active"},
	})
	raw := &rawEntry{}
	dn, err := readEntry(body, raw)
	if err != nil || dn != "vouchUziNumber=123456789,ou=people" {
		t.Fatalf("readEntry: %q %v", dn, err)
	}
	e, err := DefaultAttributes().parse(raw, dn)
	if err != nil || e.UZI != "123456789" || e.Role != "01.015" {
		t.Errorf("parse: %+v %v", e, err)
	}
	// Every strict prefix cuts an outer length short: refused, never a
	// shorter entry taken for the whole.
	for i := range body {
		if _, err := readEntry(body[:i], &rawEntry{}); err == nil {
			t.Errorf("a prefix of %d of %d bytes was read", i, len(body))
		}
	}
}

func TestReadMessageLimits(t *testing.T) {
	t.Parallel()
	for name, in := range map[string][]byte{
		"not a sequence": {0x04, 0x00},
		"indefinite":     {0x30, 0x80},
		"five-byte len":  {0x30, 0x85, 1, 1, 1, 1, 1},
		"too large":      {0x30, 0x84, 0x7f, 0xff, 0xff, 0xff},
		"cut off":        {0x30, 0x05, 0x02, 0x01},
	} {
		if _, err := readMessage(bufio.NewReader(bytes.NewReader(in)), nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzReadEntry(f *testing.F) {
	f.Add(searchEntry("cn=x", map[string][]string{"vouchUziNumber": {"123456789"}, "a": {"1", "2"}}))
	f.Add([]byte{0x04, 0x00, 0x30, 0x00})
	f.Fuzz(func(t *testing.T, body []byte) {
		raw := &rawEntry{}
		dn, err := readEntry(body, raw)
		if err != nil {
			return
		}
		_, _ = DefaultAttributes().parse(raw, dn)
	})
}

func FuzzPagingCookie(f *testing.F) {
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, controls []byte) {
		_, _ = pagingCookie(controls)
	})
}

func FuzzReadMessage(f *testing.F) {
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x01})
	f.Add([]byte{0x30, 0x84, 0x00, 0x00, 0x00, 0x03, 0x02, 0x01, 0x01})
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, in []byte) {
		msg, err := readMessage(bufio.NewReader(bytes.NewReader(in)), nil)
		if err != nil {
			return
		}
		if len(msg) > maxMessage || len(msg) > len(in) {
			t.Fatalf("a message of %d bytes from %d bytes of input", len(msg), len(in))
		}
		r := &berReader{b: msg}
		for r.err == nil && len(r.b) > 0 {
			before := len(r.b)
			r.next()
			if r.err == nil && len(r.b) >= before {
				t.Fatal("the reader did not move")
			}
		}
	})
}

func FuzzResultError(f *testing.F) {
	f.Add([]byte{0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00})
	f.Add([]byte{0x0a, 0x01, 0x35, 0x04, 0x00, 0x04, 0x03, 'b', 'a', 'd'})
	f.Fuzz(func(t *testing.T, body []byte) {
		if resultError(body) != nil {
			return
		}
		// Only a result code that reads as 0 is success.
		r := &berReader{b: body}
		tag, v := r.next()
		if r.err != nil || tag != tagEnumerated || len(v) == 0 || berInt(v) != 0 {
			t.Fatalf("%x taken for success", body)
		}
	})
}

func FuzzGeneralizedTime(f *testing.F) {
	for _, s := range []string{"20261122041234Z", "20261122041234.5+0100", "202611220412Z", "00010101000000Z", "20260230000000Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := parseGeneralizedTime(s)
		if err != nil {
			return
		}
		if tm.Location() != time.UTC {
			t.Fatalf("%q read as %v, not in UTC", s, tm)
		}
		// The fast path and time.Parse agree on the common form.
		if len(s) == 15 && s[14] == 'Z' {
			want, err := time.Parse("20060102150405Z0700", s)
			if err != nil || !want.Equal(tm) {
				t.Fatalf("%q: %v, time.Parse says %v (%v)", s, tm, want, err)
			}
		}
	})
}

func FuzzCookieCSNs(f *testing.F) {
	f.Add([]byte("rid=000,csn=20261122041234.000001Z#000000#000#000000"), []byte("rid=000,csn=20261122041234.000002Z#000000#000#000000"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		if _, behind := cookieBehind(a, a); behind {
			t.Fatalf("%q is behind itself", a)
		}
		// For one server known to both, exactly one of two different
		// states is the older (a server that vanishes from either one
		// counts as going backwards, both ways).
		ca, cb := cookieCSNs(a), cookieCSNs(b)
		if len(ca) != 1 || len(cb) != 1 {
			return
		}
		for sid, x := range ca {
			y, ok := cb[sid]
			if !ok {
				return
			}
			_, ab := cookieBehind(a, b)
			_, ba := cookieBehind(b, a)
			if ab && ba || x != y && !ab && !ba {
				t.Fatalf("%q and %q: a behind b %v, b behind a %v", a, b, ab, ba)
			}
		}
	})
}
