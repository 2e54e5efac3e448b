package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/export"
	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/p11"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/testenv"
	"github.com/vouch-nl/vouch/internal/testpki"
	"github.com/vouch-nl/vouch/internal/trust"
)

// TestKeyRotation walks docs/operations.md's "Rotating the export and
// attestation keys" as an operator would, against the roles as processes:
//
//  1. a new export key and a new attestation key are made on the back
//     end's HSM token (pkcs11-tool, as on a real HSM);
//  2. their public keys are published: phones and ingest trust old and new;
//  3. the signers switch: the aggregator signs with old and new, then new
//     only; the back office attests with the new key;
//  4. the old keys are retired from every configuration.
//
// At every step a phone configured as it would be then (one that still
// knows only the old keys, one updated with both, one of the new keys
// alone) verifies what it must, every file of the index and the bundles,
// and refuses what it must: a file signed only by a key it does not know,
// a bundle attested by one; ingest likewise for uploads.
func TestKeyRotation(t *testing.T) {
	w := newWorld(t, testenv.DatabaseURL(t))
	phoneBin := testenv.Build(t, "./cmd/phone")
	phones, gp := vouched(t, w.man, 4) // attested with the old key
	w.vouch(phones, gp)
	ingest, _, _, agg, _ := w.startPipeline()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := phoneclient.New(w.ingest)

	oldExport, oldAtt := w.man.Backend.ExportPub, w.man.Backend.AttestationPub
	oldPhone := rotationPhone{t: t, w: w, bin: phoneBin, name: "old phone", exportKeys: []string{oldExport}, attKeys: []string{oldAtt}}

	// Before: a file of the old key, verified by a phone of today.
	published := map[[16]byte]bool{}
	rotationUpload(ctx, t, client, phones[0], published)
	oldPhone.waitVerifies(published, time.Minute)

	// 1. New keys on the HSM.
	hsm := rotationHSM{t: t, man: w.man, dir: t.TempDir()}
	newExport := hsm.generate("export")
	newAtt := hsm.generate("attestation")

	// 2. Publish the public keys: ingest trusts both attestation keys
	// (restarted with the list), updated phones have both of each.
	ingest.stop()
	ingest = w.rotationRestart("ingest-2", "ingest", "VOUCH_ATTESTATION_KEYS="+oldAtt+","+newAtt.pub)
	updated := rotationPhone{t: t, w: w, bin: phoneBin, name: "updated phone",
		exportKeys: []string{oldExport, newExport.pub}, attKeys: []string{oldAtt, newAtt.pub}}
	rotationUpload(ctx, t, client, phones[1], published) // a bundle of the old key, after the publication
	oldPhone.waitVerifies(published, time.Minute)
	updated.waitVerifies(published, time.Minute)

	// 3a. The aggregator signs with both keys: every file of the index,
	// those built before included, verifies under either key alone.
	agg.stop()
	agg = w.rotationRestart("aggregate-2", "aggregate",
		"VOUCH_EXPORT_KEY_URIS="+w.man.Backend.ExportURI+","+newExport.uri, "VOUCH_EXPORT_KEY_VERSION=v1,v2")
	newOnly := rotationPhone{t: t, w: w, bin: phoneBin, name: "phone of the new keys only",
		exportKeys: []string{newExport.pub}, attKeys: []string{newAtt.pub}}
	newOnly.waitVerifies(published, time.Minute)
	oldPhone.waitVerifies(published, time.Minute)
	updated.waitVerifies(published, time.Minute)

	// 3b. The back office attests with the new key (as `vouch backoffice`
	// would with VOUCH_ATTESTATION_URI set to it). The updated phone
	// verifies the bundle; a phone of the old key alone refuses it, which
	// is why phones are updated before this step.
	fresh := rotationIssue(t, w.man, newAtt.uri)
	w.vouch([]phone{fresh}, gp)
	bundle, err := client.Pickup(ctx, fresh.priv)
	if err != nil || bundle == nil {
		t.Fatalf("pickup of the bundle of the new attestation key: %d bytes, %v", len(bundle), err)
	}
	if err := updated.verifyBundle(bundle, fresh.priv); err != nil {
		t.Fatalf("the updated phone refuses a bundle of the new attestation key: %v", err)
	}
	if err := oldPhone.verifyBundle(bundle, fresh.priv); err == nil {
		t.Fatal("a phone of the old attestation key alone accepted a bundle of the new one")
	}
	rotationUpload(ctx, t, client, fresh, published)
	newOnly.waitVerifies(published, time.Minute)
	overlap := w.rotationIndex()

	// 3c. The aggregator signs with the new key only: the old phone
	// refuses the files made since (signed by a key it does not know), the
	// updated one and one of the new key alone verify them all.
	agg.stop()
	w.rotationRestart("aggregate-3", "aggregate", "VOUCH_EXPORT_KEY_URIS="+newExport.uri, "VOUCH_EXPORT_KEY_VERSION=v2")
	rotationUpload(ctx, t, client, phones[3], published)
	oldPhone.waitRefuses(time.Minute)
	updated.waitVerifies(published, time.Minute)
	newOnly.waitVerifies(published, time.Minute)
	// The files signed by both keys are kept, not signed again: phones
	// fetch the window again once in a rotation, not twice.
	now := w.rotationIndex()
	for f := range overlap {
		if !now[f] {
			t.Errorf("%s, signed by both keys, left the index when the old key did", f)
		}
	}

	// 4. Retire the old keys: ingest trusts the new attestation key alone,
	// so a bundle of the old key (all have expired by then in a real
	// rotation: the overlap outlasts their 24 hours) is refused.
	ingest.stop()
	w.rotationRestart("ingest-3", "ingest", "VOUCH_ATTESTATION_KEYS="+newAtt.pub)
	if _, err := client.Upload(ctx, phones[2].priv, phones[2].bundle, phones[2].keys); err == nil {
		t.Fatal("ingest of the new attestation key alone accepted a bundle of the old one")
	}
	if err := newOnly.verifyBundle(bundle, fresh.priv); err != nil {
		t.Fatalf("the phone of the new keys refuses the new bundle: %v", err)
	}
	newOnly.waitVerifies(published, time.Minute)
	oldPhone.waitRefuses(time.Minute)
}

