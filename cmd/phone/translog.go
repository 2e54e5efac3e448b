package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/transparency"
)

// The phone's side of the transparency log (docs/transparency.md, "The
// phone"): at pickup and at each sync it verifies the log's checkpoint
// under its witness policy, checks it extends the one it kept, and proves
// its authorization's leaf in the tree, from the files the origin
// publishes.

// witnessFlag is -log-witness, repeatable.
type witnessFlag []string

func (w *witnessFlag) String() string { return strings.Join(*w, ",") }

func (w *witnessFlag) Set(v string) error {
	*w = append(*w, v)
	return nil
}

// logFlags are the flags of the log's check, shared by pickup and sync.
type logFlags struct {
	url       string
	key       string
	witnesses witnessFlag
	quorum    int
}

func addLogFlags(fs *flag.FlagSet, urlHelp string) *logFlags {
	l := &logFlags{}
	fs.StringVar(&l.url, "log", "", "the transparency log's URL, the origin's …/log/ ("+urlHelp+")")
	fs.StringVar(&l.key, "log-key", os.Getenv("VOUCH_TRANSPARENCY_PUBLIC_KEY"),
		"the log's public key, <origin>+<hash>+<key> (default $VOUCH_TRANSPARENCY_PUBLIC_KEY); empty: the log is not checked")
	fs.Var(&l.witnesses, "log-witness", "a witness's verifier key (vkey, cosignature/v1); repeat for several; a checkpoint without their cosignatures is refused")
	fs.IntVar(&l.quorum, "log-witness-quorum", 0, "how many of the -log-witness keys must have cosigned a checkpoint (0: all of them)")
	return l
}

// policy is the configured policy; nil when no log key is given.
func (l *logFlags) policy() (*transparency.PhonePolicy, error) {
	if strings.TrimSpace(l.key) == "" {
		if len(l.witnesses) > 0 || l.quorum != 0 {
			return nil, errors.New("-log-witness and -log-witness-quorum need the log's key (-log-key)")
		}
		return nil, nil
	}
	return transparency.NewPhonePolicy(l.key, l.witnesses, l.quorum)
}

// phoneLog checks the log for a phone whose state is in dir.
type phoneLog struct {
	src    transparency.Source
	policy *transparency.PhonePolicy
	dir    string
	now    func() time.Time
}

