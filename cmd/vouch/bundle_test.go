package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/trust"
)

// TestBundleVerifyVectorSets runs `vouch bundle verify -vectors SET FILE`
// on every case of both vector sets, the back end's and the phone's, as
// support staff or a phone team would, and checks the verdict each case
// wants: exit status 0 and OK for ok, 1 and the reason's code and text for
// a refusal.
func TestBundleVerifyVectorSets(t *testing.T) {
	for _, set := range []string{"vectors.json", "vectors-phone.json"} {
		path := filepath.Join(filepath.Dir(vectors), set)
		vec, _, err := trust.LoadVectors(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(vec.Cases) < 100 {
			t.Fatalf("%s: %d cases", set, len(vec.Cases))
		}
		t.Run(set, func(t *testing.T) {
			t.Parallel()
			for _, c := range vec.Cases {
				status, out, errOut, err := bundleVerify("-vectors", path, "-lang", "en", c.Bundle)
				want := protocol.Reason(c.Want)
				switch {
				case want == protocol.ReasonOK && (status != 0 || !strings.HasPrefix(out, "OK  ")):
					t.Errorf("%s: status %d (%v), want 0 and OK:\n%s%s", c.Name, status, err, out, errOut)
				case want != protocol.ReasonOK && (status != 1 || !strings.HasPrefix(out, "REFUSED  "+c.Want+"\n"+want.Text("en")+"\n")):
					t.Errorf("%s: status %d (%v), want 1 and %s:\n%s%s", c.Name, status, err, c.Want, out, errOut)
				}
				// The phone's set has no CRLs: an accepted bundle says
				// revocation was not checked, the back end's does not.
				if noted := strings.Contains(out, "revocation not checked"); status == 0 && noted != (vec.Mode == trust.ModePhone) {
					t.Errorf("%s: revocation note %v in mode %s:\n%s", c.Name, noted, vec.Mode, out)
				}
			}
		})
	}
}
