package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// Vectors is the format of testdata/bundle/vectors.json (the back end's
// set) and vectors-phone.json (what a phone sees offline): a trust
// configuration (paths relative to the file), the moment to verify at, and
// cases with the verdict each must get; the back end's set also has trust
// cases, configurations that differ from the set's in a few keys. A second
// implementation of the protocol checks itself against them;
// docs/protocol.md §9 describes every key.
type Vectors struct {
	Description string `json:"description"`
	// Mode is ModeBackEnd or ModePhone. A phone verifies without CRLs, so
	// a phone set configures none (LoadVectors refuses one that does).
	Mode       string      `json:"mode"`
	Now        time.Time   `json:"now"`
	Trust      Config      `json:"trust"`
	Cases      []Case      `json:"cases"`
	TrustCases []TrustCase `json:"trust_cases,omitempty"`

	dir  string
	base []byte // the "trust" object as written, for trust cases
}

// Modes of a vector set.
const (
	ModeBackEnd = "back-end"
	ModePhone   = "phone"
)

// Case is one bundle and its expected verdict.
type Case struct {
	Name        string `json:"name"`
	Bundle      string `json:"bundle"`           // file, relative to vectors.json
	PhoneKeyHex string `json:"phone_public_key"` // Ed25519, hex
	Want        string `json:"want"`             // a protocol.Reason
}

// TrustCase is a trust configuration that differs from its set's in the
// keys its "trust" object has (each replaces the set's; the map "cas" is
// merged per card type), what loading it at the set's "now" must do —
// TrustAccepted or TrustRefused — and, when accepted, cases verified under
// it.
type TrustCase struct {
	Name  string          `json:"name"`
	Trust json.RawMessage `json:"trust"`
	Want  string          `json:"want"`
	Cases []Case          `json:"cases,omitempty"`
}

// Outcomes of loading a trust case.
const (
	TrustAccepted = "accepted"
	TrustRefused  = "refused"
)

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
	var raw struct {
		Trust json.RawMessage `json:"trust"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, protocol.Trust{}, fmt.Errorf("trust: %s: %w", path, err)
	}
	v.dir, v.base = filepath.Dir(path), raw.Trust
	switch v.Mode {
	case ModeBackEnd:
	case ModePhone:
		if len(v.Trust.CRLs) > 0 || len(v.TrustCases) > 0 {
			return nil, protocol.Trust{}, fmt.Errorf("trust: %s: a phone set configures no CRLs and no trust cases", path)
		}
	default:
		return nil, protocol.Trust{}, fmt.Errorf("trust: %s: mode %q; want %q or %q", path, v.Mode, ModeBackEnd, ModePhone)
	}
	for i := range v.Cases {
		v.Cases[i].Bundle = filepath.Join(v.dir, v.Cases[i].Bundle)
	}
	for i := range v.TrustCases {
		tc := &v.TrustCases[i]
		if tc.Want != TrustAccepted && tc.Want != TrustRefused {
			return nil, protocol.Trust{}, fmt.Errorf("trust: %s: trust case %s: want %q; want %q or %q", path, tc.Name, tc.Want, TrustAccepted, TrustRefused)
		}
		for j := range tc.Cases {
			tc.Cases[j].Bundle = filepath.Join(v.dir, tc.Cases[j].Bundle)
		}
	}
	t, err := v.Trust.relativeTo(v.dir).Load(v.Now)
	return &v, t, err
}

// LoadTrustCase loads the configuration of trust case tc of v at v.Now:
// the set's configuration with tc's keys in place of its own.
func (v *Vectors) LoadTrustCase(tc TrustCase) (protocol.Trust, error) {
	if v.base == nil {
		return protocol.Trust{}, errors.New("trust: vectors not read by LoadVectors")
	}
	var c Config
	// Unmarshalling the case's keys over the set's replaces exactly the
	// keys the case has.
	for _, b := range [][]byte{v.base, tc.Trust} {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			return protocol.Trust{}, fmt.Errorf("trust: trust case %s: %w", tc.Name, err)
		}
	}
	return c.relativeTo(v.dir).Load(v.Now)
}

// relativeTo returns c with its file names taken relative to dir.
func (c Config) relativeTo(dir string) Config {
	abs := func(files []string) []string {
		out := make([]string, len(files))
		for i, f := range files {
			out[i] = filepath.Join(dir, f)
		}
		return out
	}
	c.Roots, c.Intermediates, c.CRLs, c.AttestationKeys = abs(c.Roots), abs(c.Intermediates), abs(c.CRLs), abs(c.AttestationKeys)
	cas := make(map[string]string, len(c.CAs))
	for typ, f := range c.CAs {
		cas[typ] = filepath.Join(dir, f)
	}
	c.CAs = cas
	return c
}
