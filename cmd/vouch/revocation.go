package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/database"
	"github.com/vouch-nl/vouch/internal/protocol"
	"github.com/vouch-nl/vouch/internal/registrysync"
	"github.com/vouch-nl/vouch/internal/revocation"
	"github.com/vouch-nl/vouch/internal/server"
	"github.com/vouch-nl/vouch/internal/trust"
)

// errNoRevocation: a server that checks cards must know which are revoked.
// Only a phone verifies offline, without CRLs.
var errNoRevocation = errors.New("no revocation source: a server role needs VOUCH_UZI_CRL_SOURCES " +
	"(fetched by the registry sync) or VOUCH_UZI_CRLS (files kept up to date by other means)")

// checkRevocationConfig fails unless a server role has a source of CRLs it
// can read: files, or sources a sync in this process fetches.
func checkRevocationConfig(tcfg trust.Config, scfg registrysync.Config, syncRuns bool) error {
	switch {
	case len(tcfg.CRLs) == 0 && len(scfg.CRLSources) == 0:
		return errNoRevocation
	case len(scfg.CRLSources) > 0 && !syncRuns:
		return errors.New("VOUCH_UZI_CRL_SOURCES are fetched by the registry sync, which needs VOUCH_REGISTRY_URL")
	case tcfg.CRLRefresh <= 0:
		return fmt.Errorf("VOUCH_UZI_CRL_REFRESH must be positive, got %s", tcfg.CRLRefresh)
	}
	return nil
}

// serverRevocation gives tr the revocation set a server role checks cards
// with: the CRL files and, when the sync fetches CRLs, those it stores —
// read now and again every tcfg.CRLRefresh by the returned keep function.
// syncRuns says whether this process runs the sync that fetches the
// sources. It fails without any source: a server configured like a phone
// would accept revoked cards.
func serverRevocation(ctx context.Context, tr *protocol.Trust, tcfg trust.Config, scfg registrysync.Config,
	db *database.DB, syncRuns bool, log *slog.Logger) (keep func(context.Context) error, ready server.Checker, err error) {
	if err := checkRevocationConfig(tcfg, scfg, syncRuns); err != nil {
		return nil, nil, err
	}
	var src revocation.Sources
	if len(tcfg.CRLs) > 0 {
		src = append(src, revocation.Files(tcfg.CRLs))
	}
	if len(scfg.CRLSources) > 0 {
		src = append(src, revocation.Stored{DB: db.Pool()})
	}
	set, _ := tr.Revocation.(*revocation.Set) // the files, checked by trust.Load
	if set == nil {
		set = revocation.NewSet()
	}
	cas := tr.CAs()
	if err := set.Refresh(ctx, src, cas, time.Now()); err != nil {
		// The sync may not have fetched yet; cards of a CA without a
		// current CRL are refused meanwhile, and readiness says so.
		log.Warn("CRLs: some were not taken", "err", err)
	}
	tr.Revocation = set
	keep = func(ctx context.Context) error {
		set.Keep(ctx, src, cas, tcfg.CRLRefresh, log)
		return nil
	}
	ready = server.CheckFunc(func(context.Context) error {
		missing := set.Missing(cas, time.Now())
		if len(missing) == 0 {
			return nil
		}
		names := make([]string, len(missing))
		for i, ca := range missing {
			names[i] = ca.Subject.CommonName
		}
		return fmt.Errorf("no current CRL for %s: their cards are refused", strings.Join(names, ", "))
	})
	return keep, ready, nil
}
