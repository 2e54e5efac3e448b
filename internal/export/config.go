// Package export builds, signs, publishes and reads the key export in the
// GAEN format: the aggregator streams the last days' keys from the store
// into content-addressed, signed zip files in the origin's directory and
// then writes the index; Open is the strict reader phones, sites and tests
// verify those files with.
package export

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/lease"
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
	// MinKeys pads each file with fake keys up to this many, so its size
	// does not tell how many people were infected.
	MinKeys int `env:"VOUCH_EXPORT_MIN_KEYS, default=0"`
	// Embargo is how long after its rolling period ended a key is
	// published at the earliest: Apple's key server rules ask for 2 hours,
	// so that a key cannot be replayed while a phone may still accept it.
	Embargo time.Duration `env:"VOUCH_EXPORT_EMBARGO, default=2h"`
	// MinFree is the space the export directory must have left after a
	// file is written; a run that would go below it fails before writing.
	MinFree int64 `env:"VOUCH_EXPORT_MIN_FREE, default=1048576"`
	// Region defaults to the trust jurisdiction.
	Region       string `env:"VOUCH_EXPORT_REGION"`
	Jurisdiction string `env:"VOUCH_JURISDICTION, default=NL"`
	// KeyURIs are the pkcs11: URIs of the signing keys: two during a
	// rotation, and every file carries a signature of each.
	KeyURIs []string `env:"VOUCH_EXPORT_KEY_URIS"`
	// KeyVersions and KeyIDs are the SignatureInfo of each key: one value
	// for all, or one per URI. An id is the jurisdiction's mobile country
	// code (MCC), as Apple and Google ask, optionally followed by a suffix;
	// unset, it is the MCC of VOUCH_JURISDICTION.
	KeyVersions []string `env:"VOUCH_EXPORT_KEY_VERSION, default=v1"`
	KeyIDs      []string `env:"VOUCH_EXPORT_KEY_ID"`
	HSMPIN      string   `env:"VOUCH_HSM_PIN"`
	// Grace is how long a file stays after it left the index: longer than
	// a phone takes between reading the index and fetching the files.
	Grace time.Duration `env:"VOUCH_EXPORT_GRACE, default=2h"`
	// Lease is the publication lease's time to live (internal/lease): the
	// holder renews it every third of it, a standby tries to take it as
	// often, so a holder killed with -9 costs at most Lease and a third
	// before another copy publishes. It need not cover a run (the
	// heartbeat does); it must cover the longest pause of the database's
	// answers to a renewal, or a holder loses the lease to a slow
	// database. Its transactions end when idle for as long (a frozen
	// holder's locks do not outlive it).
	Lease time.Duration `env:"VOUCH_EXPORT_LEASE, default=30s"`

	// Target is a second origin the export is published to, an
	// S3-compatible bucket: s3://bucket/prefix (target.go). Dir is then
	// the working copy, by default in the user's cache directory.
	Target     string `env:"VOUCH_EXPORT_TARGET"`
	S3Endpoint string `env:"VOUCH_EXPORT_S3_ENDPOINT"`
	// S3Region is the bucket's region (for SigV4), not the export's.
	S3Region string `env:"VOUCH_EXPORT_S3_REGION, default=us-east-1"`
	// S3AccessKey and S3SecretKey are the bucket's credentials: give them
	// as files (VOUCH_EXPORT_S3_ACCESS_KEY_FILE, ..._SECRET_KEY_FILE).
	S3AccessKey string `env:"VOUCH_EXPORT_S3_ACCESS_KEY"`
	S3SecretKey string `env:"VOUCH_EXPORT_S3_SECRET_KEY"`
	// S3CAFile, when set, is the only CA trusted for an https endpoint.
	S3CAFile string `env:"VOUCH_EXPORT_S3_CA_FILE"`
	// CacheMaxAge is how long caches keep a content-addressed object: the
	// origin's (cdn) setting, so both origins send the same Cache-Control.
	CacheMaxAge time.Duration `env:"VOUCH_CDN_MAX_AGE, default=8760h"`
}

// Validate checks c and fills the defaults that depend on other fields.
func (c *Config) Validate() error {
	errs := c.validateTarget()
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
	if c.MinKeys < 0 || c.MinKeys > c.MaxKeys {
		errs = append(errs, errors.New("VOUCH_EXPORT_MIN_KEYS must be 0..VOUCH_EXPORT_MAX_KEYS: it pads each file"))
	}
	if c.Embargo == 0 {
		c.Embargo = MinEmbargo
	}
	if c.Embargo < MinEmbargo {
		errs = append(errs, fmt.Errorf("VOUCH_EXPORT_EMBARGO must be at least %s", MinEmbargo))
	}
	if c.MinFree < 0 {
		errs = append(errs, errors.New("VOUCH_EXPORT_MIN_FREE must not be negative"))
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
		j := c.Jurisdiction
		if j == "" {
			j = c.Region
		}
		if mcc, ok := mccs[j]; ok {
			c.KeyIDs = []string{mcc}
		} else {
			errs = append(errs, fmt.Errorf("VOUCH_EXPORT_KEY_ID is not set and jurisdiction %q has no known mobile country code: set it", j))
		}
	}
	for _, id := range c.KeyIDs {
		if err := ValidKeyID(id); err != nil {
			errs = append(errs, err)
		}
	}
	for _, v := range c.KeyVersions {
		if !keyVersionRE.MatchString(v) {
			errs = append(errs, fmt.Errorf("VOUCH_EXPORT_KEY_VERSION %q: 1..32 of a-z, A-Z, 0-9, _", v))
		}
	}
	for name, l := range map[string][]string{"VOUCH_EXPORT_KEY_VERSION": c.KeyVersions, "VOUCH_EXPORT_KEY_ID": c.KeyIDs} {
		if len(l) > 1 && len(l) != len(c.KeyURIs) {
			errs = append(errs, fmt.Errorf("%s: one value, or one per key URI", name))
		}
	}
	if c.Grace < 0 {
		errs = append(errs, errors.New("VOUCH_EXPORT_GRACE must not be negative"))
	}
	if c.Lease < lease.MinTTL {
		errs = append(errs, fmt.Errorf("VOUCH_EXPORT_LEASE must be at least %s", lease.MinTTL))
	}
	return errors.Join(errs...)
}

// MinEmbargo is the least time between a key's end and its publication.
const MinEmbargo = 2 * time.Hour

// mccs are the mobile country codes of the jurisdictions a key id
// defaults for (ITU-T E.212).
var mccs = map[string]string{"NL": "204", "BE": "206", "DE": "262", "FR": "208", "LU": "270", "AW": "363", "CW": "362", "SX": "362", "BQ": "362"}

var (
	// keyIDRE: a three-digit MCC (2xx..7xx), then a suffix of the
	// characters the export format allows, such as "204" or "204_v2".
	keyIDRE      = regexp.MustCompile(`^[2-7][0-9]{2}[A-Za-z0-9_.]{0,29}$`)
	keyVersionRE = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)
)

// ValidKeyID checks a signature_info.verification_key_id: alphanumerics,
// '_' and '.', starting with the mobile country code (export.proto: "For
// cross-compatibility with Apple, use MCC").
func ValidKeyID(id string) error {
	if !keyIDRE.MatchString(id) {
		return fmt.Errorf("VOUCH_EXPORT_KEY_ID %q: a mobile country code (such as 204), optionally followed by letters, digits, '_' or '.' (at most 32 characters)", id)
	}
	return nil
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
