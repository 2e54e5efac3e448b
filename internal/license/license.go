// Package license answers one question for login, vouching and attestation:
// may the holder of this card work as a care provider now? It asks the
// register live, with a short timeout, and falls back to the mirror the
// registry sync keeps; a mirror older than its bound is not trusted, and
// then the answer is no, with a reason a clinician can read.
package license

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/directory"
	"github.com/vouch-nl/vouch/internal/i18n"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/uzi"
)

// Config of license decisions.
type Config struct {
	// MaxMirrorAge is how old the mirror may be when the register cannot be
	// asked. Older, and decisions fail closed.
	MaxMirrorAge time.Duration `env:"VOUCH_LICENSE_MAX_MIRROR_AGE, default=24h"`
}

// Reason is a stable code for a decision.
type Reason string

// Reasons of a decision. Only ReasonActive allows.
const (
	ReasonActive        Reason = "license-active"
	ReasonSuspended     Reason = "license-suspended"
	ReasonRevoked       Reason = "license-revoked"
	ReasonDeceased      Reason = "license-deceased"
	ReasonNotYetValid   Reason = "license-not-yet-valid"
	ReasonExpired       Reason = "license-expired"
	ReasonNotRegistered Reason = "not-in-register"
	ReasonCardMismatch  Reason = "register-card-mismatch"
	ReasonUnavailable   Reason = "register-unavailable"
	// ReasonRegisterEntryInvalid: the register's entry cannot be read, or
	// there is more than one.
	ReasonRegisterEntryInvalid Reason = "register-entry-invalid"
	// ReasonCardMayNotVouch and ReasonRoleMayNotVouch: the license is
	// active, but the card (a staff, nameless or server card) or the role
	// (a profession not allowed to vouch) may not vouch (ForVouching).
	ReasonCardMayNotVouch Reason = "card-may-not-vouch"
	ReasonRoleMayNotVouch Reason = "role-may-not-vouch"
)

// Reasons lists every reason; what each means for a clinician is the
// message "license.<code>" of the catalogues in internal/i18n.
func Reasons() []Reason {
	return []Reason{ReasonActive, ReasonSuspended, ReasonRevoked, ReasonDeceased, ReasonNotYetValid, ReasonExpired,
		ReasonNotRegistered, ReasonCardMismatch, ReasonRegisterEntryInvalid, ReasonCardMayNotVouch, ReasonRoleMayNotVouch, ReasonUnavailable}
}

// MessageID is r's message in the catalogues.
func (r Reason) MessageID() string { return "license." + string(r) }

// Text says what r means for a clinician, in lang.
func (r Reason) Text(lang string) string { return i18n.T(lang, r.MessageID()) }

// Decision is the answer, with what it rests on.
type Decision struct {
	Allowed bool
	Reason  Reason
	Status  string // the register's license status, when known
	Source  string // "register" or "mirror"
	AsOf    time.Time
	Entry   directory.Entry
}

// Decider makes decisions. dir may be nil: then only the mirror is used; db
// may be nil: then only the register is (test tools).
type Decider struct {
	cfg Config
	dir *directory.Client
	db  *database.DB
	log *slog.Logger
	now func() time.Time
	// bound, when set, tightens MaxMirrorAge (WithMaxMirrorAge).
	bound func() time.Duration
}

// New returns a Decider.
func New(cfg Config, dir *directory.Client, db *database.DB, log *slog.Logger) *Decider {
	return &Decider{cfg: cfg, dir: dir, db: db, log: log, now: time.Now}
}

// WithMaxMirrorAge has d read the mirror's bound from bound (an admin's
// setting, internal/settings) at every decision: it tightens
// Config.MaxMirrorAge, never loosens it.
func (d *Decider) WithMaxMirrorAge(bound func() time.Duration) *Decider {
	d.bound = bound
	return d
}

// maxMirrorAge is the bound in effect.
func (d *Decider) maxMirrorAge() time.Duration {
	if d.bound != nil {
		if b := d.bound(); b > 0 && b < d.cfg.MaxMirrorAge {
			return b
		}
	}
	return d.cfg.MaxMirrorAge
}

// Decide says whether the card holder id may work as a care provider now.
// An error means neither the register nor a fresh enough mirror could be
// read; the decision then refuses with ReasonUnavailable.
func (d *Decider) Decide(ctx context.Context, id uzi.Identity) (Decision, error) {
	return d.decide(ctx, id.UZI, func(directory.Entry) uzi.Identity { return id })
}

