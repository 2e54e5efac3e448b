package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/trust"
)

// exportOpener verifies one export file (the GAEN zip) against the trusted
// export keys and returns its keys. openExport (export.go) is the real one.
type exportOpener func(zip []byte, trusted []*ecdsa.PublicKey) ([]exposure.Key, error)

// Bounds on what the origin may send: the index lists a few files; an
// export holds at most 750,000 keys of well under 64 bytes each.
const (
	maxIndex  = 1 << 20
	maxExport = 64 << 20
)

// fetchedFile, in the state directory, lists the files already fetched
// and verified, one a line.
const fetchedFile = "fetched.txt"

// runSync fetches the index, then each file not fetched before, verifies
// it, and reports the published keys that match the keys in -seen.
func runSync(ctx context.Context, args []string, stdout io.Writer) error {
	fset := newFlagSet("sync", stdout)
	origin := fset.String("cdn", "http://127.0.0.1:8082", "the origin's (or CDN's) base URL")
	exportKeys := fset.String("export-key", "", "PEM public key(s) of the export signer, comma-separated")
	seen := fset.String("seen", "", "keys file of the keys this phone observed")
	state := fset.String("state", "phone-state", "directory remembering the files already fetched")
	timeout := fset.Duration("timeout", 5*time.Minute, "give up after this long")
	lf := addLogFlags(fset, "default <-cdn>/log/")
	if err := fset.Parse(args); err != nil {
		return err
	}
	pl, err := lf.open(*state, strings.TrimRight(*origin, "/")+"/log/")
	if err != nil {
		return err
	}
	if *exportKeys == "" && pl == nil {
		return errors.New("sync verifies every file: give the export signer's public key (-export-key)")
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *exportKeys == "" {
		return pl.check(ctx, stdout)
	}
	var trusted []*ecdsa.PublicKey
	for f := range strings.SplitSeq(*exportKeys, ",") {
		k, err := trust.ReadECPublicKey(f)
		if err != nil {
			return err
		}
		trusted = append(trusted, k)
	}
	var observed []exposure.Key
	if *seen != "" {
		var err error
		if observed, err = readKeys(*seen); err != nil {
			return err
		}
	}
	s := &syncer{http: &http.Client{Timeout: 2 * time.Minute}, base: strings.TrimRight(*origin, "/"), trusted: trusted, open: openExport, state: *state}
	res, err := s.run(ctx, stdout)
	if err != nil {
		return err
	}
	matches := match(res.published, observed)
	for _, k := range matches {
		fmt.Fprintf(stdout, "match   %s  day %s\n", hex.EncodeToString(k.Data[:]), k.Start().Format(time.DateOnly))
	}
	fmt.Fprintf(stdout, "synced  %d files listed, %d new, %d keys new, %d matches\n", res.listed, res.fetched, len(res.published), len(matches))
	if pl == nil {
		return nil
	}
	return pl.check(ctx, stdout)
}

type syncer struct {
	http    *http.Client
	base    string
	trusted []*ecdsa.PublicKey
	open    exportOpener
	state   string
}

type syncResult struct {
	listed, fetched int
	published       []exposure.Key // keys of the files fetched now
}

func (s *syncer) run(ctx context.Context, log io.Writer) (syncResult, error) {
	var res syncResult
	if err := os.MkdirAll(s.state, 0o700); err != nil {
		return res, err
	}
	done, err := readFetched(filepath.Join(s.state, fetchedFile))
	if err != nil {
		return res, err
	}
	idx, err := s.get(ctx, "index.txt", maxIndex)
	if err != nil {
		return res, err
	}
	names, err := parseIndex(idx)
	if err != nil {
		return res, err
	}
	res.listed = len(names)
	var failed []string
	for _, name := range names {
		if done[name] {
			continue
		}
		zip, err := s.get(ctx, name, maxExport)
		if err != nil {
			return res, err
		}
		keys, err := s.open(zip, s.trusted)
		if err != nil {
			// Never used, never remembered: the next sync tries it again.
			fmt.Fprintf(log, "REFUSED %s: %v\n", name, err)
			failed = append(failed, name)
			continue
		}
		if err := appendFetched(filepath.Join(s.state, fetchedFile), name); err != nil {
			return res, err
		}
		done[name] = true
		res.fetched++
		res.published = append(res.published, keys...)
		fmt.Fprintf(log, "fetched %s: %d keys\n", name, len(keys))
	}
	if len(failed) > 0 {
		return res, fmt.Errorf("%d files did not verify: %s", len(failed), strings.Join(failed, ", "))
	}
	return res, nil
}

func (s *syncer) get(ctx context.Context, name string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/"+name, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("origin: %s: HTTP %d", name, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("origin: %s: %w", name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("origin: %s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// parseIndex reads the index: one file name a line, relative to the
// origin's root. The origin is not trusted either: a name must be plain.
func parseIndex(b []byte) ([]string, error) {
	var names []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := strings.Fields(line)[0]
		if !plainName(name) {
			return nil, fmt.Errorf("origin: index lists %q, not a plain file name", name)
		}
		names = append(names, name)
	}
	return names, sc.Err()
}

func plainName(name string) bool {
	if name == "" || len(name) > 512 {
		return false
	}
	for seg := range strings.SplitSeq(name, "/") {
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

func readFetched(file string) (map[string]bool, error) {
	done := map[string]bool{}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return done, nil
	}
	if err != nil {
		return nil, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" {
			done[line] = true
		}
	}
	return done, nil
}

func appendFetched(file, name string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(f, name); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// match is the published keys whose data is among the observed ones. A
// real phone matches the rolling proximity identifiers it heard; this
// reference phone is told the keys themselves.
func match(published, observed []exposure.Key) []exposure.Key {
	seen := make(map[[exposure.KeySize]byte]bool, len(observed))
	for _, k := range observed {
		seen[k.Data] = true
	}
	var out []exposure.Key
	for _, k := range published {
		if seen[k.Data] {
			out = append(out, k)
			seen[k.Data] = false // once, even if two files hold it
		}
	}
	return out
}
