package transparency

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/client"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
)

// What a phone will do at pickup: from its bundle alone (the bytes it
// picked up) it computes its leaf, and an inclusion proof against the
// published checkpoint proves it in the log. The statement here was issued
// yesterday (a row stored just before midnight, logged after): the leaf's
// day is the statement's, not the row's.
func TestPhoneComputesItsLeafFromTheBundle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testenv.Database(t)
	dir := t.TempDir()
	skey, vkey := newKey(t, testOrigin)
	var id [16]byte
	var code [10]byte
	rand.Read(id[:])
	rand.Read(code[:])
	issued := time.Now().Add(-24 * time.Hour)
	st, err := protocol.NewStatement("NL", id, code, issued, "", []byte("signer certificate"))
	if err != nil {
		t.Fatal(err)
	}
	b := &protocol.Bundle{Statement: st.Marshal(), StatementSignature: []byte("card signature"), Cert: []byte("signer certificate"),
		Attestation: []byte("attestation"), AttestationSignature: []byte("attestation signature")}
	if _, err := db.Pool().Exec(ctx, `insert into authorizations (id, phone_code, statement, statement_sig, signer_cert,
			attestation, attestation_sig, uzi_number, created_at, expires_at)
		values ($1, $2, $3, $4, $5, $6, $7, '900000024', now(), now() + interval '1 day')`,
		id, code[:], b.Statement, b.StatementSignature, b.Cert, b.Attestation, b.AttestationSignature); err != nil {
		t.Fatal(err)
	}
	insertAuthorizations(t, db, 40)
	runUntilLogged(t, db, testConfig(dir, skey), vkey, 41)

	picked := b.Marshal() // what the phone holds
	parsed, err := protocol.ParseBundle(picked)
	if err != nil {
		t.Fatal(err)
	}
	ps, err := protocol.ParseStatement(parsed.Statement)
	if err != nil {
		t.Fatal(err)
	}
	entry := AuthorizationEntry(picked, ps.IssuedAt)
	src, _ := OpenSource(dir)
	v, _ := Verifier(vkey)
	raw, _ := src.ReadCheckpoint(ctx)
	cp, err := OpenCheckpoint(raw, v)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := readEntries(ctx, src.ReadEntryBundle, 0, cp.Size)
	if err != nil {
		t.Fatal(err)
	}
	idx := -1
	for i, e := range entries {
		if string(e) == string(entry) {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("the phone's leaf %x is not among the log's %d entries", entry, len(entries))
	}
	pb, _ := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err := ProveInclusion(ctx, pb, cp, uint64(idx), entry); err != nil {
		t.Fatal(err)
	}
	if e, _ := ParseEntry(entry); e.Day.Format("2006-01-02") != issued.UTC().Format("2006-01-02") {
		t.Fatalf("the leaf's day is %s, the statement was issued %s", e.Day, issued)
	}
}
