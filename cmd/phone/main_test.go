package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

func TestRegisterAndCode(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"register", "new"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			key := filepath.Join(t.TempDir(), "phone.key")
			var a, b bytes.Buffer
			if err := realMain(context.Background(), []string{cmd, "-key", key}, &a); err != nil {
				t.Fatal(err)
			}
			if err := realMain(context.Background(), []string{"code", "-key", key}, &b); err != nil {
				t.Fatal(err)
			}
			if a.String() != b.String() {
				t.Errorf("code changed between %s and code:\n%s\n%s", cmd, a.String(), b.String())
			}
			lines := strings.Split(a.String(), "\n")
			code, err := phonecode.Parse(strings.Fields(lines[0])[1])
			if err != nil {
				t.Fatalf("printed code %q does not parse: %v", lines[0], err)
			}
			if got := strings.Fields(lines[1]); len(got) != 2 || got[1] != code.URI() || !strings.HasPrefix(got[1], "vouch:") {
				t.Errorf("qr line %q, want the code's URI %s", lines[1], code.URI())
			}
			// The QR code follows, drawn with half blocks: it is the
			// URI's, and square (rows of equal width).
			qr, err := qrTerminal(code.URI())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(a.String(), qr) || !strings.ContainsAny(qr, "█▀▄") {
				t.Errorf("no QR code of %s in the output:\n%s", code.URI(), a.String())
			}
			rows := strings.Split(strings.TrimRight(qr, "\n"), "\n")
			if len(rows) < 10 {
				t.Errorf("QR code of %d rows", len(rows))
			}
			for _, r := range rows {
				if len([]rune(r)) != len([]rune(rows[0])) {
					t.Errorf("QR rows of unequal width: %d and %d", len([]rune(r)), len([]rune(rows[0])))
				}
			}
			if other, _ := qrTerminal("vouch:SOMETHINGELSE"); other == qr {
				t.Error("the QR code does not depend on the code")
			}
			if err := realMain(context.Background(), []string{cmd, "-key", key}, &a); err == nil {
				t.Errorf("%s overwrote an existing key", cmd)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"fly"}} {
		if err := realMain(context.Background(), args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "usage") {
			t.Errorf("%q: %v", args, err)
		}
	}
}

// TestHelp walks the command table: phone -h lists every command and
// succeeds; each command's -h prints its own usage, under its own name.
func TestHelp(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"-h", "--help", "help"} {
		var out bytes.Buffer
		if err := realMain(context.Background(), []string{h}, &out); err != nil {
			t.Errorf("phone %s: %v, want success", h, err)
		}
		for _, c := range commands {
			if !strings.Contains(out.String(), "  "+c.name+" ") {
				t.Errorf("phone %s does not list %s:\n%s", h, c.name, out.String())
			}
		}
	}
	names := []string{}
	for _, c := range commands {
		names = append(names, c.name)
	}
	for alias := range aliases {
		names = append(names, alias)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			err := realMain(context.Background(), []string{name, "-h"}, &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("phone %s -h: %v, want flag.ErrHelp (exit 0)", name, err)
			}
			want := name
			if a, ok := aliases[name]; ok {
				want = a
			}
			if first, _, _ := strings.Cut(out.String(), "\n"); first != "Usage of "+want+":" {
				t.Errorf("phone %s -h printed %q first, want its own usage", name, first)
			}
		})
	}
}
