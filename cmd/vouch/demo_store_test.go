//go:build !production

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
)

// TestDemoStore: `vouch demo store` stores a bundle as the back office
// stores a vouch — its authorization id, the card holder's UZI number and
// role from the certificate, the bundle's bytes, marked published — once,
// however often it is run; a file that is not a bundle is refused and
// stores nothing.
func TestDemoStore(t *testing.T) {
	clearVouchEnv(t)
	man := testenv.Cards(t)
	iss, err := testpki.OpenIssuer(man, "gp")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	raw, err := iss.Issue(pub)
	iss.Close()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "gp.bundle")
	os.WriteFile(file, raw, 0o600)
	junk := filepath.Join(dir, "junk.bundle")
	os.WriteFile(junk, []byte("not a bundle"), 0o600)
	dbURL := testenv.DatabaseURL(t)
	t.Setenv("DATABASE_URL", dbURL)
	db, err := database.Open(context.Background(), database.Config{URL: dbURL})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := func(files ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := realMain(context.Background(), append([]string{"demo", "store"}, files...), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := store(junk); err == nil {
		t.Fatalf("a file that is not a bundle was stored: %s", out)
	}
	for range 2 {
		if out, err := store(file); err != nil || !strings.Contains(out, "as the back office would") {
			t.Fatalf("store: %v\n%s", err, out)
		}
	}
	b, _ := protocol.ParseBundle(raw)
	st, _ := protocol.ParseStatement(b.Statement)
	var (
		n         int
		uzi, role string
		statement []byte
		published bool
	)
	if err := db.Pool().QueryRow(context.Background(), `select count(*) over (), uzi_number, role_code, statement, published_at is not null
		from authorizations where id = $1`, st.AuthorizationID).Scan(&n, &uzi, &role, &statement, &published); err != nil {
		t.Fatal(err)
	}
	if n != 1 || uzi != iss.Identity().UZI || role != iss.Identity().Role || !bytes.Equal(statement, b.Statement) || !published {
		t.Fatalf("stored: %d rows, UZI %s role %s, published %v", n, uzi, role, published)
	}
	var all int
	db.Pool().QueryRow(context.Background(), `select count(*) from authorizations`).Scan(&all)
	if all != 1 {
		t.Fatalf("%d authorizations stored", all)
	}
}
