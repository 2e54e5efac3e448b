package transparency

// What a phone checks of the log (docs/transparency.md, "The phone"): the
// checkpoint's signature by the log's key, the cosignatures its witness
// policy asks for, that each checkpoint extends the one it saw before, and
// that its own authorization's leaf is in the tree. Everything comes from
// the files the origin publishes (checkpoint, tiles, entry bundles): the
// phone asks no server for its leaf, so nobody learns which leaf is whose
// beyond what fetching the newest tiles tells, and the public phone API
// keeps no database.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// PhonePolicy is what a phone trusts of the log: its key (whose name is
// the origin) and, optionally, witnesses of which at least Quorum must have
// cosigned a checkpoint (C2SP tlog-cosignature, cosignature/v1).
type PhonePolicy struct {
	Log       note.Verifier
	Witnesses []note.Verifier
	Quorum    int
}

// NewPhonePolicy reads the log's verifier key and the witnesses' (vkeys:
// <name>+<hash>+<base64 of 0x04 || Ed25519 key>, as litewitness prints
// it, or a plain Ed25519 note key of the witness). quorum 0 with witnesses
// means all of them.
func NewPhonePolicy(logKey string, witnessKeys []string, quorum int) (*PhonePolicy, error) {
	v, err := Verifier(logKey)
	if err != nil {
		return nil, err
	}
	p := &PhonePolicy{Log: v}
	names := map[string]bool{v.Name(): true}
	for _, k := range witnessKeys {
		w, err := witnessVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, err
		}
		if names[w.Name()] {
			// Two keys of one name would count one witness twice, or
			// take the log's own signature for a witness's.
			return nil, fmt.Errorf("transparency: witness %q: a name given twice, or the log's", w.Name())
		}
		names[w.Name()] = true
		p.Witnesses = append(p.Witnesses, w)
	}
	switch {
	case quorum < 0 || quorum > len(p.Witnesses):
		return nil, fmt.Errorf("transparency: a witness quorum of %d with %d witnesses", quorum, len(p.Witnesses))
	case quorum == 0:
		quorum = len(p.Witnesses)
	}
	p.Quorum = quorum
	return p, nil
}

// witnessVerifier is a cosignature/v1 verifier of vkey, whose key hash
// must be the one the key's bytes give (a mistyped key is refused now,
// not silently never matched).
func witnessVerifier(vkey string) (note.Verifier, error) {
	name, rest, _ := strings.Cut(vkey, "+")
	hash16, key64, _ := strings.Cut(rest, "+")
	key, err := base64.StdEncoding.Strict().DecodeString(key64)
	if err != nil || len(key) == 0 || len(hash16) != 8 {
		return nil, fmt.Errorf("transparency: witness key %q: not a vkey", vkey)
	}
	if key[0] == 0x01 { // a plain Ed25519 note key: its cosignature key
		if vkey, err = fnote.VKeyToCosignatureV1(vkey); err != nil {
			return nil, fmt.Errorf("transparency: witness key of %q: %w", name, err)
		}
		_, rest, _ = strings.Cut(vkey, "+")
		hash16, _, _ = strings.Cut(rest, "+")
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		return nil, fmt.Errorf("transparency: witness key of %q: %w", name, err)
	}
	if h, err := strconv.ParseUint(hash16, 16, 32); err != nil || uint32(h) != v.KeyHash() {
		return nil, fmt.Errorf("transparency: witness key of %q: its hash %s is not the key's", name, hash16)
	}
	return v, nil
}

// PolicyError is a checkpoint that verified but that too few witnesses
// cosigned: the phone keeps the checkpoint it has.
type PolicyError struct {
	Size      uint64
	Cosigners []string
	Quorum    int
}

func (e *PolicyError) Error() string {
	who := "none"
	if len(e.Cosigners) > 0 {
		who = strings.Join(e.Cosigners, ", ")
	}
	return fmt.Sprintf("transparency: the checkpoint of %d leaves has %d valid cosignatures of the %d the witness policy requires (cosigned by: %s)",
		e.Size, len(e.Cosigners), e.Quorum, who)
}

