package directory

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// The full scan reads a register of a million entries. go-ldap decodes each
// message into a tree of packets, allocating for every node, which made the
// scan six times slower than ldapsearch; so the scan speaks LDAP itself: the
// few requests are encoded with go-asn1-ber, and the responses are read with
// the small BER reader below, straight into Entry values.

const (
	tagSequence     = 0x30
	tagSet          = 0x31
	tagInteger      = 0x02
	tagOctetString  = 0x04
	tagEnumerated   = 0x0a
	tagBindResponse = 0x61 // [APPLICATION 1]
	tagSearchEntry  = 0x64 // [APPLICATION 4]
	tagSearchDone   = 0x65 // [APPLICATION 5]
	tagSearchRef    = 0x73 // [APPLICATION 19]
	tagControls     = 0xa0 // [0]
	maxMessage      = 16 << 20
	// maxPageBytes bounds what one page may hold in memory; a page of
	// 1000 entries of a real register is well under 1 MiB.
	maxPageBytes = 64 << 20
	// maxEmptyPages bounds pages in a row that hold no entry but promise
	// more: a register that keeps doing that is looping.
	maxEmptyPages = 16
)

// berReader walks a BER value in place; an error sticks.
type berReader struct {
	b   []byte
	err error
}

var errBER = errors.New("directory: malformed LDAP message")

// next returns the tag and contents of the next TLV.
func (r *berReader) next() (byte, []byte) {
	if r.err != nil {
		return 0, nil
	}
	if len(r.b) < 2 {
		r.err = errBER
		return 0, nil
	}
	tag, l, hdr := r.b[0], int(r.b[1]), 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 4 || len(r.b) < 2+n {
			r.err = errBER
			return 0, nil
		}
		l = 0
		for _, c := range r.b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		hdr += n
	}
	if l < 0 || len(r.b)-hdr < l {
		r.err = errBER
		return 0, nil
	}
	v := r.b[hdr : hdr+l]
	r.b = r.b[hdr+l:]
	return tag, v
}

func (r *berReader) expect(tag byte) []byte {
	t, v := r.next()
	if r.err == nil && t != tag {
		r.err = fmt.Errorf("%w: tag %#x, want %#x", errBER, t, tag)
	}
	return v
}

func berInt(v []byte) int64 {
	var n int64
	for i, c := range v {
		if i == 0 && c&0x80 != 0 {
			n = -1
		}
		n = n<<8 | int64(c)
	}
	return n
}

// readMessage reads one LDAPMessage into buf (grown as needed).
func readMessage(br *bufio.Reader, buf []byte) ([]byte, error) {
	tag, err := br.ReadByte()
	if err != nil {
		return nil, err
	}
	if tag != tagSequence {
		return nil, errBER
	}
	l, err := br.ReadByte()
	if err != nil {
		return nil, err
	}
	n := int(l)
	if l&0x80 != 0 {
		k := int(l & 0x7f)
		if k == 0 || k > 4 {
			return nil, errBER
		}
		n = 0
		for range k {
			c, err := br.ReadByte()
			if err != nil {
				return nil, err
			}
			n = n<<8 | int(c)
		}
	}
	if n > maxMessage {
		return nil, fmt.Errorf("directory: LDAP message of %d bytes", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err = io.ReadFull(br, buf)
	return buf, err
}

// rawEntry holds one entry's attributes as read, for Attributes.Parse.
type rawEntry struct {
	attrs []rawAttr
}

type rawAttr struct {
	name   string
	values []string
}

func (e *rawEntry) GetEqualFoldAttributeValues(name string) []string {
	// Servers answer with the names as asked: an exact match first is
	// cheaper than folding case for every attribute of every entry.
	for i := range e.attrs {
		if e.attrs[i].name == name {
			return e.attrs[i].values
		}
	}
	for i := range e.attrs {
		if strings.EqualFold(e.attrs[i].name, name) {
			return e.attrs[i].values
		}
	}
	return nil
}

// ldapConn is a bare LDAP connection for the scan.
type ldapConn struct {
	c     net.Conn
	br    *bufio.Reader
	msgID int32
	buf   []byte
}

func (c *Client) dialRaw(ctx context.Context) (*ldapConn, error) {
	nc, _, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	lc := &ldapConn{c: nc, br: bufio.NewReaderSize(nc, 256<<10)}
	if c.cfg.BindDN != "" {
		if err := lc.bind(c.cfg.BindDN, c.cfg.BindPassword, c.cfg.Timeout); err != nil {
			nc.Close()
			return nil, fmt.Errorf("%w: bind: %v", ErrUnavailable, err)
		}
	}
	return lc, nil
}

func (lc *ldapConn) send(op *ber.Packet, controls ...*ber.Packet) error {
	id := atomic.AddInt32(&lc.msgID, 1)
	_, err := lc.c.Write(envelope(int64(id), op, controls...))
	return err
}

// envelope encodes an LDAPMessage: message id, operation, controls.
func envelope(id int64, op *ber.Packet, controls ...*ber.Packet) []byte {
	msg := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "LDAP Message")
	msg.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "MessageID"))
	msg.AppendChild(op)
	if len(controls) > 0 {
		ctl := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "Controls")
		for _, c := range controls {
			ctl.AppendChild(c)
		}
		msg.AppendChild(ctl)
	}
	return msg.Bytes()
}

