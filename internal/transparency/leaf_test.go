package transparency

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"
)

// The exact bytes of each kind of entry: docs/transparency.md states them,
// and a phone or an auditor written elsewhere computes them the same way.
func TestEntryBytes(t *testing.T) {
	t.Parallel()
	day := time.Date(2026, 12, 7, 16, 30, 0, 0, time.UTC) // day 20794 = 0x513a
	bundle := []byte("the canonical bundle")
	sum := sha256.Sum256(bundle)
	head := bytes.Repeat([]byte{0xab}, 32)
	auditEntry, err := AuditHeadEntry(258, head, day)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		got  []byte
		want string
	}{
		{"authorization", AuthorizationEntry(bundle, day), "01" + "0000513a" + hex.EncodeToString(sum[:])},
		{"audit head", auditEntry, "02" + "0000513a" + "0000000000000102" + hex.EncodeToString(head)},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got := hex.EncodeToString(c.got); got != c.want {
				t.Fatalf("entry %s, want %s", got, c.want)
			}
			e, err := ParseEntry(c.got)
			if err != nil {
				t.Fatal(err)
			}
			if !e.Day.Equal(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)) {
				t.Fatalf("day %s", e.Day)
			}
		})
	}
}

func TestParseEntryRefuses(t *testing.T) {
	t.Parallel()
	good := AuthorizationEntry([]byte("b"), time.Now())
	head, _ := AuditHeadEntry(1, make([]byte, 32), time.Now())
	zeroSeq := bytes.Clone(head)
	copy(zeroSeq[5:13], make([]byte, 8))
	for name, b := range map[string][]byte{
		"empty":                  nil,
		"unknown kind":           append([]byte{0x03}, good[1:]...),
		"authorization too long": append(bytes.Clone(good), 0),
		"authorization short":    good[:len(good)-1],
		"head as authorization":  append([]byte{KindAuthorization}, head[1:]...),
		"authorization as head":  append([]byte{KindAuditHead}, good[1:]...),
		"audit row 0":            zeroSeq,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseEntry(b); err == nil {
				t.Fatalf("%x parsed", b)
			}
		})
	}
	if _, err := AuditHeadEntry(0, make([]byte, 32), time.Now()); err == nil {
		t.Fatal("a head of row 0")
	}
	if _, err := AuditHeadEntry(1, make([]byte, 31), time.Now()); err == nil {
		t.Fatal("a head of 31 bytes")
	}
}
