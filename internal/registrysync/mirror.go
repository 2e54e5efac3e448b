package registrysync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/vouch-nl/vouch/internal/directory"
)

// ErrNeverSynced means the mirror has not been brought up to date even once.
var ErrNeverSynced = errors.New("registrysync: the mirror has never been synced")

// Lookup reads one card holder from the mirror, with the time the mirror
// was last known to equal the register. The mirror's tables belong to this
// package; readers go through here. A nil entry with a nil error means the
// mirror does not list them.
func Lookup(ctx context.Context, pool *pgxpool.Pool, uziNumber string) (*directory.Entry, time.Time, error) {
	_, asOf, err := loadState(ctx, pool)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("registrysync: %w", err)
	}
	if asOf.IsZero() {
		return nil, time.Time{}, ErrNeverSynced
	}
	var e directory.Entry
	var big, role, agb, serial, dn, uuid *string
	var from, until *time.Time
	err = pool.QueryRow(ctx, `select uzi_number, big_number, card_type, role_code, agb_code, license_status,
			valid_from, valid_until, cert_serial, dn, entry_uuid::text
		from registry_entries where uzi_number = $1`, uziNumber).
		Scan(&e.UZI, &big, &e.CardType, &role, &agb, &e.License, &from, &until, &serial, &dn, &uuid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, asOf, nil
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("registrysync: mirror: %w", err)
	}
	e.BIG, e.Role, e.AGB, e.CertSerial, e.DN, e.EntryUUID = deref(big), deref(role), deref(agb), deref(serial), deref(dn), deref(uuid)
	if from != nil {
		e.ValidFrom = *from
	}
	if until != nil {
		e.ValidUntil = *until
	}
	return &e, asOf, nil
}