// Open verifies a published checkpoint under the policy: the log's
// signature under its origin, every signature line canonically encoded
// (note.Open reads base64 leniently: a changed last character could
// decode to the same bytes), a configured witness's cosignature valid, and
// at least Quorum of them. It returns the checkpoint and who cosigned it.
func (p *PhonePolicy) Open(raw []byte) (*Checkpoint, []string, error) {
	if len(raw) > maxPhoneCheckpoint {
		return nil, nil, fmt.Errorf("transparency: a checkpoint of %d bytes", len(raw))
	}
	cp, _, n, err := log.ParseCheckpoint(raw, p.Log.Name(), p.Log, p.Witnesses...)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency: checkpoint: %w", err)
	}
	for _, s := range slices.Concat(n.Sigs, n.UnverifiedSigs) {
		b, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil || base64.StdEncoding.EncodeToString(b) != s.Base64 {
			return nil, nil, fmt.Errorf("transparency: checkpoint: the signature of %q is not canonically encoded", s.Name)
		}
	}
	var cosigners []string
	for _, w := range p.Witnesses {
		for _, s := range n.Sigs {
			if s.Name == w.Name() && s.Hash == w.KeyHash() {
				cosigners = append(cosigners, w.Name())
				break
			}
		}
	}
	c := &Checkpoint{Size: cp.Size, Root: cp.Hash, Raw: raw}
	if len(cosigners) < p.Quorum {
		return c, cosigners, &PolicyError{Size: cp.Size, Cosigners: cosigners, Quorum: p.Quorum}
	}
	return c, cosigners, nil
}

// Bounds on what a phone reads from the origin, which it does not trust:
// a cosigned checkpoint is a few hundred bytes; a tile is 256 hashes; an
// entry bundle 256 entries of at most 45 bytes, each with its length.
const (
	maxPhoneCheckpoint = 64 << 10
	maxPhoneTile       = layout.TileWidth * 32
	maxPhoneBundle     = 64 << 10
)

// phoneSource reads a published log over HTTP, bounded in size and time.
type phoneSource struct {
	http *http.Client
	base *url.URL
}

// OpenPhoneSource is the log at loc as a phone reads it: an http(s) URL of
// the directory the origin serves it from (…/log/), each answer bounded;
// or a local directory (tests, a copy).
func OpenPhoneSource(loc string, hc *http.Client) (Source, error) {
	if !strings.HasPrefix(loc, "http://") && !strings.HasPrefix(loc, "https://") {
		return OpenSource(loc)
	}
	if !strings.HasSuffix(loc, "/") {
		loc += "/"
	}
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("transparency: log URL: %w", err)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &phoneSource{http: hc, base: u}, nil
}

