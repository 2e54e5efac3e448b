package transparency

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// Source is a published log: its checkpoint, tiles and entry bundles.
type Source interface {
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
}

// OpenSource reads the log at loc: an http(s) URL of the directory the
// origin serves it from (…/log/), or a local directory.
func OpenSource(loc string) (Source, error) {
	if strings.HasPrefix(loc, "http://") || strings.HasPrefix(loc, "https://") {
		if !strings.HasSuffix(loc, "/") {
			loc += "/"
		}
		u, err := url.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("transparency: log URL: %w", err)
		}
		return client.NewHTTPFetcher(u, nil)
	}
	if fi, err := os.Stat(loc); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("transparency: %s is neither an http(s) URL nor a directory", loc)
	}
	return client.FileFetcher{Root: loc}, nil
}

// Verifier is the log's public key, a note verifier key
// (<origin>+<hash>+<base64>); its name is the origin.
func Verifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("transparency: public key: %w", err)
	}
	return v, nil
}

// Checkpoint is a checkpoint whose signature was verified.
type Checkpoint struct {
	Size uint64
	Root []byte
	Raw  []byte // the signed note, as published
}

// OpenCheckpoint verifies a signed checkpoint by v and reads it; its
// origin must be v's name.
func OpenCheckpoint(raw []byte, v note.Verifier) (*Checkpoint, error) {
	cp, _, _, err := log.ParseCheckpoint(raw, v.Name(), v)
	if err != nil {
		return nil, fmt.Errorf("transparency: checkpoint: %w", err)
	}
	return &Checkpoint{Size: cp.Size, Root: cp.Hash, Raw: raw}, nil
}

// ForkError says the log showed two histories that cannot both be true.
// Its text holds both signed checkpoints: it is a proof by itself, for
// anyone with the log's public key.
type ForkError struct {
	Reason   string
	Old, New []byte
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("transparency: the log is not append-only: %s\n\nthe checkpoint seen before:\n%s\nthe checkpoint published now:\n%s",
		e.Reason, e.Old, e.New)
}

// DayCount is how many leaves of each kind a day has.
type DayCount struct {
	Authorizations int64 `json:"authorizations"`
	AuditHeads     int64 `json:"audit_heads"`
}

// State is what a monitor or an auditor keeps between runs: the last
// checkpoint it verified, the compact range of that tree (so that the next
// run checks the new entries against the new root without reading the
// old ones again), and the per-day counts.
type State struct {
	Checkpoint string               `json:"checkpoint"`
	Range      [][]byte             `json:"range"`
	Days       map[string]*DayCount `json:"days"`
}

// LoadState reads a state file; a missing file is a first run.
func LoadState(path string) (*State, error) {
	st := &State{Days: map[string]*DayCount{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transparency: state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("transparency: state %s: %w", path, err)
	}
	if st.Days == nil {
		st.Days = map[string]*DayCount{}
	}
	return st, nil
}

// Save writes the state atomically (a crash leaves the old one).
func (st *State) Save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, b)
}

var hasher = rfc6962.DefaultHasher

