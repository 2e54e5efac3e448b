package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/testenv"
)

func TestTokens(t *testing.T) {
	man := testenv.Cards(t)
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"tokens", "-module", man.Module}, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vouch-gp", "vouch-staff", "vouch-backend"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("token list lacks %s:\n%s", want, out.String())
		}
	}
}