func (l *logFlags) open(dir, defaultURL string) (*phoneLog, error) {
	p, err := l.policy()
	if err != nil || p == nil {
		return nil, err
	}
	u := l.url
	if u == "" {
		u = defaultURL
	}
	src, err := transparency.OpenPhoneSource(u, &http.Client{Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	return &phoneLog{src: src, policy: p, dir: dir, now: time.Now}, nil
}

func (pl *phoneLog) statePath() string { return filepath.Join(pl.dir, transparency.PhoneStateFile) }

// record adds a picked-up authorization's leaf to the state, saved at
// once: whatever the log says now, sync proves it later.
func (pl *phoneLog) record(authorization string, entry []byte) error {
	if err := os.MkdirAll(pl.dir, 0o700); err != nil {
		return err
	}
	st, err := transparency.LoadPhoneState(pl.statePath())
	if err != nil {
		return err
	}
	st.AddLeaf(authorization, entry, pl.now())
	return st.Save(pl.statePath())
}

// check brings the kept checkpoint up to the log's and proves the pending
// leaves, printing what it found. A refusal (a fork, the witness policy,
// a bad signature or proof) is printed and returned: the state is then
// left as it was.
func (pl *phoneLog) check(ctx context.Context, w io.Writer) error {
	if err := os.MkdirAll(pl.dir, 0o700); err != nil {
		return err
	}
	st, err := transparency.LoadPhoneState(pl.statePath())
	if err != nil {
		return err
	}
	res, err := transparency.PhoneUpdate(ctx, pl.src, pl.policy, st)
	var fork *transparency.ForkProof
	var pol *transparency.PolicyError
	switch {
	case errors.As(err, &fork):
		proof := fork.Marshal()
		file := filepath.Join(pl.dir, fmt.Sprintf("fork-proof-%s.txt", pl.now().UTC().Format("20060102T150405Z")))
		werr := os.WriteFile(file, proof, 0o600)
		fmt.Fprintf(w, "log     FORK: %s\n", fork.Reason)
		fmt.Fprintf(w, "log     the log showed two histories; the checkpoint kept is unchanged. The proof (both signed checkpoints%s), for anyone with the log's key (phone verify-fork):\n%s",
			map[bool]string{true: " and the consistency proof", false: ""}[fork.Prefix != nil], proof)
		if werr == nil {
			fmt.Fprintf(w, "log     the proof is also in %s\n", file)
		}
		return exitError(1)
	case errors.As(err, &pol):
		fmt.Fprintf(w, "log     REFUSED the checkpoint of %d leaves: %d valid cosignatures of the %d the witness policy requires (cosigned by: %s); %s\n",
			pol.Size, len(pol.Cosigners), pol.Quorum, orNone(pol.Cosigners), kept(st))
		return exitError(1)
	case err != nil:
		fmt.Fprintf(w, "log     REFUSED: %v; %s\n", err, kept(st))
		return exitError(1)
	}
	if err := st.Save(pl.statePath()); err != nil {
		return err
	}
	cp := res.Checkpoint
	line := fmt.Sprintf("log     %s: checkpoint of %d leaves verified", pl.policy.Log.Name(), cp.Size)
	switch {
	case res.Stale:
		line = fmt.Sprintf("log     %s: the origin served an older checkpoint, a prefix of the one kept (%d leaves): kept", pl.policy.Log.Name(), cp.Size)
	case res.Previous == nil:
		line += ", the first this phone keeps"
	case res.Previous.Size == cp.Size:
		line += ", the same as before"
	default:
		line += fmt.Sprintf(", consistent with the %d seen before", res.Previous.Size)
	}
	if pl.policy.Quorum > 0 {
		line += fmt.Sprintf("; cosigned by %s (%d of %d required)", orNone(res.Cosigners), len(res.Cosigners), pl.policy.Quorum)
	}
	fmt.Fprintln(w, line)
	for _, l := range res.Proven {
		fmt.Fprintf(w, "log     authorization %s is leaf %d: inclusion verified against the checkpoint of %d leaves\n", l.Authorization, *l.Index, l.ProvenSize)
	}
	for _, l := range res.Pending {
		fmt.Fprintf(w, "log     authorization %s is not in the log yet (picked up %s ago); the next sync looks again\n",
			l.Authorization, pl.now().Sub(l.PickedUp).Round(time.Second))
	}
	return nil
}

func kept(st *transparency.PhoneState) string {
	if st.Checkpoint == "" {
		return "no checkpoint kept yet"
	}
	size := "?"
	if _, rest, ok := strings.Cut(st.Checkpoint, "\n"); ok {
		size, _, _ = strings.Cut(rest, "\n")
	}
	return "kept the checkpoint of " + size + " leaves"
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// runVerifyFork checks a fork proof a phone printed, with the log's key
// alone: what a third party does with it.
func runVerifyFork(_ context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("verify-fork", stdout)
	key := fs.String("log-key", os.Getenv("VOUCH_TRANSPARENCY_PUBLIC_KEY"), "the log's public key (default $VOUCH_TRANSPARENCY_PUBLIC_KEY)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *key == "" {
		return errors.New("usage: phone verify-fork -log-key KEY FILE")
	}
	v, err := transparency.Verifier(*key)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	fp, err := transparency.ParseForkProof(b)
	if err == nil {
		err = fp.Check(v)
	}
	if err != nil {
		fmt.Fprintf(stdout, "NOT PROVEN  %v\n", err)
		return exitError(1)
	}
	fmt.Fprintf(stdout, "PROVEN  the log %s signed two histories that cannot both be true\n", v.Name())
	return nil
}
