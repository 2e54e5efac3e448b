package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneclient"
	"github.com/vouch-nl/vouch/internal/phonecode"
	"github.com/vouch-nl/vouch/internal/trust"
)

// runSimulate runs N phones at once: each registers, polls pickup until
// someone vouches for its code (the codes go to -codes, for `vouch bundle
// issue -publish -codes`), and uploads its keys.
func runSimulate(ctx context.Context, args []string, stdout io.Writer) error {
	fset := newFlagSet("simulate", stdout)
	n := fset.Int("n", 10, "how many phones")
	api := fset.String("api", "http://127.0.0.1:8081", "the phone API's base URL")
	codesFile := fset.String("codes", "codes.txt", "write the phones' codes here, one a line")
	keysOut := fset.String("keys-out", "", "write every uploaded key here (a keys file, for sync -seen)")
	perPhone := fset.Int("keys", 14, "keys each phone uploads")
	conc := fset.Int("concurrency", 64, "phones active at once")
	timeout := fset.Duration("timeout", 10*time.Minute, "give up after this long")
	poll := fset.Duration("poll", 500*time.Millisecond, "first wait between pickup polls")
	pollMax := fset.Duration("poll-max", 5*time.Second, "longest wait between pickup polls")
	origin := fset.String("cdn", "", "after the uploads, sync from this origin until every uploaded key is published (needs -export-key)")
	exportKeys := fset.String("export-key", "", "PEM public key(s) of the export signer, comma-separated (with -cdn)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	var trusted []*ecdsa.PublicKey
	if *origin != "" {
		if *exportKeys == "" {
			return errors.New("-cdn verifies the exports: give -export-key")
		}
		for f := range strings.SplitSeq(*exportKeys, ",") {
			k, err := trust.ReadECPublicKey(f)
			if err != nil {
				return err
			}
			trusted = append(trusted, k)
		}
	}
	if *n < 1 || *conc < 1 || *perPhone < 1 || *perPhone > exposure.MaxKeysPerUpload {
		return fmt.Errorf("need -n >= 1, -concurrency >= 1, -keys 1..%d", exposure.MaxKeysPerUpload)
	}
	phones := make([]ed25519.PrivateKey, *n)
	var codes strings.Builder
	for i := range phones {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		phones[i] = priv
		fmt.Fprintln(&codes, phonecode.FromPublicKey(priv.Public().(ed25519.PublicKey)))
	}
	// Whole or not at all: whoever vouches reads the file when it appears.
	if err := writeAtomic(*codesFile, []byte(codes.String())); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d codes written to %s; waiting to be vouched\n", *n, *codesFile)

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := phoneclient.New(*api, phoneclient.WithHTTPClient(phoneclient.DefaultHTTPClient(*conc)))
	var (
		st      simStats
		mu      sync.Mutex
		allKeys []exposure.Key
	)
	st.total = int64(*n)
	prog := newProgress(stdout, &st)
	pctx, stopProgress := context.WithCancel(ctx)
	progDone := make(chan struct{})
	go func() { prog.run(pctx); close(progDone) }()

	g := new(errgroup.Group)
	g.SetLimit(*conc)
	var firstErr atomic.Pointer[error]
	for _, priv := range phones {
		g.Go(func() error {
			err := simulateOne(ctx, client, priv, *perPhone, phoneclient.Backoff{Initial: *poll, Max: *pollMax}, &st, func(keys []exposure.Key) {
				mu.Lock()
				allKeys = append(allKeys, keys...)
				mu.Unlock()
			})
			if err != nil {
				st.failed.Add(1)
				firstErr.CompareAndSwap(nil, &err)
			}
			return nil
		})
	}
	g.Wait()
	stopProgress()
	<-progDone
	prog.final()
	if *keysOut != "" {
		if err := writeKeys(*keysOut, allKeys); err != nil {
			return err
		}
	}
	if p := firstErr.Load(); p != nil {
		return fmt.Errorf("%d of %d phones failed; first: %w", st.failed.Load(), *n, *p)
	}
	if *origin != "" {
		return awaitPublished(ctx, stdout, *origin, trusted, allKeys)
	}
	return nil
}

// awaitPublished syncs from the origin, as a phone would, until every key
// uploaded is in a verified export, or ctx ends.
func awaitPublished(ctx context.Context, stdout io.Writer, origin string, trusted []*ecdsa.PublicKey, uploaded []exposure.Key) error {
	state, err := os.MkdirTemp("", "phone-simulate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	s := &syncer{http: &http.Client{Timeout: time.Minute}, base: strings.TrimRight(origin, "/"), trusted: trusted, open: openExport, state: state}
	want := make(map[[exposure.KeySize]byte]bool, len(uploaded))
	for _, k := range uploaded {
		want[k.Data] = true
	}
	found := 0
	for {
		res, err := s.run(ctx, io.Discard)
		if err != nil && ctx.Err() == nil {
			// An index not written yet, a file refused: say so, try again.
			fmt.Fprintf(stdout, "sync    %v\n", err)
		}
		for _, k := range res.published {
			if want[k.Data] {
				want[k.Data] = false
				found++
			}
		}
		fmt.Fprintf(stdout, "published %d of %d uploaded keys\n", found, len(uploaded))
		if found == len(uploaded) {
			return nil
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return fmt.Errorf("only %d of %d uploaded keys published: %w", found, len(uploaded), err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func simulateOne(ctx context.Context, c *phoneclient.Client, priv ed25519.PrivateKey, nKeys int, poll phoneclient.Backoff, st *simStats, uploaded func([]exposure.Key)) error {
	bundle, err := c.PickupWait(ctx, priv, poll)
	if err != nil {
		return fmt.Errorf("pickup: %w", err)
	}
	st.vouched.Add(1)
	keys, err := randomKeys(nKeys, time.Now())
	if err != nil {
		return err
	}
	if _, err := c.Upload(ctx, priv, bundle, keys); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	uploaded(keys)
	st.uploaded.Add(1)
	return nil
}

type simStats struct {
	total                     int64
	vouched, uploaded, failed atomic.Int64
}

// progress draws a bar that redraws itself on a terminal, and a plain
// line a second (only when something changed) elsewhere.
type progress struct {
	w     io.Writer
	st    *simStats
	tty   bool
	start time.Time
	last  string
}

func newProgress(w io.Writer, st *simStats) *progress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progress{w: w, st: st, tty: tty, start: time.Now()}
}

func (p *progress) run(ctx context.Context) {
	every := time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.draw()
		}
	}
}

func (p *progress) line() string {
	up, v, f := p.st.uploaded.Load(), p.st.vouched.Load(), p.st.failed.Load()
	return fmt.Sprintf("%d/%d uploaded, %d vouched, %d failed", up, p.st.total, v, f)
}

func (p *progress) draw() {
	l := p.line()
	if p.tty {
		const width = 30
		done := int(int64(width) * (p.st.uploaded.Load() + p.st.failed.Load()) / max(p.st.total, 1))
		fmt.Fprintf(p.w, "\r[%s%s] %s  %s ", strings.Repeat("#", done), strings.Repeat(".", width-done), l, time.Since(p.start).Truncate(time.Second))
		return
	}
	if l != p.last {
		fmt.Fprintln(p.w, l)
		p.last = l
	}
}

func (p *progress) final() {
	if p.tty {
		p.draw()
		fmt.Fprintln(p.w)
	}
	el := time.Since(p.start)
	fmt.Fprintf(p.w, "done    %s in %s (%.1f uploads/s)\n", p.line(), el.Truncate(time.Millisecond), float64(p.st.uploaded.Load())/el.Seconds())
}

// writeAtomic writes file through a temporary file and a rename.
func writeAtomic(file string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".tmp-"+filepath.Base(file))
	if err != nil {
		return err
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
