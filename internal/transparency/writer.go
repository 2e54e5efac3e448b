package transparency

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/lease"
	"github.com/vouch-nl/vouch/internal/protocol"
)

// LeaseName is the lease that makes one writer at a time.
const LeaseName = "transparency-log"

// Config is the log writer's configuration.
type Config struct {
	// Dir is the log's directory: a subdirectory of the export directory
	// the origin serves (e.g. $VOUCH_EXPORT_DIR/log), so that the origin
	// publishes checkpoint, tile/… and tile/entries/… beside the exports.
	// tessera's private state is in Dir/.state, which the origin never
	// serves (it refuses names that start with a dot).
	Dir string `env:"VOUCH_TRANSPARENCY_DIR"`
	// Origin is the checkpoint's first line. It never changes: the writer
	// refuses to run when the key's name or the published checkpoint says
	// another.
	Origin string `env:"VOUCH_TRANSPARENCY_ORIGIN"`
	// Key is the Ed25519 note signer key (PRIVATE+KEY+<origin>+…), read
	// from VOUCH_TRANSPARENCY_KEY_FILE.
	Key string `env:"VOUCH_TRANSPARENCY_KEY"`
	// KeyURI names the Ed25519 key in an HSM (a pkcs11: URI, its token's
	// PIN VOUCH_HSM_PIN) instead: the caller opens it and gives it with
	// WithLogKey. Exactly one of Key and KeyURI is set.
	KeyURI string `env:"VOUCH_TRANSPARENCY_KEY_URI"`
	// Interval is how often the writer looks for new authorizations.
	Interval time.Duration `env:"VOUCH_TRANSPARENCY_INTERVAL, default=1s"`
	// AuditInterval is how often the audit chain's head is appended (when
	// the chain grew).
	AuditInterval time.Duration `env:"VOUCH_TRANSPARENCY_AUDIT_INTERVAL, default=5m"`
	// CheckpointInterval is how often a new checkpoint is published.
	CheckpointInterval time.Duration `env:"VOUCH_TRANSPARENCY_CHECKPOINT_INTERVAL, default=1s"`
	// Batch is the most leaves appended in one step.
	Batch int `env:"VOUCH_TRANSPARENCY_BATCH, default=256"`
	// Lease is the writer lease's TTL.
	Lease time.Duration `env:"VOUCH_TRANSPARENCY_LEASE, default=15s"`
	// WitnessPolicy names the witnesses asked to cosign each checkpoint
	// (C2SP tlog-witness), in tessera's policy format: lines "witness
	// <name> <vkey> <URL>", "group <name> <any|all|N> <member>…" and
	// "quorum <name>" (docs/transparency.md). Empty: none are asked.
	WitnessPolicy string `env:"VOUCH_TRANSPARENCY_WITNESS_POLICY"`
	// WitnessTimeout bounds the wait for the witnesses' cosignatures; a
	// checkpoint the quorum did not cosign in time is published with the
	// cosignatures it got, or none.
	WitnessTimeout time.Duration `env:"VOUCH_TRANSPARENCY_WITNESS_TIMEOUT, default=5s"`
}

// Option sets what a writer gets besides its configuration.
type Option func(*Writer) error

// WithHSMKey has every checkpoint signed a second time, under the same
// origin, by key: the back end's ECDSA P-256 key in its HSM (signed-note
// signature type 0x02, SigTypeECDSA).
func WithHSMKey(key crypto.Signer) Option {
	return func(w *Writer) error {
		s, vkey, err := newHSMSigner(w.cfg.Origin, key)
		if err != nil {
			return err
		}
		w.hsm, w.hsmVKey = s, vkey
		return nil
	}
}

// WithMirror has every checkpoint, and the tiles its tree needs, copied
// to a bucket (S3Mirror) after it is published in the directory.
func WithMirror(m *S3Mirror) Option {
	return func(w *Writer) error {
		w.mirror = m
		return nil
	}
}