func (s *phoneSource) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	u := s.base.JoinPath(path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("transparency: %w", err)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("transparency: the origin: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("transparency: the origin has no %s: %w", path, os.ErrNotExist)
	default:
		return nil, fmt.Errorf("transparency: the origin: %s: HTTP %d", path, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("transparency: the origin: %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("transparency: the origin: %s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// partialOrFull reads a partial tile or bundle, and the full one when the
// partial is gone (tessera deletes partials once the full one exists).
func (s *phoneSource) partialOrFull(ctx context.Context, p uint8, path func(uint8) string, limit int64) ([]byte, error) {
	b, err := s.get(ctx, path(p), limit)
	if p > 0 && errors.Is(err, os.ErrNotExist) {
		return s.get(ctx, path(0), limit)
	}
	return b, err
}

func (s *phoneSource) ReadCheckpoint(ctx context.Context) ([]byte, error) {
	return s.get(ctx, layout.CheckpointPath, maxPhoneCheckpoint)
}

func (s *phoneSource) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	return s.partialOrFull(ctx, p, func(p uint8) string { return layout.TilePath(level, index, p) }, maxPhoneTile)
}

func (s *phoneSource) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	return s.partialOrFull(ctx, p, func(p uint8) string { return layout.EntriesPath(index, p) }, maxPhoneBundle)
}

// PhoneLeaf is an authorization of the phone's whose leaf it checks.
type PhoneLeaf struct {
	// Authorization is the authorization id (hex), for the phone's user.
	Authorization string    `json:"authorization"`
	Entry         []byte    `json:"entry"`
	PickedUp      time.Time `json:"picked_up"`
	// Index and ProvenSize are set once an inclusion proof verified: the
	// leaf is at Index in the tree of ProvenSize leaves, and so in every
	// later tree consistent with it.
	Index      *uint64 `json:"index,omitempty"`
	ProvenSize uint64  `json:"proven_size,omitempty"`
}

// PhoneState is what a phone keeps of the log: the last checkpoint it
// accepted and its authorizations' leaves.
type PhoneState struct {
	Checkpoint string      `json:"checkpoint,omitempty"`
	Leaves     []PhoneLeaf `json:"leaves,omitempty"`
}

// PhoneStateFile is the state's name in the phone's state directory.
const PhoneStateFile = "log.json"

// LoadPhoneState reads the phone's state (none yet: empty). The saved
// checkpoint is verified again by the caller's policy in Sync.
func LoadPhoneState(path string) (*PhoneState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &PhoneState{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("transparency: phone state: %w", err)
	}
	return ParsePhoneState(b)
}

// ParsePhoneState reads a state file strictly.
func ParsePhoneState(b []byte) (*PhoneState, error) {
	st := &PhoneState{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(st); err != nil {
		return nil, fmt.Errorf("transparency: phone state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("transparency: phone state: data after the object")
	}
	for _, l := range st.Leaves {
		if e, err := ParseEntry(l.Entry); err != nil || e.Kind != KindAuthorization {
			return nil, fmt.Errorf("transparency: phone state: the leaf of %s is not an authorization's", l.Authorization)
		}
	}
	return st, nil
}

// Save writes the state atomically: a crash leaves the old one.
func (st *PhoneState) Save(path string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(path, b)
}

// AddLeaf records an authorization to prove (a pickup); one already
// recorded is kept as it is.
func (st *PhoneState) AddLeaf(authorization string, entry []byte, at time.Time) {
	for _, l := range st.Leaves {
		if bytes.Equal(l.Entry, entry) {
			return
		}
	}
	st.Leaves = append(st.Leaves, PhoneLeaf{Authorization: authorization, Entry: entry, PickedUp: at.UTC()})
}

// PhoneSync is what one update found.
type PhoneSync struct {
	Checkpoint *Checkpoint // accepted now (the one kept, when Stale)
	Previous   *Checkpoint // the one seen before, nil on the first
	Cosigners  []string
	// Stale: the origin served an older checkpoint that the kept one
	// extends (a cache); nothing changed.
	Stale   bool
	Proven  []PhoneLeaf // proven now
	Pending []PhoneLeaf // not in the tree yet
}

// PhoneUpdate brings st to the log's current checkpoint under policy p:
// the checkpoint verified (signature, witnesses), consistent with the one
// st holds (a *ForkProof when the log showed two histories), then every
// leaf of st not proven yet located in the published entries and proven
// included by an inclusion proof built from the tiles and verified by
// transparency-dev/merkle. st changes only when the checkpoint was
// accepted; a leaf not found stays pending.
func PhoneUpdate(ctx context.Context, src Source, p *PhonePolicy, st *PhoneState) (*PhoneSync, error) {
	raw, err := src.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("transparency: read checkpoint: %w", err)
	}
	cp, cosigners, err := p.Open(raw)
	if err != nil {
		return nil, err
	}
	res := &PhoneSync{Checkpoint: cp, Cosigners: cosigners}
	if st.Checkpoint != "" {
		// The saved checkpoint was accepted under the policy then; its
		// log signature is what makes it evidence now.
		old, err := OpenCheckpoint([]byte(st.Checkpoint), p.Log)
		if err != nil {
			return nil, fmt.Errorf("transparency: the saved checkpoint: %w", err)
		}
		res.Previous = old
		stale, err := phoneConsistent(ctx, src, old, cp)
		if err != nil {
			return nil, err
		}
		if stale {
			res.Checkpoint, res.Stale = old, true
		}
	}
	cur := res.Checkpoint
	leaves := slices.Clone(st.Leaves)
	for i := range leaves {
		l := &leaves[i]
		if l.Index != nil && l.ProvenSize <= cur.Size {
			continue
		}
		idx, found, err := LocateLeaf(ctx, src, cur.Size, l.Entry)
		if err != nil {
			return nil, err
		}
		if !found {
			res.Pending = append(res.Pending, *l)
			continue
		}
		pb, err := client.NewProofBuilder(ctx, cur.Size, src.ReadTile)
		if err != nil {
			return nil, fmt.Errorf("transparency: proof: %w", err)
		}
		if err := ProveInclusion(ctx, pb, cur, idx, l.Entry); err != nil {
			return nil, err
		}
		l.Index, l.ProvenSize = &idx, cur.Size
		res.Proven = append(res.Proven, *l)
	}
	st.Checkpoint, st.Leaves = string(cur.Raw), leaves
	return res, nil
}

// phoneConsistent checks that cp extends old. A smaller cp that old
// extends is stale (a cache served an older one): true, no error. Two
// histories are a *ForkProof; tiles that do not match the checkpoint that
// names them (an origin serving badly) are an error, not a proof.
func phoneConsistent(ctx context.Context, src Source, old, cp *Checkpoint) (stale bool, err error) {
	switch {
	case cp.Size == old.Size:
		if !bytes.Equal(cp.Root, old.Root) {
			return false, &ForkProof{Reason: fmt.Sprintf("two trees of %d leaves with different roots", cp.Size), Old: old.Raw, New: cp.Raw}
		}
		return false, nil
	case old.Size == 0:
		return false, nil
	case cp.Size == 0:
		return true, nil // the empty tree is a prefix of every tree
	}
	small, big := old, cp
	if cp.Size < old.Size {
		small, big = cp, old
	}
	if big == old {
		// The tree seen before: does the origin still serve its tiles?
		// Not at all (404), or not ones that give its root: no proof
		// either way, and the smaller tree is refused. An origin that
		// cannot be reached says nothing of the log: an error, no fork.
		last := (old.Size - 1) / layout.TileWidth
		_, err := src.ReadTile(ctx, 0, last, layout.PartialTileSize(0, last, old.Size))
		if errors.Is(err, os.ErrNotExist) {
			return false, &ForkProof{Reason: fmt.Sprintf("the log has %d leaves now, %d were seen before, and the origin no longer serves the tiles of the tree of %d that would show the smaller tree is its prefix", cp.Size, old.Size, old.Size),
				Old: old.Raw, New: cp.Raw}
		}
		if err != nil {
			return false, fmt.Errorf("transparency: the tiles of the tree seen before: %w", err)
		}
	}
	p, prefix, err := prefixProof(ctx, src, small.Size, big)
	if big == old && errors.Is(err, errTilesNotTheTree) {
		return false, &ForkProof{Reason: fmt.Sprintf("the log has %d leaves now, %d were seen before, and the tiles the origin serves are not of the tree seen before", cp.Size, old.Size),
			Old: old.Raw, New: cp.Raw}
	}
	if err != nil {
		return false, err
	}
	if bytes.Equal(prefix, small.Root) {
		return big == old, nil
	}
	return false, &ForkProof{Reason: fmt.Sprintf("the tree of %d leaves is not a prefix of the tree of %d", small.Size, big.Size),
		Old: old.Raw, New: cp.Raw, Prefix: prefix, Proof: p}
}

// errTilesNotTheTree: the origin's tiles do not give a checkpoint's root.
var errTilesNotTheTree = errors.New("transparency: the tiles do not give the root of the checkpoint")

// prefixProof is, from the tiles of big's tree, the root of its first n
// leaves and the consistency proof that it is their root, verified
// against big's root: what a fork proof is made of.
func prefixProof(ctx context.Context, src Source, n uint64, big *Checkpoint) ([][]byte, []byte, error) {
	// Every tile read at big's size: the smaller tree's partial tiles may
	// be gone, and its complete subtrees are in the bigger tree's tiles.
	tiles := func(ctx context.Context, level, index uint64, _ uint8) ([]byte, error) {
		return src.ReadTile(ctx, level, index, layout.PartialTileSize(level, index, big.Size))
	}
	nodes, err := client.FetchRangeNodes(ctx, n, tiles)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency: the first %d leaves' nodes: %w", n, err)
	}
	rf := &compact.RangeFactory{Hash: hasher.HashChildren}
	r, err := rf.NewRange(0, n, nodes)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency: the first %d leaves' nodes: %w", n, err)
	}
	prefix, err := r.GetRootHash(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency: root: %w", err)
	}
	pb, err := client.NewProofBuilder(ctx, big.Size, src.ReadTile)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency: proof: %w", err)
	}
	p, err := pb.ConsistencyProof(ctx, n, big.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("transparency: consistency proof %d→%d: %w", n, big.Size, err)
	}
	if err := proof.VerifyConsistency(hasher, n, big.Size, p, prefix, big.Root); err != nil {
		return nil, nil, fmt.Errorf("%w of %d leaves: %w", errTilesNotTheTree, big.Size, err)
	}
	return p, prefix, nil
}

