package directory

import (
	"bufio"
	"bytes"
	"testing"

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
	for i := range body {
		if _, err := readEntry(body[:i], &rawEntry{}); err == nil && i < len(body) {
			// A prefix may still be well formed (fewer attributes); it must never panic.
			continue
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