// Writer appends stored authorizations and audit-chain heads to the log.
type Writer struct {
	cfg    Config
	db     *database.DB
	log    *slog.Logger
	signer note.Signer
	// logVKey is the verifier key of an Ed25519 key in the HSM.
	logVKey string
	holder  string

	hsm       *hsmSigner // nil: the checkpoint has the Ed25519 signature only
	hsmVKey   string
	witnesses tessera.WitnessGroup
	mirror    *S3Mirror

	// afterAppend, when set (tests), runs after a batch is in the log and
	// before the mirror records it: the window a crash must not break.
	afterAppend func()
}

// parsed is what Validate reads from a configuration.
type parsed struct {
	signer    note.Signer
	witnesses tessera.WitnessGroup
}

// Validate checks the configuration as the writer reads it, without
// opening anything (`vouch config check` runs it too).
func (cfg Config) Validate() error {
	_, err := cfg.parse()
	return err
}

func (cfg Config) parse() (parsed, error) {
	var p parsed
	// Checked here rather than by the environment's parser: `vouch all`
	// loads this configuration whether it runs the writer or not.
	fromFile, inHSM := strings.TrimSpace(cfg.Key) != "", strings.TrimSpace(cfg.KeyURI) != ""
	if cfg.Dir == "" || cfg.Origin == "" || !fromFile && !inHSM {
		return p, errors.New("transparency: the writer needs VOUCH_TRANSPARENCY_DIR, VOUCH_TRANSPARENCY_ORIGIN and VOUCH_TRANSPARENCY_KEY_FILE or VOUCH_TRANSPARENCY_KEY_URI")
	}
	if fromFile && inHSM {
		// Which of two keys signs would be a guess; both would be two logs.
		return p, errors.New("transparency: set one of VOUCH_TRANSPARENCY_KEY_FILE and VOUCH_TRANSPARENCY_KEY_URI, not both")
	}
	if fromFile {
		signer, err := note.NewSigner(strings.TrimSpace(cfg.Key))
		if err != nil {
			return p, fmt.Errorf("transparency: signer key (VOUCH_TRANSPARENCY_KEY_FILE): %w", err)
		}
		if signer.Name() != cfg.Origin {
			return p, fmt.Errorf("transparency: the key is named %q, the origin (VOUCH_TRANSPARENCY_ORIGIN) is %q: they must be the same", signer.Name(), cfg.Origin)
		}
		p.signer = signer
	}
	if cfg.Interval <= 0 || cfg.AuditInterval <= 0 || cfg.Batch < 1 || cfg.CheckpointInterval < 100*time.Millisecond || cfg.WitnessTimeout < 0 {
		return p, errors.New("transparency: configuration: positive intervals (VOUCH_TRANSPARENCY_CHECKPOINT_INTERVAL ≥ 100ms) and VOUCH_TRANSPARENCY_BATCH ≥ 1 are needed")
	}
	if strings.TrimSpace(cfg.WitnessPolicy) != "" {
		var err error
		if p.witnesses, err = tessera.NewWitnessGroupFromPolicy([]byte(cfg.WitnessPolicy)); err != nil {
			return p, fmt.Errorf("transparency: VOUCH_TRANSPARENCY_WITNESS_POLICY: %w", err)
		}
	}
	return p, nil
}

// NewWriter checks the configuration, the keys and the witness policy.
func NewWriter(cfg Config, db *database.DB, log *slog.Logger, opts ...Option) (*Writer, error) {
	p, err := cfg.parse()
	if err != nil {
		return nil, err
	}
	if cfg.WitnessTimeout == 0 {
		cfg.WitnessTimeout = 5 * time.Second
	}
	holder, err := lease.Holder()
	if err != nil {
		return nil, err
	}
	w := &Writer{cfg: cfg, db: db, log: log, signer: p.signer, witnesses: p.witnesses, holder: holder}
	for _, o := range opts {
		if err := o(w); err != nil {
			return nil, err
		}
	}
	if w.signer == nil {
		return nil, errors.New("transparency: VOUCH_TRANSPARENCY_KEY_URI is set but the writer was given no key from the HSM")
	}
	return w, nil
}

