package transparency

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/minio/minio-go/v7"
	flog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/sync/errgroup"
)

// S3Mirror copies the log the writer publishes in its directory into an
// S3-compatible bucket, where the exports go: below the exports' prefix,
// at log/, the same paths the directory origin serves. The tiles and entry
// bundles a checkpoint's tree needs go first, each written once and never
// overwritten (If-None-Match: *), then the checkpoint, last, so that a
// reader of the bucket never sees a checkpoint whose tiles are missing.
// The Cache-Control is the origin's: tiles immutable, the checkpoint
// no-cache.
type S3Mirror struct {
	c      *minio.Client
	bucket string
	prefix string // the log's key prefix, ending in "/"
	tiles  string // Cache-Control of a tile

	// last is the checkpoint last written or found newer in the bucket:
	// while the directory's is the same, there is nothing to do.
	last []byte
}

// Content type and Cache-Control of the log's objects: the directory
// origin's (internal/cdn) for the same files.
const (
	logContentType     = "application/octet-stream"
	checkpointCacheCtl = "no-cache"
)

// NewS3Mirror mirrors into bucket below exportsPrefix (the exports'
// prefix, "" for the bucket's root) + "/log/"; maxAge is how long caches
// keep a tile (the origin's VOUCH_CDN_MAX_AGE).
func NewS3Mirror(c *minio.Client, bucket, exportsPrefix string, maxAge time.Duration) *S3Mirror {
	p := "log/"
	if exportsPrefix != "" {
		p = exportsPrefix + "/log/"
	}
	return &S3Mirror{c: c, bucket: bucket, prefix: p,
		tiles: "public, max-age=" + strconv.FormatInt(int64(maxAge/time.Second), 10) + ", immutable"}
}

// Prefix is the key prefix the log is mirrored under ("…/log/").
func (m *S3Mirror) Prefix() string { return m.prefix }

// Sync mirrors the checkpoint published in dir: the files of its tree the
// bucket lacks, then the checkpoint, written only over the one it read
// (If-Match), and only over a smaller tree: a writer that lost its lease
// never rolls the bucket's log back.
func (m *S3Mirror) Sync(ctx context.Context, dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, layout.CheckpointPath))
	if err != nil {
		return fmt.Errorf("transparency: mirror: %w", err)
	}
	if bytes.Equal(raw, m.last) {
		return nil
	}
	size, err := checkpointSize(raw)
	if err != nil {
		return fmt.Errorf("transparency: mirror: the published checkpoint: %w", err)
	}
	remote, etag, err := m.get(ctx, layout.CheckpointPath)
	if err != nil {
		return err
	}
	from := uint64(0)
	if remote != nil {
		rsize, err := checkpointSize(remote)
		if err != nil {
			return fmt.Errorf("transparency: mirror: the bucket's checkpoint: %w", err)
		}
		if ro, _, _ := bytes.Cut(remote, []byte("\n")); !bytes.Equal(ro, bytes.SplitN(raw, []byte("\n"), 2)[0]) {
			// Another log's (a prefix shared by mistake): neither
			// overwritten nor taken for this log's progress.
			return fmt.Errorf("transparency: mirror: the bucket's %s holds the checkpoint of another origin, %q", m.prefix, ro)
		}
		if rsize > size || bytes.Equal(remote, raw) {
			// Newer, or this one: nothing to write (a writer with a
			// smaller tree lost its lease; the next checkpoint is larger).
			m.last = raw
			return nil
		}
		from = rsize
	}
	if err := m.putTiles(ctx, dir, from, size); err != nil {
		return err
	}
	opts := minio.PutObjectOptions{ContentType: logContentType, CacheControl: checkpointCacheCtl,
		DisableMultipart: true, SendContentMd5: true}
	if remote == nil {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(etag)
	}
	if _, err := m.c.PutObject(ctx, m.bucket, m.prefix+layout.CheckpointPath, bytes.NewReader(raw), int64(len(raw)), opts); err != nil {
		return fmt.Errorf("transparency: mirror: write the checkpoint of %d leaves: %w", size, err)
	}
	m.last = raw
	return nil
}

