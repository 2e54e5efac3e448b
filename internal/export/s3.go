package export

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Content types and Cache-Control of the objects: the same the directory
// origin (internal/cdn) sends for the same files, so a CDN in front of
// either caches alike. Content-addressed files never change; the index
// changes in place and must be revalidated at every use.
const (
	zipContentType   = "application/zip"
	indexContentType = "text/plain; charset=utf-8"
	indexCacheCtl    = "no-cache"
)

// immutableCacheControl is the Cache-Control of a content-addressed file.
func immutableCacheControl(maxAge time.Duration) string {
	return "public, max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10) + ", immutable"
}

// s3Target publishes to an S3-compatible bucket through minio-go, with
// conditional writes: If-None-Match: * for every new object (a file is
// never overwritten), If-Match with the ETag read at the start of the run
// for the index (two aggregators never overwrite each other's).
type s3Target struct {
	c        *minio.Client
	bucket   string
	prefix   string
	endpoint string
	maxAge   time.Duration
	// conditional is set once the store has shown it refuses conditional
	// writes that fail (checkConditional).
	conditional atomic.Bool
}

// newS3Target makes the target of cfg (validated); rt, when set (tests),
// carries its requests, and retries, when positive (tests), bounds the
// client's retries of a failed request.
func newS3Target(cfg Config, rt http.RoundTripper, retries int) (*s3Target, error) {
	c, bucket, prefix, err := s3Client(cfg, rt, retries)
	if err != nil {
		return nil, err
	}
	maxAge := cfg.CacheMaxAge
	if maxAge <= 0 {
		maxAge = defaultCacheMaxAge
	}
	u, _ := url.Parse(cfg.S3Endpoint)
	return &s3Target{c: c, bucket: bucket, prefix: prefix, endpoint: u.Scheme + "://" + u.Host, maxAge: maxAge}, nil
}

// NewS3Client is a client of the bucket cfg's target names
// (VOUCH_EXPORT_TARGET and its VOUCH_EXPORT_S3_* settings), with the
// bucket and the exports' prefix: the transparency log is mirrored there
// too, beside the exports.
func NewS3Client(cfg Config) (c *minio.Client, bucket, prefix string, err error) {
	return s3Client(cfg, nil, 0)
}

