// Package transparency keeps Vouch's transparency log: an append-only
// Merkle log (C2SP tlog-tiles, written by transparency-dev/tessera's POSIX
// driver into a directory the origin serves) of every stored authorization
// and, periodically, of the audit chain's head, with checkpoints signed as
// C2SP signed notes by an Ed25519 key. It also holds what checks the log
// from its published files alone: the monitor (signature, consistency with
// the last checkpoint seen, per-day counts) and the auditor (every
// authorization and every audit-chain head in the log, by inclusion
// proofs). docs/transparency.md is the description; this is the code.
//
// A leaf never holds a statement: an authorization's leaf is a hash of its
// bundle, so the log says how many vouches there were and lets a phone
// prove its own is there, but names nobody.
package transparency

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Kinds of leaf: the entry's first byte, so that no entry of one kind can
// be read as one of another (domain separation).
const (
	KindAuthorization byte = 0x01
	KindAuditHead     byte = 0x02
)

// Entry sizes: kind, day, then the kind's fields.
const (
	authorizationEntryLen = 1 + 4 + sha256.Size
	auditHeadEntryLen     = 1 + 4 + 8 + sha256.Size
)

// Entry is one leaf's data, parsed. The Merkle leaf hash is RFC 6962's
// SHA-256(0x00 || entry bytes), computed by tessera and by every verifier.
type Entry struct {
	Kind byte
	// Day is the UTC day of the event: the statement's issue time for an
	// authorization, the audit row's time for a head.
	Day time.Time
	// Hash is SHA-256 over the bundle's canonical bytes (KindAuthorization)
	// or the audit row's chain hash (KindAuditHead).
	Hash [sha256.Size]byte
	// Seq is the audit row whose hash Hash is (KindAuditHead only).
	Seq int64
}

// AuthorizationEntry is the entry of an authorization whose bundle, in its
// one canonical encoding (docs/protocol.md §6, the bytes a phone picks
// up), is bundle and whose statement was issued at issued:
//
//	0x01 || uint32 big-endian UTC day number (days since 1970-01-01) || SHA-256(bundle)
func AuthorizationEntry(bundle []byte, issued time.Time) []byte {
	h := sha256.Sum256(bundle)
	b := make([]byte, 0, authorizationEntryLen)
	b = append(b, KindAuthorization)
	b = binary.BigEndian.AppendUint32(b, dayNumber(issued))
	return append(b, h[:]...)
}

// AuditHeadEntry is the entry of the audit chain's head at row seq, whose
// chain hash is hash, written at at:
//
//	0x02 || uint32 big-endian UTC day number || uint64 big-endian seq || hash (32 bytes)
func AuditHeadEntry(seq int64, hash []byte, at time.Time) ([]byte, error) {
	if len(hash) != sha256.Size || seq < 1 {
		return nil, fmt.Errorf("transparency: audit head: row %d, hash of %d bytes", seq, len(hash))
	}
	b := make([]byte, 0, auditHeadEntryLen)
	b = append(b, KindAuditHead)
	b = binary.BigEndian.AppendUint32(b, dayNumber(at))
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	return append(b, hash...), nil
}

// ParseEntry reads an entry strictly: a known kind at its exact length.
func ParseEntry(b []byte) (Entry, error) {
	var e Entry
	if len(b) == 0 {
		return e, errors.New("transparency: empty entry")
	}
	e.Kind = b[0]
	switch {
	case e.Kind == KindAuthorization && len(b) == authorizationEntryLen:
		copy(e.Hash[:], b[5:])
	case e.Kind == KindAuditHead && len(b) == auditHeadEntryLen:
		seq := binary.BigEndian.Uint64(b[5:13])
		if seq < 1 || seq > 1<<62 {
			return e, fmt.Errorf("transparency: audit head entry: row %d", seq)
		}
		e.Seq = int64(seq)
		copy(e.Hash[:], b[13:])
	default:
		return e, fmt.Errorf("transparency: entry of kind %#x and %d bytes", e.Kind, len(b))
	}
	e.Day = time.Unix(int64(binary.BigEndian.Uint32(b[1:5]))*86400, 0).UTC()
	return e, nil
}

func dayNumber(t time.Time) uint32 {
	return uint32(t.Unix() / 86400)
}