func (lc *ldapConn) bind(dn, password string, timeout time.Duration) error {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationBindRequest, nil, "Bind Request")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, 3, "Version"))
	op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, dn, "User Name"))
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, password, "Password"))
	lc.c.SetDeadline(time.Now().Add(timeout))
	defer lc.c.SetDeadline(time.Time{})
	if err := lc.send(op); err != nil {
		return err
	}
	var err error
	if lc.buf, err = readMessage(lc.br, lc.buf); err != nil {
		return err
	}
	r := &berReader{b: lc.buf}
	r.expect(tagInteger)
	res := r.expect(tagBindResponse)
	if r.err != nil {
		return r.err
	}
	return resultError(res)
}

// resultError reads an LDAPResult and returns its error, if any.
func resultError(res []byte) error {
	r := &berReader{b: res}
	v := r.expect(tagEnumerated)
	code := berInt(v)
	r.expect(tagOctetString) // matched DN
	msg := r.expect(tagOctetString)
	if r.err != nil {
		return r.err
	}
	if len(v) == 0 || len(v) > 4 {
		return errBER // an empty result code is not success
	}
	if code != 0 {
		return ldap.NewError(uint16(code), errors.New(string(msg)))
	}
	return nil
}

// scanPages runs the paged search with the configured filter and hands
// every page of parsed entries to page.
func (c *Client) scanPages(ctx context.Context, page func([]Entry) error, skip func(dn string, err error)) error {
	return c.scanRaw(ctx, c.cfg.Filter, c.cfg.Attributes.list(), c.cfg.PageSize, nil, page, skip)
}

