package phonecode

import (
	"crypto/ed25519"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"testing"
)

func TestRoundTripAndCheck(t *testing.T) {
	t.Parallel()
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	c := FromPublicKey(pub)
	if !c.Matches(pub) {
		t.Fatal("code does not match its own key")
	}
	s := c.String()
	if len(s) != 21 || strings.Count(s, "-") != 4 {
		t.Fatalf("format %q", s)
	}
	for _, in := range []string{s, strings.ToLower(s), c.Compact(), c.URI(), " " + strings.ReplaceAll(s, "-", " ") + " "} {
		got, err := Parse(in)
		if err != nil || !got.Equal(c) {
			t.Errorf("Parse(%q) = %v, %v", in, got, err)
		}
	}
	other := ed25519.NewKeyFromSeed(append(make([]byte, 31), 1)).Public().(ed25519.PublicKey)
	if c.Matches(other) || c.Matches(pub[:5]) {
		t.Error("code matches another key")
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	c := FromPublicKey(make([]byte, 32))
	s := c.Compact()
	// Every single-symbol substitution in the data part must be caught.
	for i := 0; i < 16; i++ {
		for _, sym := range alphabet {
			if byte(sym) == s[i] {
				continue
			}
			mut := s[:i] + string(sym) + s[i+1:]
			if _, err := Parse(mut); !errors.Is(err, ErrCheck) {
				t.Fatalf("substitution %q at %d: got %v, want ErrCheck", sym, i, err)
			}
		}
	}
	// Adjacent transpositions of different symbols are caught too.
	for i := 0; i < 15; i++ {
		if s[i] == s[i+1] {
			continue
		}
		mut := s[:i] + string(s[i+1]) + string(s[i]) + s[i+2:]
		if _, err := Parse(mut); err == nil {
			t.Fatalf("transposition at %d accepted", i)
		}
	}
	tests := map[string]error{
		"":                      ErrLength,
		s[:16]:                  ErrLength,
		s + "0":                 ErrLength,
		"U" + s[1:]:             ErrCharacter,
		s[:15] + "!" + s[16:]:   ErrCharacter,
		s[:16] + "#":            ErrCharacter,
		strings.Repeat("0", 99): ErrLength,
	}
	for in, want := range tests {
		if _, err := Parse(in); !errors.Is(err, want) {
			t.Errorf("Parse(%q) = %v, want %v", in, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(FromPublicKey(make([]byte, 32)).String())
	f.Add("vouch:0000000000000000")
	f.Add("oooo-iiii-llll-0000-*")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(c.String())
		if err != nil || !again.Equal(c) {
			t.Fatalf("%q parsed to %v which does not round-trip: %v", s, c, err)
		}
	})
}

// TestLikelyGroup: two neighbours swapped in one group are blamed on that
// group or on none, never on another, and mostly on that group; a symbol
// read as its lookalike mostly too.
func TestLikelyGroup(t *testing.T) {
	t.Parallel()
	rng := mrand.New(mrand.NewPCG(1, 2))
	named := map[string]int{}
	for i := range 400 {
		var c Code
		for j := range c {
			c[j] = byte(rng.IntN(256))
		}
		s := []byte(c.String()) // XXXX-XXXX-XXXX-XXXX-C
		group := i%4 + 1
		at := (group-1)*5 + rng.IntN(3)
		kind := "swap"
		if s[at] == s[at+1] {
			continue
		}
		if i%2 == 0 {
			s[at], s[at+1] = s[at+1], s[at]
		} else {
			kind = "lookalike"
			found := false
			for _, p := range lookalikes {
				for k := range 2 {
					if !found && s[at] == p[k] {
						s[at], found = p[1-k], true
					}
				}
			}
			if !found {
				continue
			}
		}
		typed := string(s)
		if _, err := Parse(typed); err == nil {
			continue // the mistake happens to keep the check character
		}
		got := LikelyGroup(typed)
		if got != 0 && got != group {
			// A swap is always found, so another group is never blamed
			// for one; a lookalike can look like a swap elsewhere.
			if kind == "swap" {
				t.Fatalf("%s in group %d of %s: blamed on group %d", kind, group, typed, got)
			}
			named[kind+"-wrong"]++
		}
		if got == group {
			named[kind]++
		}
		named[kind+"-all"]++
	}
	// The check character is one symbol: about one other slip in 37 fits
	// it too, and then no group is named. A lookalike loses to any swap
	// that fits.
	for kind, share := range map[string]float64{"swap": 0.65, "lookalike": 0.5} {
		if n, all := named[kind], named[kind+"-all"]; all == 0 || float64(n) < share*float64(all) {
			t.Errorf("%s: the group was named for %d of %d mistakes", kind, n, all)
		}
	}
	if n, all := named["lookalike-wrong"], named["lookalike-all"]; float64(n) > 0.25*float64(all) {
		t.Errorf("lookalike: another group was named for %d of %d mistakes", n, all)
	}
	if g := LikelyGroup(Code{1, 2, 3}.String()); g != 0 {
		t.Errorf("a right code: group %d", g)
	}
	if g := LikelyGroup("12"); g != 0 {
		t.Errorf("a short code: group %d", g)
	}
}