// rotationRestart starts a role again with its key configuration changed,
// and waits until it is ready.
func (w *world) rotationRestart(name, role string, env ...string) *proc {
	w.t.Helper()
	ops := freeAddr(w.t)
	p := w.role(name, append([]string{"VOUCH_OPS_LISTEN=" + ops}, env...), role)
	w.waitHTTP(p, "http://"+ops+"/readyz")
	return p
}

// rotationUpload uploads ph's keys and adds them to published.
func rotationUpload(ctx context.Context, t *testing.T, c *phoneclient.Client, ph phone, published map[[16]byte]bool) {
	t.Helper()
	if _, err := c.Upload(ctx, ph.priv, ph.bundle, ph.keys); err != nil {
		t.Fatalf("upload: %v", err)
	}
	for _, k := range ph.keys {
		published[k.Data] = true
	}
}

// rotationIssue vouches for a new phone with the GP's card, the
// attestation countersigned by the key at attURI.
func rotationIssue(t *testing.T, man *testpki.Manifest, attURI string) phone {
	t.Helper()
	m := *man
	m.Backend.AttestationURI = attURI
	iss, err := testpki.OpenIssuer(&m, "gp")
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := iss.Issue(pub)
	if err != nil {
		t.Fatalf("issuing a bundle with the new attestation key: %v", err)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	keys := make([]exposure.Key, 10)
	for i := range keys {
		keys[i] = exposure.Key{RollingStart: exposure.IntervalNumber(today.AddDate(0, 0, -2-i)), RollingPeriod: exposure.MaxRollingPeriod}
		copy(keys[i].Data[:], random(t, 16))
	}
	return phone{priv: priv, bundle: raw, keys: keys}
}

// rotationHSM makes keys on the back end's token with pkcs11-tool, the
// HSM vendor's kind of tool, and deletes them when the test ends.
type rotationHSM struct {
	t   *testing.T
	man *testpki.Manifest
	dir string
}

type rotationKey struct{ uri, pub string }

func (h rotationHSM) tool(args ...string) []byte {
	h.t.Helper()
	args = append([]string{"--module", h.man.Module, "--token-label", testpki.BackendToken, "--login", "--pin", h.man.Backend.PIN}, args...)
	cmd := exec.Command("pkcs11-tool", args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+h.man.SoftHSMConf)
	out, err := cmd.CombinedOutput()
	if err != nil {
		h.t.Fatalf("pkcs11-tool %s: %v\n%s", strings.Join(args[6:], " "), err, out)
	}
	return out
}

// generate makes a P-256 key pair that signs, its private half sensitive,
// and writes its public key as PEM, as the phones and ingest get it.
func (h rotationHSM) generate(purpose string) rotationKey {
	h.t.Helper()
	id := random(h.t, 4)
	label := fmt.Sprintf("%s-%x", purpose, id)
	h.tool("--keypairgen", "--key-type", "EC:prime256v1", "--usage-sign", "--sensitive", "--id", hex.EncodeToString(id), "--label", label)
	h.t.Cleanup(func() {
		for _, typ := range []string{"privkey", "pubkey"} {
			h.tool("--delete-object", "--type", typ, "--id", hex.EncodeToString(id))
		}
	})
	der := filepath.Join(h.dir, label+".pub.der")
	h.tool("--read-object", "--type", "pubkey", "--id", hex.EncodeToString(id), "--output-file", der)
	pem := filepath.Join(h.dir, label+".pub.pem")
	if out, err := exec.Command("openssl", "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem).CombinedOutput(); err != nil {
		h.t.Fatalf("openssl pkey: %v\n%s", err, out)
	}
	uri := p11.URI{Token: testpki.BackendToken, Object: label, ID: id, ModulePath: h.man.Module}.String()
	return rotationKey{uri: uri, pub: pem}
}

// rotationPhone is a phone with the key lists it has built in: its
// exports are checked by the reference phone (cmd/phone sync), its
// bundles by the verifier the phone uses offline.
type rotationPhone struct {
	t                   *testing.T
	w                   *world
	bin, name           string
	exportKeys, attKeys []string
}

// sync runs `phone sync` from scratch, so that every file of the index
// is fetched and verified, and returns its output.
func (p rotationPhone) sync() (string, error) {
	var b bytes.Buffer
	cmd := exec.Command(p.bin, "sync", "-cdn", p.w.cdn, "-export-key", strings.Join(p.exportKeys, ","), "-state", p.t.TempDir(), "-timeout", "30s")
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	return b.String(), err
}

// waitVerifies waits until the phone's sync verifies every file of the
// index and the published keys include want (checked with the same keys
// through internal/export's reader, as the phone reads them).
func (p rotationPhone) waitVerifies(want map[[16]byte]bool, within time.Duration) {
	p.t.Helper()
	trusted := p.exportPublic()
	deadline := time.Now().Add(within)
	var last string
	for {
		out, err := p.sync()
		if err == nil {
			got, perr := p.w.publishedUnder(trusted)
			if perr == nil {
				missing := 0
				for k := range want {
					if !got[k] {
						missing++
					}
				}
				if missing == 0 {
					return
				}
				last = fmt.Sprintf("%d of %d keys not published yet", missing, len(want))
			} else {
				last = perr.Error()
			}
		} else {
			last = fmt.Sprintf("%v\n%s", err, out)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s (export keys %v): %s", p.name, p.exportKeys, last)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// waitRefuses waits until the phone's sync refuses a file of the index as
// signed by no key it knows, and refuses none for another reason.
func (p rotationPhone) waitRefuses(within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := p.sync()
		if err != nil && strings.Contains(out, "REFUSED") {
			for line := range strings.Lines(out) {
				if strings.HasPrefix(line, "REFUSED") && !strings.Contains(line, "no signature verifies under a trusted key") {
					p.t.Fatalf("%s refused a file for another reason:\n%s", p.name, out)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s still accepts files or fails otherwise: %v\n%s", p.name, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (p rotationPhone) exportPublic() []*ecdsa.PublicKey {
	p.t.Helper()
	var ks []*ecdsa.PublicKey
	for _, f := range p.exportKeys {
		k, err := trust.ReadECPublicKey(f)
		if err != nil {
			p.t.Fatal(err)
		}
		ks = append(ks, k)
	}
	return ks
}

// verifyBundle is the phone's offline check of a picked-up bundle.
func (p rotationPhone) verifyBundle(bundle []byte, priv ed25519.PrivateKey) error {
	p.t.Helper()
	tr := manifestTrust(p.t, p.w.man)
	tr.Revocation = nil
	tr.AttestationKeys = nil
	for _, f := range p.attKeys {
		k, err := trust.ReadECPublicKey(f)
		if err != nil {
			p.t.Fatal(err)
		}
		tr.AttestationKeys = append(tr.AttestationKeys, k)
	}
	v, err := protocol.NewVerifier(tr)
	if err != nil {
		p.t.Fatal(err)
	}
	_, err = v.Verify(bundle, priv.Public().(ed25519.PublicKey), time.Now())
	return err
}

// rotationIndex is the set of files the origin's index names.
func (w *world) rotationIndex() map[string]bool {
	w.t.Helper()
	resp, err := http.Get(w.cdn + "/index.txt")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	files, err := export.ReadIndex(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	set := map[string]bool{}
	for _, f := range files {
		set[f] = true
	}
	return set
}

// publishedUnder fetches the index and every file in it, each verified
// under trusted, and returns the keys.
func (w *world) publishedUnder(trusted []*ecdsa.PublicKey) (map[[16]byte]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, w.cdn+"/"+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	idx, err := get("index.txt")
	if err != nil {
		return nil, err
	}
	files, err := export.ReadIndex(bytes.NewReader(idx))
	if err != nil {
		return nil, err
	}
	out := map[[16]byte]bool{}
	for _, f := range files {
		b, err := get(f)
		if err != nil {
			return nil, err
		}
		ex, err := export.Open(b, trusted)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, k := range ex.Keys {
			out[k.Data] = true
		}
	}
	return out, nil
}