// Files lists, relative to the log's root, the tiles and entry bundles a
// tree of size needs that a tree of size from did not (all of them when
// from is 0): at every level the tiles from the one from's edge is in,
// the last one partial when the level's width is not a multiple of 256.
func Files(from, size uint64) []string {
	var out []string
	if size == 0 {
		return nil
	}
	for i := from / layout.EntryBundleWidth; i <= (size-1)/layout.EntryBundleWidth; i++ {
		out = append(out, layout.EntriesPath(i, layout.PartialTileSize(0, i, size)))
	}
	for level := uint64(0); ; level++ {
		width := size >> (level * layout.TileHeight)
		if width == 0 {
			break
		}
		start := (from >> (level * layout.TileHeight)) / layout.TileWidth
		for i := start; i <= (width-1)/layout.TileWidth; i++ {
			out = append(out, layout.TilePath(level, i, layout.PartialTileSize(level, i, size)))
		}
	}
	return out
}

// putTiles uploads the files of Files(from, size), a few at a time; one
// already there is kept (immutable: never written twice).
func (m *S3Mirror) putTiles(ctx context.Context, dir string, from, size uint64) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, rel := range Files(from, size) {
		g.Go(func() error {
			b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
			if err != nil {
				// A partial tile the writer replaced meanwhile (a newer
				// checkpoint is out): the next Sync mirrors that one.
				return fmt.Errorf("transparency: mirror: %w", err)
			}
			opts := minio.PutObjectOptions{ContentType: logContentType, CacheControl: m.tiles,
				DisableMultipart: true, SendContentMd5: true}
			opts.SetMatchETagExcept("*")
			_, err = m.c.PutObject(gctx, m.bucket, m.prefix+rel, bytes.NewReader(b), int64(len(b)), opts)
			if err != nil && !preconditionFailed(err) {
				return fmt.Errorf("transparency: mirror: upload %s: %w", rel, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// get reads an object of the log and its ETag; nil when there is none.
func (m *S3Mirror) get(ctx context.Context, rel string) ([]byte, string, error) {
	o, err := m.c.GetObject(ctx, m.bucket, m.prefix+rel, minio.GetObjectOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("transparency: mirror: read %s: %w", rel, err)
	}
	defer o.Close()
	b, err := io.ReadAll(io.LimitReader(o, 1<<16))
	if err != nil {
		if r := minio.ToErrorResponse(err); r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey" {
			return nil, "", nil
		}
		return nil, "", fmt.Errorf("transparency: mirror: read %s: %w", rel, err)
	}
	st, err := o.Stat()
	if err != nil {
		return nil, "", fmt.Errorf("transparency: mirror: read %s: %w", rel, err)
	}
	if st.ETag == "" {
		return nil, "", errors.New("transparency: mirror: the store sent no ETag")
	}
	return b, st.ETag, nil
}

func preconditionFailed(err error) bool {
	r := minio.ToErrorResponse(err)
	return r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed"
}

// checkpointSize reads the tree size of a checkpoint the writer wrote,
// without its signatures (the mirror copies only the writer's own
// checkpoints; readers verify them).
func checkpointSize(raw []byte) (uint64, error) {
	i := bytes.LastIndex(raw, []byte("\n\n"))
	if i < 0 {
		return 0, errors.New("not a signed note")
	}
	var cp flog.Checkpoint
	if _, err := cp.Unmarshal(raw[:i+1]); err != nil {
		return 0, err
	}
	// One spelling of a size (the parser takes "007" too): what is not
	// the writer's own is not read as a size.
	if lines := bytes.SplitN(raw, []byte("\n"), 3); len(lines) < 3 || string(lines[1]) != strconv.FormatUint(cp.Size, 10) {
		return 0, errors.New("the size is not in its one decimal spelling")
	}
	return cp.Size, nil
}
