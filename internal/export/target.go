package export

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Target is an origin the aggregator publishes to besides its directory:
// an S3-compatible bucket behind a CDN (VOUCH_EXPORT_TARGET). The
// directory stays the aggregator's working copy: files are built and
// signed there, then uploaded.
type Target interface {
	// IndexVersion is the version (the ETag) of the published index as it
	// is now, "" when there is none. A run reads it before it builds;
	// Publish writes the index only over that version.
	IndexVersion(ctx context.Context) (string, error)
	// Publish uploads every file of files (paths relative to dir, content
	// addressed, so never overwritten) the target lacks, then, last, the
	// index: only over version, so that an index another aggregator wrote
	// meanwhile is never overwritten (ErrIndexChanged).
	Publish(ctx context.Context, dir string, files []string, index []byte, version string) error
	// Delete removes a file that left the index more than the grace
	// period ago; a file already gone is no error.
	Delete(ctx context.Context, rel string) error
	// String names the target for logs, without credentials.
	String() string
}

// ErrIndexChanged means the target's index was written by someone else
// after this run read its version: this run's index was not written.
var ErrIndexChanged = errors.New("export: the published index changed since this run read it (another aggregator published): not overwritten")

// OpenTarget is the target cfg (validated) names, nil when it names none.
func OpenTarget(cfg Config) (Target, error) {
	if cfg.Target == "" {
		return nil, nil
	}
	return newS3Target(cfg, nil, 0)
}

// The aggregator's hooks: each does nothing without a target.

// targetVersion reads the target's index version at the start of a run.
func (a *Aggregator) targetVersion(ctx context.Context) (string, error) {
	if a.target == nil {
		return "", nil
	}
	v, err := a.target.IndexVersion(ctx)
	if err != nil {
		return "", fmt.Errorf("export: %s: %w", a.target, err)
	}
	return v, nil
}

// CheckTarget reads the target's index version, for the readiness check
// of the operations listener; without a target it has nothing to check.
func (a *Aggregator) CheckTarget(ctx context.Context) error {
	_, err := a.targetVersion(ctx)
	return err
}

// publishTarget uploads the files the index names, then the index, over
// the version read at the start of the run.
func (a *Aggregator) publishTarget(ctx context.Context, version string, files []string, index []byte) error {
	if a.target == nil {
		return nil
	}
	if err := a.target.Publish(ctx, a.cfg.Dir, files, index, version); err != nil {
		return fmt.Errorf("export: %s: %w", a.target, err)
	}
	return nil
}

// deleteTarget deletes an expired file from the target before the
// directory and the database forget it, so that a failed deletion is
// tried again at the next run rather than leaving the object behind.
func (a *Aggregator) deleteTarget(ctx context.Context, rel string) error {
	if a.target == nil {
		return nil
	}
	if err := a.target.Delete(ctx, rel); err != nil {
		return fmt.Errorf("export: %s: delete %s: %w", a.target, rel, err)
	}
	return nil
}

// ParseTarget splits VOUCH_EXPORT_TARGET, s3://bucket[/prefix], into the
// bucket and the prefix (without slashes at either end; "" for none).
func ParseTarget(s string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return "", "", fmt.Errorf("VOUCH_EXPORT_TARGET %q: only s3://bucket/prefix is known", s)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if !validBucket(bucket) {
		return "", "", fmt.Errorf("VOUCH_EXPORT_TARGET %q: bucket %q is not a valid S3 bucket name (3..63 of a-z, 0-9, '.', '-')", s, bucket)
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" && !plainPath(prefix) {
		return "", "", fmt.Errorf("VOUCH_EXPORT_TARGET %q: the prefix must be segments of letters, digits, '.', '_', '-', none empty or starting with '.'", s)
	}
	return bucket, prefix, nil
}

// objectKey is where rel (a path relative to the origin's root) lies in
// the bucket: below the prefix, so that the prefix's URL serves the same
// tree as the directory origin.
func objectKey(prefix, rel string) string {
	if prefix == "" {
		return rel
	}
	return prefix + "/" + rel
}

// validBucket is S3's rule for new buckets, which every S3-compatible
// store accepts.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 63 {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	alnum := func(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
	return alnum(b[0]) && alnum(b[len(b)-1]) && !strings.Contains(b, "..")
}

// plainPath: the same plain names the directory origin serves (cdn's
// cleanName), so a phone reaches the bucket and the directory alike.
func plainPath(p string) bool {
	if len(p) > 256 {
		return false
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg[0] == '.' {
			return false
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validateTarget checks the target's settings and, when the bucket is the
// only origin (no VOUCH_EXPORT_DIR), gives the aggregator a working
// directory of its own that outlives restarts, so files are not rebuilt
// at every start.
func (c *Config) validateTarget() []error {
	if c.Target == "" {
		return nil
	}
	var errs []error
	bucket, prefix, err := ParseTarget(c.Target)
	if err != nil {
		errs = append(errs, err)
	}
	if c.S3Endpoint == "" {
		errs = append(errs, errors.New("VOUCH_EXPORT_S3_ENDPOINT is not set (such as https://s3.eu-central-1.amazonaws.com)"))
	} else if !strings.HasPrefix(c.S3Endpoint, "https://") && !strings.HasPrefix(c.S3Endpoint, "http://") {
		errs = append(errs, fmt.Errorf("VOUCH_EXPORT_S3_ENDPOINT %q: an http:// or https:// URL", c.S3Endpoint))
	}
	if strings.TrimSpace(c.S3AccessKey) == "" || strings.TrimSpace(c.S3SecretKey) == "" {
		errs = append(errs, errors.New("VOUCH_EXPORT_S3_ACCESS_KEY and VOUCH_EXPORT_S3_SECRET_KEY (or their _FILE) must give the bucket's credentials"))
	}
	if c.CacheMaxAge == 0 {
		c.CacheMaxAge = defaultCacheMaxAge
	}
	if c.CacheMaxAge < time.Second {
		errs = append(errs, errors.New("VOUCH_CDN_MAX_AGE must be at least a second"))
	}
	if c.Dir == "" && err == nil {
		base, cerr := os.UserCacheDir()
		if cerr != nil {
			errs = append(errs, fmt.Errorf("VOUCH_EXPORT_DIR is not set and there is no cache directory for the working copy: %w", cerr))
		} else {
			c.Dir = filepath.Join(base, "vouch", "export", bucket, filepath.FromSlash(prefix))
		}
	}
	return errs
}

// defaultCacheMaxAge is VOUCH_CDN_MAX_AGE's default: content-addressed
// files never change.
const defaultCacheMaxAge = 8760 * time.Hour