// DecideHolder decides for the card holder as the register itself
// describes them, with no card to compare: support staff asking "may this
// clinician work now?". The register is asked once.
func (d *Decider) DecideHolder(ctx context.Context, uziNumber string) (Decision, error) {
	return d.decide(ctx, uziNumber, func(e directory.Entry) uzi.Identity {
		return uzi.Identity{UZI: e.UZI, CardType: uzi.CardType(e.CardType), Role: e.Role}
	})
}

// ErrNotUZINumber: what was asked about is not a UZI number, so no register
// is asked.
var ErrNotUZINumber = errors.New("license: not a UZI number (nine digits)")

func (d *Decider) decide(ctx context.Context, uziNumber string, claim func(directory.Entry) uzi.Identity) (Decision, error) {
	now := d.now()
	if !uzi.ValidUZINumber(uziNumber) {
		return Decision{Reason: ReasonNotRegistered, AsOf: now}, ErrNotUZINumber
	}
	if d.dir != nil {
		e, err := d.dir.Lookup(ctx, uziNumber)
		switch {
		case err == nil:
			return judge(e, claim(e), now, "register", now), nil
		case errors.Is(err, directory.ErrNotFound):
			return Decision{Reason: ReasonNotRegistered, Source: "register", AsOf: now}, nil
		case !errors.Is(err, directory.ErrUnavailable):
			// The register answered, but not with one readable entry: the
			// mirror may still say "active"; it must not be asked.
			return Decision{Reason: ReasonRegisterEntryInvalid, Source: "register", AsOf: now}, nil
		}
		d.log.Warn("register lookup failed; using the mirror", "err", err)
	}
	e, asOf, err := d.fromMirror(ctx, uziNumber)
	if err != nil {
		return Decision{Reason: ReasonUnavailable, AsOf: now}, err
	}
	if age, bound := now.Sub(asOf), d.maxMirrorAge(); asOf.IsZero() || age > bound {
		return Decision{Reason: ReasonUnavailable, Source: "mirror", AsOf: asOf},
			fmt.Errorf("license: the mirror is %s old, over the bound of %s", age.Round(time.Second), bound)
	}
	if e == nil {
		return Decision{Reason: ReasonNotRegistered, Source: "mirror", AsOf: asOf}, nil
	}
	return judge(*e, claim(*e), now, "mirror", asOf), nil
}

func judge(e directory.Entry, id uzi.Identity, now time.Time, source string, asOf time.Time) Decision {
	d := Decision{Status: e.License, Source: source, AsOf: asOf, Entry: e}
	switch {
	case e.CardType != string(id.CardType) || (e.Role != "" && e.Role != id.Role):
		d.Reason = ReasonCardMismatch
	case e.License == directory.LicenseSuspended:
		d.Reason = ReasonSuspended
	case e.License == directory.LicenseRevoked:
		d.Reason = ReasonRevoked
	case e.License == directory.LicenseDeceased:
		d.Reason = ReasonDeceased
	case !e.ValidFrom.IsZero() && now.Before(e.ValidFrom):
		d.Reason = ReasonNotYetValid
	case !e.ValidUntil.IsZero() && !now.Before(e.ValidUntil):
		d.Reason = ReasonExpired
	case e.License == directory.LicenseActive:
		d.Reason, d.Allowed = ReasonActive, true
	default:
		d.Reason = ReasonUnavailable
	}
	return d
}

// ForVouching narrows a decision that allows to the question "may this
// card holder vouch?": only a care provider's card (Z) whose role's
// profession is among professions may.
func (dec Decision) ForVouching(professions []string) Decision {
	if !dec.Allowed {
		return dec
	}
	id := uzi.Identity{Role: dec.Entry.Role}
	switch {
	case dec.Entry.CardType != string(uzi.CardCareProvider):
		dec.Allowed, dec.Reason = false, ReasonCardMayNotVouch
	case !slices.Contains(professions, id.Profession()):
		dec.Allowed, dec.Reason = false, ReasonRoleMayNotVouch
	}
	return dec
}

// fromMirror reads one card holder and the mirror's age. A nil entry with a
// nil error means the mirror does not list them.
func (d *Decider) fromMirror(ctx context.Context, uziNumber string) (*directory.Entry, time.Time, error) {
	if d.db == nil {
		return nil, time.Time{}, errors.New("license: the register cannot be reached and there is no mirror")
	}
	return registrysync.Lookup(ctx, d.db.Pool(), uziNumber)
}
