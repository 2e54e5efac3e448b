package transparency

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// The phone's decoders never panic on what an origin or a file sends,
// and what they accept holds.

func FuzzPhoneOpenCheckpoint(f *testing.F) {
	fx := newPhoneFixture(f)
	f.Add(fx.raw)
	f.Add([]byte("vouch.test/transparency/log\n1\nAAAA\n\n— x AAAA\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		cp, cosigners, err := fx.policy.Open(raw)
		if err != nil {
			return
		}
		// Accepted: the log signed this very text, a witness cosigned it.
		if !bytes.Equal(cp.Raw, raw) || len(cosigners) < 1 || len(cp.Root) != 32 {
			t.Fatalf("accepted %q: %+v %v", raw, cp, cosigners)
		}
		if _, err := OpenCheckpoint(raw, fx.policy.Log); err != nil {
			t.Fatalf("accepted, yet not the log's: %v", err)
		}
	})
}

func FuzzParseForkProof(f *testing.F) {
	fork := phoneForkProof(f)
	f.Add(fork.text)
	same := &ForkProof{Old: []byte("a\n"), New: []byte("b\n")}
	f.Add(same.Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		fp, err := ParseForkProof(b)
		if err != nil {
			return
		}
		// One text for one proof: what parses is what it prints.
		if !bytes.Equal(fp.Marshal(), b) {
			t.Fatalf("%q parsed, prints\n%q", b, fp.Marshal())
		}
		_ = fp.Check(fork.v)
	})
}

func FuzzParsePhoneState(f *testing.F) {
	st := &PhoneState{Checkpoint: "x\n"}
	st.AddLeaf("ab", AuthorizationEntry([]byte("b"), time.Unix(0, 0)), time.Unix(10, 0))
	seed, err := json.Marshal(st)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParsePhoneState(b)
		if err != nil {
			return
		}
		for _, l := range st.Leaves {
			if e, err := ParseEntry(l.Entry); err != nil || e.Kind != KindAuthorization {
				t.Fatalf("a state with leaf %x accepted", l.Entry)
			}
		}
	})
}
