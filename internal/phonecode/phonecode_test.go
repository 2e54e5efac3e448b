package phonecode

import (
	"crypto/ed25519"
	"errors"
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