// WithLogKey gives the log's Ed25519 key from an HSM, the key
// VOUCH_TRANSPARENCY_KEY_URI names (p11's signer for it), which signs the
// checkpoint under the origin in place of a key file.
func WithLogKey(key crypto.Signer) Option {
	return func(w *Writer) error {
		if strings.TrimSpace(w.cfg.KeyURI) == "" {
			return errors.New("transparency: a log key from the HSM needs VOUCH_TRANSPARENCY_KEY_URI (and no key file)")
		}
		s, vkey, err := newEd25519Signer(w.cfg.Origin, key)
		if err != nil {
			return err
		}
		w.signer, w.logVKey = s, vkey
		return nil
	}
}

// LogVerifierKey is the verifier key of the log's Ed25519 key when it is in
// an HSM (what monitors, auditors and phones are given), "" when it is a key
// file, whose verifier key keygen printed.
func (w *Writer) LogVerifierKey() string { return w.logVKey }

// HSMVerifierKey is the verifier key of the checkpoint's second signature
// (<origin>+<key ID>+base64(0x02 || DER)), "" without an HSM key.
func (w *Writer) HSMVerifierKey() string { return w.hsmVKey }

// Run takes the lease and appends until ctx ends; while another writer
// holds the lease it waits.
func (w *Writer) Run(ctx context.Context) error {
	for {
		l, err := lease.Acquire(ctx, w.db.Pool(), LeaseName, w.holder, w.cfg.Lease)
		switch {
		case err == nil:
			err = w.hold(ctx, l)
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = l.Release(rctx, w.db.Pool())
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			w.log.Warn("transparency: writer stopped; taking the lease again", "err", err)
		case errors.Is(err, lease.ErrHeld):
		case ctx.Err() != nil:
			return nil
		default:
			w.log.Warn("transparency: lease", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.cfg.Lease / 3):
		}
	}
}

// checkOrigin refuses a directory whose published checkpoint names
// another origin: the origin line never changes.
func (w *Writer) checkOrigin() error {
	raw, err := os.ReadFile(filepath.Join(w.cfg.Dir, layout.CheckpointPath))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transparency: %w", err)
	}
	origin, _, _ := strings.Cut(string(raw), "\n")
	if origin != w.cfg.Origin {
		return fmt.Errorf("transparency: the log in %s has origin %q, configured is %q: the origin never changes", w.cfg.Dir, origin, w.cfg.Origin)
	}
	return nil
}

