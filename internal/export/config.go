// Package export builds, signs, publishes and reads the key export in the
// GAEN format: the aggregator streams the last days' keys from the store
// into content-addressed, signed zip files in the origin's directory and
// then writes the index; Open is the strict reader phones, sites and tests
// verify those files with.
package export

import (
	"errors"
	"fmt"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
)

// Config is the aggregator's configuration.
type Config struct {
	// Dir is the origin's root: files go to Dir/exports/, the index to
	// Dir/index.txt.
	Dir    string        `env:"VOUCH_EXPORT_DIR"`
	Period time.Duration `env:"VOUCH_EXPORT_PERIOD, default=1h"`
	// MaxAgeDays is how many days of keys are published.
	MaxAgeDays int `env:"VOUCH_KEYS_MAX_AGE_DAYS, default=14"`
	MaxKeys    int `env:"VOUCH_EXPORT_MAX_KEYS, default=500000"`
	// MinKeys pads the export with fake keys up to this many, so its size
	// does not tell how many people were infected.
	MinKeys int `env:"VOUCH_EXPORT_MIN_KEYS, default=0"`
	// Region defaults to the trust jurisdiction.
	Region       string `env:"VOUCH_EXPORT_REGION"`
	Jurisdiction string `env:"VOUCH_JURISDICTION, default=NL"`
	// KeyURIs are the pkcs11: URIs of the signing keys: two during a
	// rotation, and every file carries a signature of each.
	KeyURIs []string `env:"VOUCH_EXPORT_KEY_URIS"`
	// KeyVersions and KeyIDs are the SignatureInfo of each key: one value
	// for all, or one per URI.
	KeyVersions []string `env:"VOUCH_EXPORT_KEY_VERSION, default=v1"`
	KeyIDs      []string `env:"VOUCH_EXPORT_KEY_ID"`
	HSMPIN      string   `env:"VOUCH_HSM_PIN"`
	// Grace is how long a file stays after it left the index: longer than
	// a phone takes between reading the index and fetching the files.
	Grace time.Duration `env:"VOUCH_EXPORT_GRACE, default=2h"`
	// Lease is how long one run may hold the right to publish; longer than
	// a run takes.
	Lease time.Duration `env:"VOUCH_EXPORT_LEASE, default=10m"`
}

// Validate checks c and fills the defaults that depend on other fields.
func (c *Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("VOUCH_EXPORT_DIR is not set"))
	}
	if c.Period <= 0 {
		errs = append(errs, errors.New("VOUCH_EXPORT_PERIOD must be positive"))
	}
	if c.MaxAgeDays == 0 {
		c.MaxAgeDays = exposure.DefaultMaxAgeDays
	}
	if c.MaxAgeDays < exposure.FloorMaxAgeDays {
		errs = append(errs, fmt.Errorf("VOUCH_KEYS_MAX_AGE_DAYS is at least %d", exposure.FloorMaxAgeDays))
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = 500000
	}
	if c.MaxKeys < 1 || c.MaxKeys > MaxKeysPerFile {
		errs = append(errs, fmt.Errorf("VOUCH_EXPORT_MAX_KEYS must be 1..%d", MaxKeysPerFile))
	}
	if c.MinKeys < 0 || c.MinKeys > 10*MaxKeysPerFile {
		errs = append(errs, errors.New("VOUCH_EXPORT_MIN_KEYS out of range"))
	}
	if c.Region == "" {
		c.Region = c.Jurisdiction
	}
	if c.Region == "" || len(c.Region) > 64 {
		errs = append(errs, errors.New("VOUCH_EXPORT_REGION must be 1..64 characters"))
	}
	if len(c.KeyURIs) == 0 {
		errs = append(errs, errors.New("VOUCH_EXPORT_KEY_URIS names no signing key"))
	}
	if len(c.KeyIDs) == 0 {
		c.KeyIDs = []string{c.Region}
	}
	for name, l := range map[string][]string{"VOUCH_EXPORT_KEY_VERSION": c.KeyVersions, "VOUCH_EXPORT_KEY_ID": c.KeyIDs} {
		if len(l) != 1 && len(l) != len(c.KeyURIs) {
			errs = append(errs, fmt.Errorf("%s: one value, or one per key URI", name))
		}
	}
	if c.Grace < 0 {
		errs = append(errs, errors.New("VOUCH_EXPORT_GRACE must not be negative"))
	}
	if c.Lease <= 0 {
		errs = append(errs, errors.New("VOUCH_EXPORT_LEASE must be positive"))
	}
	return errors.Join(errs...)
}

// KeyInfo is the version and id of the i-th key URI.
func (c *Config) KeyInfo(i int) (version, id string) {
	pick := func(l []string) string {
		if len(l) == 1 {
			return l[0]
		}
		return l[i]
	}
	return pick(c.KeyVersions), pick(c.KeyIDs)
}
