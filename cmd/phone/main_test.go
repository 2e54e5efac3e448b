package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/phonecode"
)

func TestNewAndCode(t *testing.T) {
	t.Parallel()
	key := filepath.Join(t.TempDir(), "phone.key")
	var a, b bytes.Buffer
	if err := realMain(context.Background(), []string{"new", "-key", key}, &a); err != nil {
		t.Fatal(err)
	}
	if err := realMain(context.Background(), []string{"code", "-key", key}, &b); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("code changed between new and code:\n%s\n%s", a.String(), b.String())
	}
	line := strings.Fields(strings.Split(a.String(), "\n")[0])
	if _, err := phonecode.Parse(line[1]); err != nil {
		t.Errorf("printed code %q does not parse: %v", line[1], err)
	}
	if err := realMain(context.Background(), []string{"new", "-key", key}, &a); err == nil {
		t.Error("new overwrote an existing key")
	}
}
