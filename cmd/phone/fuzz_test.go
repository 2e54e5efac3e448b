package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseIndex: the origin's index is untrusted; every name it yields is
// plain (relative, no dot segments, nothing to escape the origin's root).
func FuzzParseIndex(f *testing.F) {
	for _, s := range []string{"exports/ab.zip\n", "# c\n\nx.zip y\n", "../a\n", "/etc/passwd", "a//b", "a\\b", "a/.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, err := parseIndex([]byte(s))
		if err != nil {
			return
		}
		for _, n := range names {
			if strings.HasPrefix(n, "/") || strings.ContainsAny(n, "\\\x00%?#: ") || filepath.Clean(n) != n || strings.HasPrefix(filepath.Clean(n), "..") {
				t.Fatalf("index %q yielded %q", s, n)
			}
			for seg := range strings.SplitSeq(n, "/") {
				if seg == "" || seg == "." || seg == ".." {
					t.Fatalf("index %q yielded %q", s, n)
				}
			}
		}
	})
}

// FuzzReadKeys: a keys file either reads into keys that format back to a
// file reading the same, or is refused.
func FuzzReadKeys(f *testing.F) {
	f.Add("00112233445566778899aabbccddeeff 2900000 144 4\n")
	f.Add("00112233445566778899aabbccddeeff\n# x\n")
	f.Add("zz 1 2 3\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, s string) {
		file := filepath.Join(dir, "k")
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		keys, err := readKeys(file)
		if err != nil {
			return
		}
		if err := os.WriteFile(file, formatKeys(keys), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := readKeys(file)
		if err != nil || len(again) != len(keys) {
			t.Fatalf("keys of %q do not read back: %v", s, err)
		}
		for i := range keys {
			if keys[i] != again[i] {
				t.Fatalf("key %d changed: %v %v", i, keys[i], again[i])
			}
		}
	})
}