// hold runs the writer under lease l until ctx ends or the lease is lost.
func (w *Writer) hold(ctx context.Context, l *lease.Lease) error {
	if err := w.checkOrigin(); err != nil {
		return err
	}
	kctx, stop := l.Keep(ctx, w.db.Pool(), w.log)
	defer stop()
	// tessera's goroutines (batching, checkpoint publication) run with a
	// context of their own, ended after its shutdown below.
	tctx, tcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer tcancel()
	// The witnesses' client: an answer takes at most the witness timeout.
	hc := &http.Client{Timeout: w.cfg.WitnessTimeout}
	driver, err := posix.New(tctx, posix.Config{Path: w.cfg.Dir, HTTPClient: hc})
	if err != nil {
		return fmt.Errorf("transparency: log directory: %w", err)
	}
	var also []note.Signer
	if w.hsm != nil {
		also = append(also, w.hsm)
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(w.signer, also...).
		WithBatching(uint(w.cfg.Batch), 50*time.Millisecond).
		WithCheckpointInterval(w.cfg.CheckpointInterval).
		// Fail open: a witness down, slow or refusing must not stop the
		// log; the checkpoint goes out with the cosignatures it got, and
		// each verifier's own policy decides whether that is enough.
		WithWitnesses(w.witnesses, &tessera.WitnessOptions{Timeout: w.cfg.WitnessTimeout, FailOpen: true})
	app, shutdown, reader, err := tessera.NewAppender(tctx, driver, opts)
	if err != nil {
		return fmt.Errorf("transparency: open the log: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			w.log.Warn("transparency: shutdown", "err", err)
		}
	}()
	if w.mirror != nil {
		mctx, mcancel := context.WithCancel(kctx)
		done := make(chan struct{})
		defer func() { mcancel(); <-done }()
		go func() {
			defer close(done)
			w.mirrorLoop(mctx)
		}()
	}
	s := &session{w: w, l: l, app: app, reader: reader}
	// Before appending anything: record what the log holds beyond the
	// mirror (a previous writer died between the two).
	if err := s.catchUp(kctx, nil); err != nil {
		return err
	}
	if s.lastHead, err = w.lastHeadLogged(kctx); err != nil {
		return err
	}
	for {
		_, more, err := s.appendAuthorizations(kctx)
		if err != nil {
			return err
		}
		if err := s.appendAuditHead(kctx); err != nil {
			return err
		}
		if more {
			continue // more are waiting
		}
		select {
		case <-kctx.Done():
			return context.Cause(kctx)
		case <-time.After(w.cfg.Interval):
		}
	}
}

// mirrorLoop copies each new checkpoint to the bucket until ctx ends; a
// failed copy is tried again at the next turn.
func (w *Writer) mirrorLoop(ctx context.Context) {
	failing := false
	for {
		err := w.mirror.Sync(ctx, w.cfg.Dir)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			w.log.Warn("transparency: mirror to the bucket", "err", err)
		case err == nil && failing:
			w.log.Info("transparency: mirror to the bucket works again")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-time.After(w.cfg.CheckpointInterval):
		}
	}
}

// session is one tenure of the lease: an open appender.
type session struct {
	w        *Writer
	l        *lease.Lease
	app      *tessera.Appender
	reader   tessera.LogReader
	lastHead time.Time
}

// pendingRow is an authorization without a leaf yet.
type pendingRow struct {
	id    [16]byte
	entry []byte
}

// pending returns up to limit authorizations without a leaf, oldest
// first (limit 0: all).
func (w *Writer) pending(ctx context.Context, limit int) ([]pendingRow, error) {
	q := `select a.id, a.statement, coalesce(a.statement_sig, ''), coalesce(a.signer_cert, ''),
			coalesce(a.attestation, ''), coalesce(a.attestation_sig, ''), a.created_at
		from authorizations a
		where not exists (select 1 from transparency_leaves l where l.authorization_id = a.id)
		order by a.created_at, a.id`
	args := []any{}
	if limit > 0 {
		q += ` limit $1`
		args = append(args, limit)
	}
	rows, err := w.db.Pool().Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("transparency: pending authorizations: %w", err)
	}
	defer rows.Close()
	var out []pendingRow
	for rows.Next() {
		var (
			id                                [16]byte
			statement, sig, cert, att, attSig []byte
			created                           time.Time
		)
		if err := rows.Scan(&id, &statement, &sig, &cert, &att, &attSig, &created); err != nil {
			return nil, fmt.Errorf("transparency: pending authorizations: %w", err)
		}
		out = append(out, pendingRow{id: id, entry: authorizationRowEntry(statement, sig, cert, att, attSig, created)})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("transparency: pending authorizations: %w", err)
	}
	return out, nil
}

