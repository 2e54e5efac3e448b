package transparency

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	fnote "github.com/transparency-dev/formats/note"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// phoneWitness is a test witness: its signer key and its vkey (the
// cosignature/v1 form, as litewitness prints it).
type phoneWitness struct {
	name, skey, vkey string
}

func newPhoneWitness(t testing.TB, name string) phoneWitness {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	cvkey, err := fnote.VKeyToCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return phoneWitness{name: name, skey: skey, vkey: cvkey}
}

// phoneCosign adds the witnesses' cosignatures to a checkpoint.
func phoneCosign(t testing.TB, raw []byte, logVKey string, ws ...phoneWitness) []byte {
	t.Helper()
	v, err := note.NewVerifier(logVKey)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(raw, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	var signers []note.Signer
	for _, w := range ws {
		s, err := fnote.NewSignerForCosignatureV1(w.skey)
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	out, err := note.Sign(&note.Note{Text: n.Text, Sigs: n.Sigs}, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func phoneCosignFile(t testing.TB, dir, logVKey string, ws ...phoneWitness) {
	t.Helper()
	path := filepath.Join(dir, "checkpoint")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, phoneCosign(t, raw, logVKey, ws...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func phonePolicy(t testing.TB, vkey string, witnesses []string, quorum int) *PhonePolicy {
	t.Helper()
	p, err := NewPhonePolicy(vkey, witnesses, quorum)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// phoneUpdate runs PhoneUpdate on the log in dir.
func phoneUpdate(t testing.TB, dir string, p *PhonePolicy, st *PhoneState) (*PhoneSync, error) {
	t.Helper()
	src, err := OpenSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	return PhoneUpdate(context.Background(), src, p, st)
}

// The phone proves its leaf from the published files alone: a leaf not
// logged yet stays pending, is proven once the log has it, and a leaf
// proven once is not fetched again while the log grows consistently.
func TestPhoneProvesItsLeaf(t *testing.T) {
	t.Parallel()
	skey, vkey := newKey(t, testOrigin)
	p := phonePolicy(t, vkey, nil, 0)
	base := someEntries(20)
	mine := base[13]
	notYet := AuthorizationEntry([]byte("picked up, not logged yet"), time.Now())
	first, second := t.TempDir(), t.TempDir()
	buildLog(t, first, skey, vkey, base)
	buildLog(t, second, skey, vkey, append(append([][]byte{}, base...), append(someEntries(5), notYet)...))

	st := &PhoneState{}
	st.AddLeaf("a1", mine, time.Now())
	st.AddLeaf("a2", notYet, time.Now())
	st.AddLeaf("a1", mine, time.Now()) // a second pickup of the same bundle
	res, err := phoneUpdate(t, first, p, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Proven) != 1 || *res.Proven[0].Index != 13 || len(res.Pending) != 1 || res.Pending[0].Authorization != "a2" || res.Previous != nil {
		t.Fatalf("first update: %+v", res)
	}
	res, err = phoneUpdate(t, second, p, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Proven) != 1 || *res.Proven[0].Index != 25 || len(res.Pending) != 0 || res.Previous.Size != 20 || res.Checkpoint.Size != 26 {
		t.Fatalf("second update: %+v", res)
	}
	if got := *st.Leaves[0].Index; got != 13 || st.Leaves[0].ProvenSize != 20 {
		t.Fatalf("the leaf proven before was proven again: %+v", st.Leaves[0])
	}
}

// A leaf is located by a binary search over the entry bundles by day: in
// a log of several days and bundles (audit heads dated when logged, out
// of order), every authorization is found where it is, one of another day
// or not logged is not, and far fewer bundles are read than the log has.
func TestPhoneLocatesLeafByDay(t *testing.T) {
	t.Parallel()
	skey, vkey := newKey(t, testOrigin)
	day0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	var entries [][]byte
	for i := range 2600 {
		if i%97 == 50 {
			head, err := AuditHeadEntry(int64(i+1), make([]byte, 32), day0.AddDate(0, 0, 30))
			if err != nil {
				t.Fatal(err)
			}
			entries = append(entries, head)
			continue
		}
		b := make([]byte, 8)
		rand.Read(b)
		entries = append(entries, AuthorizationEntry(b, day0.AddDate(0, 0, i/150)))
	}
	dir := t.TempDir()
	buildLog(t, dir, skey, vkey, entries)
	src, _ := OpenSource(dir)
	var reads atomic.Int64
	counted := phoneCountingSource{Source: src, reads: &reads}
	ctx := context.Background()
	for _, i := range []int{0, 1, 255, 256, 700, 1499, 1500, 2047, 2599} {
		if entries[i][0] != KindAuthorization {
			continue
		}
		reads.Store(0)
		idx, ok, err := LocateLeaf(ctx, counted, uint64(len(entries)), entries[i])
		if err != nil || !ok || idx != uint64(i) {
			t.Fatalf("leaf %d: found %v at %d, %v", i, ok, idx, err)
		}
		if n := reads.Load(); n > 8 {
			t.Errorf("leaf %d: %d bundles read of %d", i, n, (len(entries)+255)/256)
		}
	}
	for name, e := range map[string][]byte{
		"not logged":    AuthorizationEntry([]byte("x"), day0.AddDate(0, 0, 3)),
		"after the log": AuthorizationEntry([]byte("x"), day0.AddDate(0, 0, 40)),
		"before it":     AuthorizationEntry([]byte("x"), day0.AddDate(0, 0, -10)),
	} {
		if _, ok, err := LocateLeaf(ctx, src, uint64(len(entries)), e); ok || err != nil {
			t.Errorf("%s: found %v, %v", name, ok, err)
		}
	}
	if _, _, err := LocateLeaf(ctx, src, uint64(len(entries)), entries[50]); err == nil {
		t.Errorf("an audit head was looked for as a phone's leaf")
	}
	// A day whose bundles never end (here a bound of 1 bundle, the three
	// days around the leaf's spanning more) is given up, not read to the
	// end of the log.
	reads.Store(0)
	if _, ok, err := locateLeaf(ctx, counted, uint64(len(entries)), AuthorizationEntry([]byte("x"), day0.AddDate(0, 0, 8)), 1); ok || err == nil || !strings.Contains(err.Error(), "given up") {
		t.Errorf("an endless day: found %v, %v", ok, err)
	}
	if n := reads.Load(); n > 1+12 {
		t.Errorf("an endless day: %d bundles read", n)
	}
}

type phoneCountingSource struct {
	Source
	reads *atomic.Int64
}

func (s phoneCountingSource) ReadEntryBundle(ctx context.Context, i uint64, p uint8) ([]byte, error) {
	s.reads.Add(1)
	return s.Source.ReadEntryBundle(ctx, i, p)
}

// A split view shown to the phone: it refuses the checkpoint, keeps the
// one it had, and the error is a fork proof anyone with the log's key can
// check — except for a smaller tree whose bigger tree's tiles the origin
// no longer serves, which is refused but proves nothing by itself. A
// stale checkpoint (a cache) that the kept one extends is no fork.
func TestPhoneSplitView(t *testing.T) {
	t.Parallel()
	skey, vkey := newKey(t, testOrigin)
	v, _ := Verifier(vkey)
	p := phonePolicy(t, vkey, nil, 0)
	base := someEntries(300)
	seen := t.TempDir()
	buildLog(t, seen, skey, vkey, base)
	prefix := func(n int, more ...[]byte) [][]byte { return append(append([][]byte{}, base[:n]...), more...) }
	stale := t.TempDir()
	buildLog(t, stale, skey, vkey, base[:280])
	for _, c := range []struct {
		name    string
		entries [][]byte
		dir     string // the origin's files, when not built from entries
		fork    bool
		proven  bool // Check holds
		stale   bool
	}{
		{name: "same size, another leaf", entries: prefix(299, someEntries(1)...), fork: true, proven: true},
		{name: "bigger, not a prefix", entries: append(prefix(150, someEntries(1)...), append(append([][]byte{}, base[151:]...), someEntries(40)...)...), fork: true, proven: true},
		{name: "bigger, a power-of-two prefix changed", entries: append(prefix(255, someEntries(1)...), append(append([][]byte{}, base[256:]...), someEntries(3)...)...), fork: true, proven: true},
		{name: "smaller, not a prefix, no tiles of the bigger", entries: prefix(100, someEntries(20)...), fork: true},
		{name: "bigger, a prefix", entries: prefix(300, someEntries(30)...)},
		{name: "smaller, a prefix: the kept tree's tiles with an old checkpoint", dir: "stale", stale: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st := &PhoneState{}
			if _, err := phoneUpdate(t, seen, p, st); err != nil {
				t.Fatal(err)
			}
			before := st.Checkpoint
			other := t.TempDir()
			if c.dir == "stale" {
				// The kept log's tiles, an older checkpoint of it in front.
				if err := os.CopyFS(other, os.DirFS(seen)); err != nil {
					t.Fatal(err)
				}
				old, _ := os.ReadFile(filepath.Join(stale, "checkpoint"))
				os.WriteFile(filepath.Join(other, "checkpoint"), old, 0o644)
			} else {
				buildLog(t, other, skey, vkey, c.entries)
			}
			res, err := phoneUpdate(t, other, p, st)
			var fp *ForkProof
			switch {
			case c.fork && !errors.As(err, &fp):
				t.Fatalf("a split view passed: %v", err)
			case !c.fork && err != nil:
				t.Fatalf("refused: %v", err)
			case !c.fork:
				if res.Stale != c.stale {
					t.Fatalf("stale %v, want %v", res.Stale, c.stale)
				}
				return
			}
			if st.Checkpoint != before {
				t.Fatalf("the refused checkpoint replaced the kept one")
			}
			text := fp.Marshal()
			if strings.Count(string(text), "\t— "+testOrigin+" ") != 2 {
				t.Fatalf("the proof lacks the two signed checkpoints:\n%s", text)
			}
			parsed, err := ParseForkProof(text)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(fp.Marshal(), parsed.Marshal()); diff != "" {
				t.Fatalf("round trip (-want +got):\n%s", diff)
			}
			err = parsed.Check(v)
			if c.proven && err != nil {
				t.Fatalf("a third party cannot check the proof: %v\n%s", err, text)
			}
			if !c.proven && err == nil {
				t.Fatalf("a proof without a consistency proof was taken as proven")
			}
		})
	}
}

// The witness policy: without witnesses configured an uncosigned
// checkpoint is accepted; with them, a checkpoint fewer than the quorum
// cosigned is refused, the old one kept and the reason given.
func TestPhoneWitnessPolicy(t *testing.T) {
	t.Parallel()
	skey, vkey := newKey(t, testOrigin)
	w1, w2, stranger := newPhoneWitness(t, "witness.one"), newPhoneWitness(t, "witness.two"), newPhoneWitness(t, "witness.stranger")
	first, second := t.TempDir(), t.TempDir()
	base := someEntries(4)
	buildLog(t, first, skey, vkey, base)
	buildLog(t, second, skey, vkey, append(append([][]byte{}, base...), someEntries(2)...))
	firstRaw, _ := os.ReadFile(filepath.Join(first, "checkpoint"))
	secondRaw, _ := os.ReadFile(filepath.Join(second, "checkpoint"))
	for _, c := range []struct {
		name      string
		witnesses []string
		quorum    int
		cosigners []phoneWitness
		refused   bool
	}{
		{name: "no policy, uncosigned", refused: false},
		{name: "no policy, cosigned by strangers", cosigners: []phoneWitness{stranger}},
		{name: "one witness, uncosigned", witnesses: []string{w1.vkey}, refused: true},
		{name: "one witness, cosigned", witnesses: []string{w1.vkey}, cosigners: []phoneWitness{w1}},
		{name: "one witness, a stranger cosigned", witnesses: []string{w1.vkey}, cosigners: []phoneWitness{stranger}, refused: true},
		{name: "two witnesses, all required, one cosigned", witnesses: []string{w1.vkey, w2.vkey}, cosigners: []phoneWitness{w2}, refused: true},
		{name: "two witnesses, quorum 1, one cosigned", witnesses: []string{w1.vkey, w2.vkey}, quorum: 1, cosigners: []phoneWitness{w2}},
		{name: "two witnesses, both cosigned", witnesses: []string{w1.vkey, w2.vkey}, quorum: 2, cosigners: []phoneWitness{w1, w2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := phonePolicy(t, vkey, c.witnesses, c.quorum)
			dir := t.TempDir()
			write := func(raw []byte) {
				if err := os.CopyFS(dir, os.DirFS(second)); err != nil && !errors.Is(err, os.ErrExist) {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "checkpoint"), raw, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// The phone holds the first checkpoint, cosigned by all: then
			// the log shows the second, cosigned as the case says.
			st := &PhoneState{Checkpoint: string(phoneCosign(t, firstRaw, vkey, w1, w2))}
			raw := secondRaw
			if len(c.cosigners) > 0 {
				raw = phoneCosign(t, secondRaw, vkey, c.cosigners...)
			}
			write(raw)
			res, err := phoneUpdate(t, dir, p, st)
			var pe *PolicyError
			switch {
			case c.refused && !errors.As(err, &pe):
				t.Fatalf("accepted without its witnesses: %v", err)
			case c.refused:
				if st.Checkpoint != string(phoneCosign(t, firstRaw, vkey, w1, w2)) && !strings.HasPrefix(st.Checkpoint, string(firstRaw[:len(firstRaw)-1])) {
					t.Fatalf("the old checkpoint was not kept")
				}
				if !strings.Contains(err.Error(), "requires") {
					t.Fatalf("the refusal does not say why: %v", err)
				}
			case err != nil:
				t.Fatalf("refused: %v", err)
			case res.Checkpoint.Size != 6 || st.Checkpoint != string(raw):
				t.Fatalf("not accepted: %+v", res)
			case len(res.Cosigners) < p.Quorum:
				t.Fatalf("cosigners %v, quorum %d", res.Cosigners, p.Quorum)
			}
		})
	}
}

// Witness keys are refused when they cannot count: a quorum larger than
// the witnesses, a name given twice or the log's, a key whose hash is not
// its own.
func TestPhonePolicyRefusesBadWitnessKeys(t *testing.T) {
	t.Parallel()
	_, vkey := newKey(t, testOrigin)
	w1, w2 := newPhoneWitness(t, "witness.one"), newPhoneWitness(t, "witness.two")
	_, plain, _ := note.GenerateKey(rand.Reader, "witness.plain")
	logAsWitness, _ := fnote.VKeyToCosignatureV1(vkey)
	parts := strings.SplitN(w1.vkey, "+", 3)
	wrongHash := parts[0] + "+00000000+" + parts[2]
	for _, c := range []struct {
		name      string
		witnesses []string
		quorum    int
		ok        bool
	}{
		{"quorum above the witnesses", []string{w1.vkey}, 2, false},
		{"negative quorum", []string{w1.vkey}, -1, false},
		{"a name twice", []string{w1.vkey, w1.vkey}, 1, false},
		{"the log's name", []string{logAsWitness}, 1, false},
		{"not a key", []string{"witness.one+00000000+AAAA"}, 1, false},
		{"a hash not the key's", []string{wrongHash}, 1, false},
		{"two witnesses, quorum 1", []string{w1.vkey, w2.vkey}, 1, true},
		{"a plain Ed25519 key", []string{plain}, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewPhonePolicy(vkey, c.witnesses, c.quorum)
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok %v", err, c.ok)
			}
		})
	}
}

// A plain Ed25519 witness key verifies the cosignatures its key makes.
func TestPhonePlainWitnessKey(t *testing.T) {
	t.Parallel()
	skey, vkey := newKey(t, testOrigin)
	wskey, wvkey, _ := note.GenerateKey(rand.Reader, "witness.plain")
	dir := t.TempDir()
	buildLog(t, dir, skey, vkey, someEntries(2))
	phoneCosignFile(t, dir, vkey, phoneWitness{name: "witness.plain", skey: wskey})
	if _, err := phoneUpdate(t, dir, phonePolicy(t, vkey, []string{wvkey}, 1), &PhoneState{}); err != nil {
		t.Fatal(err)
	}
}

// The state survives as written, atomically, and a state file of unknown
// fields or a leaf that is not an authorization's is refused.
func TestPhoneStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, PhoneStateFile)
	st := &PhoneState{Checkpoint: "x\n"}
	idx := uint64(7)
	st.Leaves = []PhoneLeaf{{Authorization: "ab", Entry: AuthorizationEntry([]byte("b"), time.Unix(0, 0)), PickedUp: time.Unix(10, 0).UTC(), Index: &idx, ProvenSize: 9}}
	if err := st.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadPhoneState(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(st, got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	if files, _ := os.ReadDir(dir); len(files) != 1 {
		t.Fatalf("files left: %v", files)
	}
	if st, err := LoadPhoneState(filepath.Join(dir, "none")); err != nil || st.Checkpoint != "" {
		t.Fatalf("no state: %v %v", st, err)
	}
	head, _ := AuditHeadEntry(1, make([]byte, 32), time.Now())
	for name, b := range map[string]string{
		"unknown field": `{"checkpoint":"x","extra":1}`,
		"audit head":    `{"leaves":[{"authorization":"a","entry":"` + b64(head) + `"}]}`,
		"two objects":   `{}{}`,
	} {
		if _, err := ParsePhoneState([]byte(b)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// phoneFixture is a log of 40 leaves cosigned by one witness, the policy
// that requires it, and the inclusion proof of leaf 17.
type phoneFixture struct {
	vkey   string
	raw    []byte // the cosigned checkpoint
	policy *PhonePolicy
	cp     *Checkpoint
	entry  []byte
	proof  [][]byte
	dir    string
}

func newPhoneFixture(t testing.TB) *phoneFixture {
	t.Helper()
	skey, vkey := newKey(t, testOrigin)
	w := newPhoneWitness(t, "witness.one")
	dir := t.TempDir()
	entries := someEntries(40)
	buildLog(t, dir, skey, vkey, entries)
	phoneCosignFile(t, dir, vkey, w)
	raw, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
	p := phonePolicy(t, vkey, []string{w.vkey}, 1)
	cp, _, err := p.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := OpenSource(dir)
	pb, _ := client.NewProofBuilder(context.Background(), cp.Size, src.ReadTile)
	proof, err := pb.InclusionProof(context.Background(), 17)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyInclusion(cp, 17, entries[17], proof); err != nil {
		t.Fatal(err)
	}
	return &phoneFixture{vkey: vkey, raw: raw, policy: p, cp: cp, entry: entries[17], proof: proof, dir: dir}
}

// A one-byte change anywhere — in the checkpoint's text, the log's
// signature, the witness's cosignature, the inclusion proof, the leaf, a
// fork proof — is refused. Every byte is changed in three ways: a low bit
// (which base64 can hide in padding bits), a high bit, and a space.
func TestPhoneRefusesEveryOneByteChange(t *testing.T) {
	t.Parallel()
	f := newPhoneFixture(t)
	sigAt := bytes.Index(f.raw, []byte("\n\n— ")) + 2
	cosigAt := bytes.LastIndex(f.raw, []byte("— witness.one "))
	fork := phoneForkProof(t)
	mutate := func(b []byte, i int, how byte) []byte {
		c := bytes.Clone(b)
		switch how {
		case 0:
			c[i] ^= 0x01
		case 1:
			c[i] ^= 0x80
		default:
			if c[i] == ' ' {
				c[i] = 'x'
			} else {
				c[i] = ' '
			}
		}
		return c
	}
	for _, c := range []struct {
		name     string
		from, to int
		accept   func(i int, how byte) error
	}{
		{"checkpoint text", 0, sigAt, func(i int, how byte) error { _, _, err := f.policy.Open(mutate(f.raw, i, how)); return err }},
		{"log signature", sigAt, cosigAt, func(i int, how byte) error { _, _, err := f.policy.Open(mutate(f.raw, i, how)); return err }},
		{"cosignature", cosigAt, len(f.raw), func(i int, how byte) error { _, _, err := f.policy.Open(mutate(f.raw, i, how)); return err }},
		{"inclusion proof", 0, len(f.proof) * 32, func(i int, how byte) error {
			p := make([][]byte, len(f.proof))
			for j := range p {
				p[j] = bytes.Clone(f.proof[j])
			}
			p[i/32] = mutate(p[i/32], i%32, how)
			return VerifyInclusion(f.cp, 17, f.entry, p)
		}},
		{"leaf", 0, len(f.entry), func(i int, how byte) error { return VerifyInclusion(f.cp, 17, mutate(f.entry, i, how), f.proof) }},
		{"fork proof", 0, len(fork.text), func(i int, how byte) error {
			fp, err := ParseForkProof(mutate(fork.text, i, how))
			if err != nil {
				return err
			}
			return fp.Check(fork.v)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if c.to <= c.from {
				t.Fatalf("nothing to change in [%d, %d)", c.from, c.to)
			}
			for i := c.from; i < c.to; i++ {
				for how := range byte(3) {
					if err := c.accept(i, how); err == nil {
						t.Errorf("byte %d changed (%d) was accepted", i, how)
					}
				}
			}
		})
	}
	// The unchanged ones pass: the refusals above are the changes'.
	if _, _, err := f.policy.Open(f.raw); err != nil {
		t.Fatal(err)
	}
	if err := mustParseFork(t, fork.text).Check(fork.v); err != nil {
		t.Fatal(err)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

type phoneFork struct {
	text []byte
	v    note.Verifier
}

// phoneForkProof is the proof of a fork: a log of 10 leaves seen, then
// one of 12 whose first 10 differ in one leaf.
func phoneForkProof(t testing.TB) phoneFork {
	t.Helper()
	skey, vkey := newKey(t, testOrigin)
	v, _ := Verifier(vkey)
	base := someEntries(10)
	a, b := t.TempDir(), t.TempDir()
	buildLog(t, a, skey, vkey, base)
	buildLog(t, b, skey, vkey, append(append(append([][]byte{}, base[:6]...), someEntries(1)...), append(append([][]byte{}, base[7:]...), someEntries(2)...)...))
	p := phonePolicy(t, vkey, nil, 0)
	st := &PhoneState{}
	if _, err := phoneUpdate(t, a, p, st); err != nil {
		t.Fatal(err)
	}
	_, err := phoneUpdate(t, b, p, st)
	var fp *ForkProof
	if !errors.As(err, &fp) {
		t.Fatalf("no fork found: %v", err)
	}
	return phoneFork{text: fp.Marshal(), v: v}
}

func mustParseFork(t testing.TB, b []byte) *ForkProof {
	t.Helper()
	fp, err := ParseForkProof(b)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// A signature whose base64 differs only in its padding bits decodes to the
// same bytes (note.Open decodes leniently): the phone refuses it all the
// same, in the checkpoint (log signature and cosignature) and in a fork
// proof, so that no two texts are the same signed checkpoint.
func TestPhoneRefusesNonCanonicalSignature(t *testing.T) {
	t.Parallel()
	f := newPhoneFixture(t)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	lines := strings.Split(string(f.raw), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "— ") {
			continue
		}
		t.Run(strings.Fields(l)[1], func(t *testing.T) {
			b := []byte(strings.TrimRight(l, "="))
			last := len(b) - 1
			b[last] = alphabet[strings.IndexByte(alphabet, b[last])^1]
			changed := slicesReplace(lines, i, string(b)+l[len(b):])
			raw := []byte(strings.Join(changed, "\n"))
			if _, err := note.Open(raw, note.VerifierList(f.policy.Log, f.policy.Witnesses[0])); err != nil {
				t.Fatalf("the change is not one note.Open lets through: %v", err)
			}
			if _, _, err := f.policy.Open(raw); err == nil {
				t.Fatalf("a non-canonical signature was accepted:\n%s", raw)
			}
		})
	}
}

func slicesReplace(s []string, i int, v string) []string {
	c := append([]string{}, s...)
	c[i] = v
	return c
}

// An origin that cannot serve tiles now (not a 404: the network) makes a
// smaller checkpoint an error, not a fork: the phone claims misbehaviour
// only on what the origin served.
func TestPhoneUnreachableTilesAreNoFork(t *testing.T) {
	t.Parallel()
	skey, vkey := newKey(t, testOrigin)
	p := phonePolicy(t, vkey, nil, 0)
	base := someEntries(300)
	seen, older := t.TempDir(), t.TempDir()
	buildLog(t, seen, skey, vkey, base)
	buildLog(t, older, skey, vkey, base[:280])
	st := &PhoneState{}
	if _, err := phoneUpdate(t, seen, p, st); err != nil {
		t.Fatal(err)
	}
	kept := st.Checkpoint
	other := t.TempDir()
	if err := os.CopyFS(other, os.DirFS(seen)); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(filepath.Join(older, "checkpoint"))
	os.WriteFile(filepath.Join(other, "checkpoint"), old, 0o644)
	src, _ := OpenSource(other)
	_, err := PhoneUpdate(context.Background(), phoneTilesDown{src}, p, st)
	var fp *ForkProof
	if err == nil || errors.As(err, &fp) || st.Checkpoint != kept {
		t.Fatalf("tiles unreachable: %v", err)
	}
}

type phoneTilesDown struct{ Source }

func (phoneTilesDown) ReadTile(context.Context, uint64, uint64, uint8) ([]byte, error) {
	return nil, errors.New("connection refused")
}