func s3Client(cfg Config, rt http.RoundTripper, retries int) (*minio.Client, string, string, error) {
	bucket, prefix, err := ParseTarget(cfg.Target)
	if err != nil {
		return nil, "", "", err
	}
	u, err := url.Parse(cfg.S3Endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || strings.Trim(u.Path, "/") != "" {
		return nil, "", "", fmt.Errorf("VOUCH_EXPORT_S3_ENDPOINT %q: an http:// or https:// URL of a host, without a path", cfg.S3Endpoint)
	}
	access, secret := strings.TrimSpace(cfg.S3AccessKey), strings.TrimSpace(cfg.S3SecretKey)
	if access == "" || secret == "" {
		return nil, "", "", errors.New("VOUCH_EXPORT_S3_ACCESS_KEY and VOUCH_EXPORT_S3_SECRET_KEY (or their _FILE) must give the bucket's credentials")
	}
	secure := u.Scheme == "https"
	if rt == nil {
		tr, err := minio.DefaultTransport(secure)
		if err != nil {
			return nil, "", "", fmt.Errorf("export: s3 transport: %w", err)
		}
		if cfg.S3CAFile != "" {
			pem, err := os.ReadFile(cfg.S3CAFile)
			if err != nil {
				return nil, "", "", fmt.Errorf("VOUCH_EXPORT_S3_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, "", "", fmt.Errorf("VOUCH_EXPORT_S3_CA_FILE %s: no PEM certificate", cfg.S3CAFile)
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		rt = tr
	}
	region := cfg.S3Region
	if region == "" {
		region = "us-east-1"
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:     credentials.NewStaticV4(access, secret, ""),
		Secure:    secure,
		Region:    region,
		Transport: rt,
		// Path-style for every endpoint but AWS's and the like, which is
		// what S3-compatible stores on a plain host name answer.
		BucketLookup: minio.BucketLookupAuto,
		MaxRetries:   retries,
	})
	if err != nil {
		return nil, "", "", fmt.Errorf("export: s3 client: %w", err)
	}
	return c, bucket, prefix, nil
}

func (s *s3Target) String() string {
	return "s3://" + s.bucket + "/" + s.prefix + " at " + s.endpoint
}

func (s *s3Target) IndexVersion(ctx context.Context) (string, error) {
	if err := s.checkConditional(ctx); err != nil {
		return "", err
	}
	info, err := s.c.StatObject(ctx, s.bucket, objectKey(s.prefix, IndexName), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("read the index's version: %w", err)
	}
	if info.ETag == "" {
		return "", errors.New("read the index's version: the store sent no ETag")
	}
	return info.ETag, nil
}

func (s *s3Target) Publish(ctx context.Context, dir string, files []string, index []byte, version string) error {
	have, err := s.existing(ctx)
	if err != nil {
		return err
	}
	for _, rel := range files {
		if have[objectKey(s.prefix, rel)] {
			continue
		}
		if err := s.putFile(ctx, dir, rel); err != nil {
			return err
		}
	}
	opts := minio.PutObjectOptions{ContentType: indexContentType, CacheControl: indexCacheCtl,
		DisableMultipart: true, SendContentMd5: true}
	if version == "" {
		opts.SetMatchETagExcept("*") // none was there: none may have appeared
	} else {
		opts.SetMatchETag(version)
	}
	_, err = s.c.PutObject(ctx, s.bucket, objectKey(s.prefix, IndexName), bytes.NewReader(index), int64(len(index)), opts)
	if isPreconditionFailed(err) {
		// Also when a retry follows this run's own write whose answer was
		// lost: the run fails, and the next starts from that index.
		return ErrIndexChanged
	}
	if err != nil {
		return fmt.Errorf("write the index: %w", err)
	}
	return nil
}

// conditionalProbe is the object checkConditional writes, beside the
// index; no phone asks for it.
const conditionalProbe = "conditional-write-check.txt"

// checkConditional shows, once per process before the first publication,
// that the store refuses a PUT with If-None-Match: * over an existing
// object and one with an If-Match that does not match. A store that
// ignores them (some S3-compatible ones do, silently) would let two
// aggregators overwrite each other's index: publishing there is refused.
func (s *s3Target) checkConditional(ctx context.Context) error {
	if s.conditional.Load() {
		return nil
	}
	key := objectKey(s.prefix, conditionalProbe)
	put := func(set func(*minio.PutObjectOptions)) error {
		const body = "vouch: this store refuses failed conditional writes\n"
		opts := minio.PutObjectOptions{ContentType: indexContentType, CacheControl: "no-store", DisableMultipart: true}
		set(&opts)
		_, err := s.c.PutObject(ctx, s.bucket, key, strings.NewReader(body), int64(len(body)), opts)
		return err
	}
	noneMatch := func(o *minio.PutObjectOptions) { o.SetMatchETagExcept("*") }
	if err := put(noneMatch); err != nil && !isPreconditionFailed(err) {
		return fmt.Errorf("check conditional writes: %w", err)
	}
	for _, c := range []struct {
		header string
		set    func(*minio.PutObjectOptions)
	}{
		{"If-None-Match: * over an existing object", noneMatch},
		{"If-Match with an ETag that does not match", func(o *minio.PutObjectOptions) { o.SetMatchETag("vouch-no-such-etag") }},
	} {
		if perr := put(c.set); perr == nil {
			return fmt.Errorf("%w: a PUT with %s succeeded", ErrNoConditionalWrites, c.header)
		} else if !isPreconditionFailed(perr) {
			return fmt.Errorf("check conditional writes (%s): %w", c.header, perr)
		}
	}
	s.conditional.Store(true)
	return nil
}

// ErrNoConditionalWrites means the store ignores If-None-Match or
// If-Match on PUT: it cannot keep two aggregators from overwriting each
// other's index, and the aggregator does not publish there.
var ErrNoConditionalWrites = errors.New("the store ignores conditional writes; use one that refuses them with 412 (AWS S3, versitygw, SeaweedFS, recent MinIO or Ceph)")

// existing is the set of object keys below the exports prefix: one
// listing per run rather than a request per file.
func (s *s3Target) existing(ctx context.Context) (map[string]bool, error) {
	have := map[string]bool{}
	for obj := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: objectKey(s.prefix, ExportsDir+"/"), Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", ExportsDir, obj.Err)
		}
		have[obj.Key] = true
	}
	return have, nil
}

// putFile uploads one content-addressed file in one PUT (an object
// appears whole or not at all), with its MD5 so that the store refuses a
// body damaged on the way, and only if no object has that key: one that
// appeared meanwhile came from another aggregator with the same name, so
// the same keys, and is kept.
func (s *s3Target) putFile(ctx context.Context, dir, rel string) error {
	if !strings.HasPrefix(rel, ExportsDir+"/") || path.Ext(rel) != ".zip" || !plainPath(rel) {
		return fmt.Errorf("upload %q: not a file of %s/", rel, ExportsDir)
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	opts := minio.PutObjectOptions{ContentType: zipContentType, CacheControl: immutableCacheControl(s.maxAge),
		DisableMultipart: true, SendContentMd5: true}
	opts.SetMatchETagExcept("*")
	if _, err := s.c.PutObject(ctx, s.bucket, objectKey(s.prefix, rel), f, fi.Size(), opts); err != nil && !isPreconditionFailed(err) {
		return fmt.Errorf("upload %s: %w", rel, err)
	}
	return nil
}

func (s *s3Target) Delete(ctx context.Context, rel string) error {
	if !strings.HasPrefix(rel, ExportsDir+"/") || !plainPath(rel) {
		return fmt.Errorf("%q is not a file of %s/", rel, ExportsDir)
	}
	if err := s.c.RemoveObject(ctx, s.bucket, objectKey(s.prefix, rel), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

func isPreconditionFailed(err error) bool {
	if err == nil {
		return false
	}
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

func isNotFound(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey"
}
