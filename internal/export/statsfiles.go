package export

import (
	"bytes"
	"context"
	"fmt"
	"path"

	"github.com/minio/minio-go/v7"
)

// PutPublicFile writes one small file that changes in place (the public
// statistics, stats.json and stats.csv) to the root of t, beside the
// index: in one PUT, revalidated at every use like the index. Only a
// plain name of the root is accepted.
func PutPublicFile(ctx context.Context, t Target, name string, body []byte, contentType string) error {
	s, ok := t.(*s3Target)
	if !ok {
		return fmt.Errorf("export: %s: public files go to an S3 target only", t)
	}
	if name == IndexName || path.Base(name) != name || !plainPath(name) {
		return fmt.Errorf("export: %q is not a plain file name of the origin's root", name)
	}
	opts := minio.PutObjectOptions{ContentType: contentType, CacheControl: indexCacheCtl, DisableMultipart: true, SendContentMd5: true}
	if _, err := s.c.PutObject(ctx, s.bucket, objectKey(s.prefix, name), bytes.NewReader(body), int64(len(body)), opts); err != nil {
		return fmt.Errorf("export: %s: upload %s: %w", s, name, err)
	}
	return nil
}