// authorizationRowEntry is the entry of a stored authorization: its bundle
// as the phone picked it up (the back office's bundleOf), dated by the
// statement's issue time (the row's time if the statement does not parse,
// which a stored one always does).
func authorizationRowEntry(statement, sig, cert, att, attSig []byte, created time.Time) []byte {
	bundle := (&protocol.Bundle{Statement: statement, StatementSignature: sig, Cert: cert,
		Attestation: att, AttestationSignature: attSig}).Marshal()
	issued := created
	if st, err := protocol.ParseStatement(statement); err == nil {
		issued = st.IssuedAt
	}
	return AuthorizationEntry(bundle, issued)
}

// pendingRound is how many batches one look for pending authorizations
// reads at most: the look walks the table past every authorization
// logged already (they are the oldest), so it is made once a round, not
// once a batch (bench stage transparency: 735 leaves/s before, 3,170
// after, both on this busy 2-core machine).
const pendingRound = 64

// appendAuthorizations appends up to pendingRound batches of
// authorizations without a leaf, each recorded before the next is
// appended; it returns how many, and whether more may be waiting.
func (s *session) appendAuthorizations(ctx context.Context) (n int, more bool, err error) {
	limit := s.w.cfg.Batch * pendingRound
	rows, err := s.w.pending(ctx, limit)
	if err != nil || len(rows) == 0 {
		return 0, false, err
	}
	for len(rows) > 0 {
		batch := rows[:min(len(rows), s.w.cfg.Batch)]
		rows = rows[len(batch):]
		entries := make([][]byte, len(batch))
		sources := make(map[string][16]byte, len(batch))
		for i, r := range batch {
			entries[i] = r.entry
			sources[string(r.entry)] = r.id
		}
		if err := s.add(ctx, entries); err != nil {
			return n, false, err
		}
		if err := s.catchUp(ctx, sources); err != nil {
			return n, false, err
		}
		n += len(batch)
	}
	return n, n == limit, nil
}

// appendAuditHead appends the audit chain's head when the chain grew since
// the last head logged and AuditInterval passed.
func (s *session) appendAuditHead(ctx context.Context) error {
	if time.Since(s.lastHead) < s.w.cfg.AuditInterval {
		return nil
	}
	var (
		seq  int64
		hash []byte
		at   time.Time
	)
	err := s.w.db.Pool().QueryRow(ctx, `select seq, hash, at from audit_log order by seq desc limit 1`).Scan(&seq, &hash, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("transparency: audit head: %w", err)
	}
	var logged bool
	if err := s.w.db.Pool().QueryRow(ctx, `select exists (select 1 from transparency_leaves where audit_seq >= $1)`, seq).Scan(&logged); err != nil {
		return fmt.Errorf("transparency: audit head: %w", err)
	}
	if logged {
		return nil
	}
	e, err := AuditHeadEntry(seq, hash, at)
	if err != nil {
		return err
	}
	if err := s.add(ctx, [][]byte{e}); err != nil {
		return err
	}
	if err := s.catchUp(ctx, nil); err != nil {
		return err
	}
	s.lastHead = time.Now()
	return nil
}

// add appends entries, in order, and waits until they are in the log
// (sequenced and integrated: tessera's POSIX driver does both before a
// future resolves).
func (s *session) add(ctx context.Context, entries [][]byte) error {
	futures := make([]tessera.IndexFuture, len(entries))
	for i, e := range entries {
		futures[i] = s.app.Add(ctx, tessera.NewEntry(e))
	}
	for _, f := range futures {
		if _, err := f(); err != nil {
			return fmt.Errorf("transparency: append: %w", err)
		}
	}
	if s.w.afterAppend != nil {
		s.w.afterAppend()
	}
	return nil
}

// lastHeadLogged is when the writer last logged an audit head.
func (w *Writer) lastHeadLogged(ctx context.Context) (time.Time, error) {
	var t pgtype.Timestamptz
	if err := w.db.Pool().QueryRow(ctx, `select max(logged_at) from transparency_leaves where audit_seq is not null`).Scan(&t); err != nil {
		return time.Time{}, fmt.Errorf("transparency: last audit head: %w", err)
	}
	return t.Time, nil
}