// Follow brings st up to the log's current checkpoint: it verifies the
// checkpoint's signature, its consistency with the checkpoint st saw
// before (a consistency proof from the tiles, checked by
// transparency-dev/merkle's verifier), reads the new entries, checks that
// they and the old tree give exactly the new root (so the counts are of
// the leaves the checkpoint commits to), and counts them per day. With
// all, it reads every entry from the first (an auditor that needs them
// all); visit sees each entry read with its index. st is changed only
// when everything held.
func Follow(ctx context.Context, src Source, v note.Verifier, st *State, all bool, visit func(idx uint64, raw []byte, e Entry) error) (*Checkpoint, error) {
	raw, err := src.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("transparency: read checkpoint: %w", err)
	}
	cp, err := OpenCheckpoint(raw, v)
	if err != nil {
		return nil, err
	}
	var old *Checkpoint
	if st.Checkpoint != "" {
		if old, err = OpenCheckpoint([]byte(st.Checkpoint), v); err != nil {
			return nil, fmt.Errorf("transparency: the saved checkpoint: %w", err)
		}
		if err := consistent(ctx, src, old, cp); err != nil {
			return nil, err
		}
	}
	rf := &compact.RangeFactory{Hash: hasher.HashChildren}
	r := rf.NewEmptyRange(0)
	from := uint64(0)
	if old != nil && !all && old.Size > 0 {
		if r, err = rf.NewRange(0, old.Size, st.Range); err != nil {
			return nil, fmt.Errorf("transparency: the saved range: %w", err)
		}
		from = old.Size
	}
	counted := uint64(0)
	if old != nil {
		counted = old.Size
	}
	days := map[string]*DayCount{}
	for d, c := range st.Days {
		cc := *c
		days[d] = &cc
	}
	entries, err := readEntries(ctx, src.ReadEntryBundle, from, cp.Size)
	if err != nil {
		return nil, err
	}
	for i, raw := range entries {
		idx := from + uint64(i)
		e, err := ParseEntry(raw)
		if err != nil {
			return nil, fmt.Errorf("transparency: leaf %d: %w", idx, err)
		}
		if err := r.Append(hasher.HashLeaf(raw), nil); err != nil {
			return nil, fmt.Errorf("transparency: leaf %d: %w", idx, err)
		}
		if idx >= counted {
			day := e.Day.Format("2006-01-02")
			c := days[day]
			if c == nil {
				c = &DayCount{}
				days[day] = c
			}
			switch e.Kind {
			case KindAuthorization:
				c.Authorizations++
			case KindAuditHead:
				c.AuditHeads++
			}
		}
		if visit != nil {
			if err := visit(idx, raw, e); err != nil {
				return nil, err
			}
		}
	}
	root, err := r.GetRootHash(nil)
	if err != nil {
		return nil, fmt.Errorf("transparency: root: %w", err)
	}
	if cp.Size == 0 {
		root = hasher.EmptyRoot()
	}
	if !bytes.Equal(root, cp.Root) {
		return nil, fmt.Errorf("transparency: the published entries give root %x, the checkpoint says %x", root, cp.Root)
	}
	st.Checkpoint, st.Range, st.Days = string(cp.Raw), r.Hashes(), days
	return cp, nil
}

// consistent checks that the log at cp extends the log at old.
func consistent(ctx context.Context, src Source, old, cp *Checkpoint) error {
	switch {
	case cp.Size < old.Size:
		return &ForkError{Reason: fmt.Sprintf("the log has %d leaves now, %d were seen before", cp.Size, old.Size), Old: old.Raw, New: cp.Raw}
	case cp.Size == old.Size:
		if !bytes.Equal(cp.Root, old.Root) {
			return &ForkError{Reason: fmt.Sprintf("two trees of %d leaves with different roots", cp.Size), Old: old.Raw, New: cp.Raw}
		}
		return nil
	case old.Size == 0:
		return nil // the empty tree is a prefix of every tree
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		return fmt.Errorf("transparency: proof: %w", err)
	}
	p, err := pb.ConsistencyProof(ctx, old.Size, cp.Size)
	if err != nil {
		// Tiles that cannot even give a proof: the published tree is not
		// the one the checkpoint names, or the origin serves it badly.
		return fmt.Errorf("transparency: consistency proof %d→%d: %w", old.Size, cp.Size, err)
	}
	if err := proof.VerifyConsistency(hasher, old.Size, cp.Size, p, old.Root, cp.Root); err != nil {
		return &ForkError{Reason: fmt.Sprintf("the tree of %d leaves is not a prefix of the tree of %d: %v", old.Size, cp.Size, err), Old: old.Raw, New: cp.Raw}
	}
	return nil
}

// ProveInclusion fetches the inclusion proof of the leaf at idx in the
// tree of cp from the tiles and verifies it against cp's root.
func ProveInclusion(ctx context.Context, pb *client.ProofBuilder, cp *Checkpoint, idx uint64, entry []byte) error {
	p, err := pb.InclusionProof(ctx, idx)
	if err != nil {
		return fmt.Errorf("transparency: inclusion proof of leaf %d: %w", idx, err)
	}
	return VerifyInclusion(cp, idx, entry, p)
}

// VerifyInclusion checks, with transparency-dev/merkle's verifier (no code
// of the writer's), that p proves entry is the leaf at idx of cp's tree.
func VerifyInclusion(cp *Checkpoint, idx uint64, entry []byte, p [][]byte) error {
	if err := proof.VerifyInclusion(hasher, idx, cp.Size, hasher.HashLeaf(entry), p, cp.Root); err != nil {
		return fmt.Errorf("transparency: leaf %d is not in the tree of %d: %w", idx, cp.Size, err)
	}
	return nil
}