// scanRaw runs a paged search for filter, reading attrs. With page set,
// entries are parsed and handed over a page at a time; with entry set, each
// raw entry is handed over as read (raw is reused: copy what you keep).
func (c *Client) scanRaw(ctx context.Context, filterText string, attrs []string, pageSize int,
	entry func(dn string, raw *rawEntry) error, page func([]Entry) error, skip func(dn string, err error)) error {
	lc, err := c.dialRaw(ctx)
	if err != nil {
		return err
	}
	defer lc.c.Close()
	stop := context.AfterFunc(ctx, func() { lc.c.Close() }) // unblocks a read when ctx ends
	defer stop()
	filter, err := ldap.CompileFilter(filterText)
	if err != nil {
		return err
	}
	paging := ldap.NewControlPaging(uint32(pageSize))
	raw := &rawEntry{}
	empty := 0 // pages in a row without an entry
	// Every cookie of this scan: one that comes back would loop forever
	// (a page's cookie is short; a scan has a page per thousand entries).
	seen := map[string]bool{}
	for {
		op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchRequest, nil, "Search Request")
		op.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, c.cfg.BaseDN, "Base DN"))
		op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, uint64(ldap.ScopeWholeSubtree), "Scope"))
		op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, uint64(ldap.NeverDerefAliases), "Deref Aliases"))
		op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, uint64(0), "Size Limit"))
		op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, uint64(0), "Time Limit"))
		op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, "Types Only"))
		op.AppendChild(filter)
		al := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Attributes")
		for _, a := range attrs {
			al.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, a, "Attribute"))
		}
		op.AppendChild(al)
		if err := lc.send(op, paging.Encode()); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: paged search: %v", ErrUnavailable, err)
		}
		var entries []Entry
		if page != nil {
			entries = make([]Entry, 0, pageSize)
		}
		var cookie []byte
		// A hostile or broken register must not make the scan hold its
		// lock forever or fill memory: a page holds at most what was asked
		// for, in a bounded number of bytes, answers this request, and the
		// cookie moves on.
		var inPage, pageBytes int
		for done := false; !done; {
			lc.c.SetReadDeadline(time.Now().Add(c.scanTimeout()))
			if lc.buf, err = readMessage(lc.br, lc.buf); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("%w: paged search: %v", ErrUnavailable, err)
			}
			if pageBytes += len(lc.buf); pageBytes > maxPageBytes {
				return fmt.Errorf("%w: paged search: a page of more than %d MiB", ErrUnavailable, maxPageBytes>>20)
			}
			r := &berReader{b: lc.buf}
			id := berInt(r.expect(tagInteger))
			tag, body := r.next()
			if r.err != nil {
				return r.err
			}
			if id != int64(lc.msgID) {
				return fmt.Errorf("%w: paged search: an answer to message %d, not to %d", ErrUnavailable, id, lc.msgID)
			}
			if tag == tagSearchEntry || tag == tagSearchRef {
				if inPage++; inPage > pageSize {
					return fmt.Errorf("%w: paged search: more than the %d entries asked for in one page", ErrUnavailable, pageSize)
				}
			}
			switch tag {
			case tagSearchEntry:
				dn, err := readEntry(body, raw)
				if err != nil {
					return err
				}
				if page == nil {
					if err := entry(dn, raw); err != nil {
						return err
					}
					continue
				}
				e, err := c.parseEntry(raw, dn)
				if err != nil {
					skip(dn, err)
					continue
				}
				entries = append(entries, e)
			case tagSearchRef:
				// Referrals to other servers are not followed: the register is one server.
			case tagSearchDone:
				if err := resultError(body); err != nil {
					return fmt.Errorf("%w: paged search: %v", ErrUnavailable, err)
				}
				// The last page carries the control with an empty cookie; a
				// page without a readable control would end the scan early
				// and pass a truncated register for a complete one.
				var ok bool
				if len(r.b) > 0 {
					cookie, ok = pagingCookie(r.expect(tagControls))
				}
				if !ok || r.err != nil {
					return fmt.Errorf("%w: paged search: the register's answer has no readable paging control", ErrUnavailable)
				}
				done = true
			default:
				return fmt.Errorf("%w: unexpected response tag %#x", errBER, tag)
			}
		}
		if page != nil {
			if err := page(entries); err != nil {
				return err
			}
		}
		if len(cookie) == 0 {
			return nil
		}
		switch {
		case seen[string(cookie)]:
			return fmt.Errorf("%w: paged search: the register's cookie came back to one it gave before", ErrUnavailable)
		case inPage == 0:
			if empty++; empty > maxEmptyPages {
				return fmt.Errorf("%w: paged search: %d pages in a row without an entry", ErrUnavailable, empty)
			}
		default:
			empty = 0
		}
		seen[string(cookie)] = true
		paging.SetCookie(cookie)
	}
}

// readEntry reads a SearchResultEntry into raw and returns its DN.
func readEntry(body []byte, raw *rawEntry) (string, error) {
	r := &berReader{b: body}
	dn := string(r.expect(tagOctetString))
	attrs := &berReader{b: r.expect(tagSequence)}
	raw.attrs = raw.attrs[:0]
	for len(attrs.b) > 0 && attrs.err == nil {
		pa := &berReader{b: attrs.expect(tagSequence)}
		name := string(pa.expect(tagOctetString))
		vals := &berReader{b: pa.expect(tagSet)}
		var values []string
		for len(vals.b) > 0 && vals.err == nil {
			values = append(values, string(vals.expect(tagOctetString)))
		}
		if pa.err != nil || vals.err != nil {
			return dn, errBER
		}
		raw.attrs = append(raw.attrs, rawAttr{name: name, values: values})
	}
	if r.err != nil || attrs.err != nil {
		return dn, errBER
	}
	return dn, nil
}

// pagingCookie finds the paged-results control among the controls and
// returns its cookie; ok is false when there is no readable one.
func pagingCookie(controls []byte) (cookie []byte, ok bool) {
	r := &berReader{b: controls}
	for len(r.b) > 0 && r.err == nil {
		ctl := &berReader{b: r.expect(tagSequence)}
		oid := string(ctl.expect(tagOctetString))
		if oid != ldap.ControlTypePaging {
			continue
		}
		var value []byte
		for len(ctl.b) > 0 && ctl.err == nil {
			t, v := ctl.next()
			if t == tagOctetString {
				value = v
			}
		}
		pv := &berReader{b: value}
		inner := &berReader{b: pv.expect(tagSequence)}
		inner.expect(tagInteger)
		ck := inner.expect(tagOctetString)
		if inner.err != nil || pv.err != nil || ctl.err != nil {
			return nil, false
		}
		return append([]byte(nil), ck...), true
	}
	return nil, false
}

// scanTimeout is the longest silence of the register a scan waits out.
func (c *Client) scanTimeout() time.Duration {
	if c.cfg.ScanTimeout == 0 {
		return 30 * time.Second
	}
	return c.cfg.ScanTimeout
}