// catchUp records in the mirror every leaf the log holds beyond it, in one
// transaction fenced by the lease. sources names the authorization of an
// entry; an entry it does not name is looked up among all pending
// authorizations (after a crash). This is the one place leaves are
// recorded, on the normal path too: what is recorded is what the log
// holds, never what the writer meant to append.
func (s *session) catchUp(ctx context.Context, sources map[string][16]byte) error {
	size, err := s.reader.IntegratedSize(ctx)
	if err != nil {
		return fmt.Errorf("transparency: log size: %w", err)
	}
	var next uint64
	if err := s.w.db.Pool().QueryRow(ctx, `select coalesce(max(idx) + 1, 0) from transparency_leaves`).Scan(&next); err != nil {
		return fmt.Errorf("transparency: mirror: %w", err)
	}
	switch {
	case next == size:
		return nil
	case next > size:
		// The mirror recorded leaves the log no longer has: the directory
		// was replaced by an older copy. Appending now would give new
		// leaves the indices of published ones: a fork. A person decides.
		return fmt.Errorf("transparency: the log in %s has %d leaves, %d were recorded: it lost leaves; refusing to append", s.w.cfg.Dir, size, next)
	}
	entries, err := readEntries(ctx, s.reader.ReadEntryBundle, next, size)
	if err != nil {
		return err
	}
	var (
		idxs   = make([]int64, len(entries))
		ids    = make([]pgtype.UUID, len(entries))
		seqs   = make([]*int64, len(entries))
		lookup = sources
		looked bool
	)
	for i, raw := range entries {
		idxs[i] = int64(next) + int64(i)
		e, err := ParseEntry(raw)
		if err != nil {
			return fmt.Errorf("transparency: leaf %d: %w", idxs[i], err)
		}
		switch e.Kind {
		case KindAuditHead:
			seq := e.Seq
			seqs[i] = &seq
		case KindAuthorization:
			id, ok := lookup[string(raw)]
			if !ok && !looked {
				// Leaves a crashed writer appended: whose are they?
				looked = true
				rows, err := s.w.pending(ctx, 0)
				if err != nil {
					return err
				}
				all := make(map[string][16]byte, len(rows)+len(sources))
				for k, v := range sources {
					all[k] = v
				}
				for _, r := range rows {
					all[string(r.entry)] = r.id
				}
				lookup = all
				id, ok = lookup[string(raw)]
			}
			if ok {
				ids[i] = pgtype.UUID{Bytes: id, Valid: true}
			} else {
				// Its row is gone (retention) or it is a repeat of a leaf
				// recorded before: the auditor reports repeats.
				s.w.log.Warn("transparency: a leaf of no pending authorization", "index", idxs[i])
			}
		}
	}
	return s.w.db.InTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into transparency_leaves (idx, entry, authorization_id, audit_seq)
			select * from unnest($1::bigint[], $2::bytea[], $3::uuid[], $4::bigint[])`, idxs, entries, ids, seqs); err != nil {
			return fmt.Errorf("transparency: mirror: %w", err)
		}
		return s.l.Check(ctx, tx)
	})
}

// readEntries reads the entries [from, to) of a log of size at least to.
func readEntries(ctx context.Context, f client.EntryBundleFetcherFunc, from, to uint64) ([][]byte, error) {
	out := make([][]byte, 0, to-from)
	for i := from; i < to; {
		b := i / layout.EntryBundleWidth
		bundle, err := client.GetEntryBundle(ctx, f, b, to)
		if err != nil {
			return nil, fmt.Errorf("transparency: entries at %d: %w", i, err)
		}
		first := b * layout.EntryBundleWidth
		end := min(to, first+uint64(len(bundle.Entries)))
		if end <= i {
			return nil, fmt.Errorf("transparency: entry bundle %d is short", b)
		}
		out = append(out, bundle.Entries[i-first:end-first]...)
		i = end
	}
	return out, nil
}
