package trust

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// Vectors is the format of testdata/bundle/vectors.json: a trust
// configuration (paths relative to the file), the moment to verify at, and
// cases with the verdict each must get. A second implementation of the
// protocol checks itself against it.
type Vectors struct {
	Description string    `json:"description"`
	Now         time.Time `json:"now"`
	Trust       Config    `json:"trust"`
	Cases       []Case    `json:"cases"`
}

// Case is one bundle and its expected verdict.
type Case struct {
	Name        string `json:"name"`
	Bundle      string `json:"bundle"`           // file, relative to vectors.json
	PhoneKeyHex string `json:"phone_public_key"` // Ed25519, hex
	Want        string `json:"want"`             // a protocol.Reason
}

// LoadVectors reads a vectors file and loads its trust at its "now". Case
// file names come back made absolute.
func LoadVectors(path string) (*Vectors, protocol.Trust, error) {
	b, err := readFile(path, maxPEMFile)
	if err != nil {
		return nil, protocol.Trust{}, err
	}
	var v Vectors
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, protocol.Trust{}, fmt.Errorf("trust: %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	abs := func(files []string) []string {
		out := make([]string, len(files))
		for i, f := range files {
			out[i] = filepath.Join(dir, f)
		}
		return out
	}
	c := v.Trust
	c.Roots, c.Intermediates, c.CRLs, c.AttestationKeys = abs(c.Roots), abs(c.Intermediates), abs(c.CRLs), abs(c.AttestationKeys)
	cas := make(map[string]string, len(c.CAs))
	for typ, f := range c.CAs {
		cas[typ] = filepath.Join(dir, f)
	}
	c.CAs = cas
	for i := range v.Cases {
		v.Cases[i].Bundle = filepath.Join(dir, v.Cases[i].Bundle)
	}
	t, err := c.Load(v.Now)
	return &v, t, err
}