// LocateLeaf finds entry among the first size leaves, reading the entry
// bundles the origin publishes. Authorizations are appended in the order
// they were stored, dated by their statement, so the days of
// authorization leaves grow with the index: a binary search over the
// bundles finds the first that may hold entry's day (with a day's slack
// for a statement stored just after midnight, and audit heads, dated when
// logged, ignored), and the bundles from there are read until entry or a
// later day. What it finds is only a candidate: the inclusion proof
// decides. An origin that lies here can hide the leaf, never fake it.
func LocateLeaf(ctx context.Context, src Source, size uint64, entry []byte) (uint64, bool, error) {
	return locateLeaf(ctx, src, size, entry, maxLocateBundles)
}

// maxLocateBundles bounds the bundles one search reads after the binary
// search (262,144 leaves, 12 MiB of this log's entries): a day of vouches
// at any rate seen is far less, and an origin serving bundles whose days
// never end the scan must not make a phone read the whole log.
const maxLocateBundles = 1024

func locateLeaf(ctx context.Context, src Source, size uint64, entry []byte, limit uint64) (uint64, bool, error) {
	want, err := ParseEntry(entry)
	if err != nil {
		return 0, false, err
	}
	if want.Kind != KindAuthorization {
		return 0, false, errors.New("transparency: a phone looks for an authorization's leaf")
	}
	if size == 0 {
		return 0, false, nil
	}
	from := want.Day.AddDate(0, 0, -1)
	until := want.Day.AddDate(0, 0, 1)
	bundles := (size + layout.EntryBundleWidth - 1) / layout.EntryBundleWidth
	read := func(b uint64) ([][]byte, error) {
		eb, err := client.GetEntryBundle(ctx, src.ReadEntryBundle, b, size)
		if err != nil {
			return nil, fmt.Errorf("transparency: entry bundle %d: %w", b, err)
		}
		if want := min(layout.EntryBundleWidth, size-b*layout.EntryBundleWidth); uint64(len(eb.Entries)) != want {
			return nil, fmt.Errorf("transparency: entry bundle %d has %d entries, %d expected", b, len(eb.Entries), want)
		}
		return eb.Entries, nil
	}
	// The first bundle whose last authorization is not before from.
	lo, hi := uint64(0), bundles
	for lo < hi {
		mid := lo + (hi-lo)/2
		entries, err := read(mid)
		if err != nil {
			return 0, false, err
		}
		before := false
		for i := len(entries) - 1; i >= 0; i-- {
			if e, err := ParseEntry(entries[i]); err == nil && e.Kind == KindAuthorization {
				before = e.Day.Before(from)
				break
			}
		}
		if before {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for b := lo; b < bundles; b++ {
		if b-lo >= limit {
			return 0, false, fmt.Errorf("transparency: the leaf is not in the %d entry bundles from %d where its day begins: given up", limit, lo)
		}
		entries, err := read(b)
		if err != nil {
			return 0, false, err
		}
		for i, e := range entries {
			if bytes.Equal(e, entry) {
				return b*layout.EntryBundleWidth + uint64(i), true, nil
			}
			if pe, err := ParseEntry(e); err == nil && pe.Kind == KindAuthorization && pe.Day.After(until) {
				return 0, false, nil
			}
		}
	}
	return 0, false, nil
}

// ForkProof is the proof that the log showed two histories: both signed
// checkpoints and, when their sizes differ, the root of the bigger tree's
// first leaves (as many as the smaller has) with the consistency proof
// that it is — a root that is not the smaller checkpoint's. Anyone with
// the log's key checks it (Check) without trusting the phone or the
// origin, as the Go checksum database's client prints its proof of
// misbehaviour. Without Proof and with different sizes it proves nothing
// by itself: the origin would not show the tiles.
type ForkProof struct {
	Reason   string
	Old, New []byte
	Prefix   []byte
	Proof    [][]byte
}

func (f *ForkProof) Error() string {
	return "transparency: the log is not append-only: " + f.Reason + "\n\n" + string(f.Marshal())
}

// forkProofHeader opens a fork proof's text.
const forkProofHeader = "vouch transparency log: proof of misbehaviour"

// Marshal is the proof as text: each note's lines indented by a tab, each
// hash in base64 on a line of its own.
func (f *ForkProof) Marshal() []byte {
	var b bytes.Buffer
	b.WriteString(forkProofHeader + "\n")
	indent := func(title string, note []byte) {
		b.WriteString(title + ":\n")
		for line := range strings.SplitSeq(strings.TrimSuffix(string(note), "\n"), "\n") {
			b.WriteString("\t" + line + "\n")
		}
	}
	indent("old checkpoint", f.Old)
	indent("new checkpoint", f.New)
	if f.Prefix != nil {
		b.WriteString("prefix root:\n\t" + base64.StdEncoding.EncodeToString(f.Prefix) + "\n")
		b.WriteString("consistency proof:\n")
		for _, h := range f.Proof {
			b.WriteString("\t" + base64.StdEncoding.EncodeToString(h) + "\n")
		}
	}
	return b.Bytes()
}

// ParseForkProof reads Marshal's text strictly (the reason is not part of
// it: the proof speaks for itself).
func ParseForkProof(b []byte) (*ForkProof, error) {
	bad := func(what string) (*ForkProof, error) {
		return nil, fmt.Errorf("transparency: fork proof: %s", what)
	}
	if len(b) > 1<<20 || !bytes.HasSuffix(b, []byte("\n")) {
		return bad("not a proof's text")
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0] != forkProofHeader {
		return bad("no header")
	}
	sections := map[string][]string{}
	var order []string
	cur := ""
	for _, l := range lines[1:] {
		if rest, ok := strings.CutPrefix(l, "\t"); ok && cur != "" {
			sections[cur] = append(sections[cur], rest)
			continue
		}
		title, ok := strings.CutSuffix(l, ":")
		if !ok || sections[title] != nil || strings.HasPrefix(title, "\t") {
			return bad(fmt.Sprintf("line %q", l))
		}
		cur = title
		sections[cur] = []string{}
		order = append(order, title)
	}
	want := []string{"old checkpoint", "new checkpoint"}
	if len(order) == 4 {
		want = append(want, "prefix root", "consistency proof")
	}
	if !slices.Equal(order, want) {
		return bad("sections " + strings.Join(order, ", "))
	}
	if len(sections["old checkpoint"]) == 0 || len(sections["new checkpoint"]) == 0 {
		return bad("an empty checkpoint")
	}
	f := &ForkProof{Old: []byte(strings.Join(sections["old checkpoint"], "\n") + "\n"), New: []byte(strings.Join(sections["new checkpoint"], "\n") + "\n")}
	if len(order) == 4 {
		hashes := func(ls []string) ([][]byte, error) {
			out := make([][]byte, 0, len(ls))
			for _, l := range ls {
				h, err := base64.StdEncoding.Strict().DecodeString(l)
				if err != nil || len(h) != hasher.Size() || base64.StdEncoding.EncodeToString(h) != l {
					return nil, fmt.Errorf("transparency: fork proof: %q is not a hash", l)
				}
				out = append(out, h)
			}
			return out, nil
		}
		prefix, err := hashes(sections["prefix root"])
		if err != nil {
			return nil, err
		}
		if len(prefix) != 1 {
			return bad("one prefix root")
		}
		f.Prefix = prefix[0]
		if f.Proof, err = hashes(sections["consistency proof"]); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// Check verifies the proof with the log's key: both checkpoints signed by
// it, and either the same size with different roots, or the bigger tree's
// prefix root proven by the consistency proof and different from the
// smaller checkpoint's root. It returns nil only for a proven fork.
func (f *ForkProof) Check(v note.Verifier) error {
	// Strictly, as the phone opens them: a signature's encoding changed
	// in its padding bits is not the log's.
	p := &PhonePolicy{Log: v}
	a, _, err := p.Open(f.Old)
	if err != nil {
		return fmt.Errorf("transparency: fork proof: the old checkpoint: %w", err)
	}
	b, _, err := p.Open(f.New)
	if err != nil {
		return fmt.Errorf("transparency: fork proof: the new checkpoint: %w", err)
	}
	if a.Size == b.Size {
		if f.Prefix != nil || bytes.Equal(a.Root, b.Root) {
			return errors.New("transparency: fork proof: two checkpoints of one size and one root are no fork")
		}
		return nil
	}
	if f.Prefix == nil {
		return errors.New("transparency: fork proof: trees of different sizes and no consistency proof: nothing is proven")
	}
	small, big := a, b
	if b.Size < a.Size {
		small, big = b, a
	}
	if bytes.Equal(f.Prefix, small.Root) {
		return errors.New("transparency: fork proof: the prefix root is the smaller tree's: the trees are consistent")
	}
	if err := proof.VerifyConsistency(hasher, small.Size, big.Size, f.Proof, f.Prefix, big.Root); err != nil {
		return fmt.Errorf("transparency: fork proof: the consistency proof does not hold: %w", err)
	}
	return nil
}

// writeAtomic writes b to path through a synced temporary file renamed
// over it, then syncs the directory: a crash leaves the old file or the
// new one, never a part.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return fmt.Errorf("transparency: state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("transparency: state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("transparency: state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("transparency: state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("transparency: state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
