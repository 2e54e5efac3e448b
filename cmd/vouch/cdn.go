package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/vouch-nl/vouch/internal/cdn"
	"github.com/vouch-nl/vouch/internal/server"
)

// cdnConfig is the configuration of `vouch cdn`.
type cdnConfig struct {
	CDN   cdn.Config
	Limit cdnLimit
	Ops   server.OpsConfig
}

// cdnLimit caps the origin's connections, as server.Limits does the other
// public listeners' (the origin bounds its request heads itself).
type cdnLimit struct {
	MaxConns int `env:"VOUCH_CDN_MAX_CONNS, default=4096"`
}

// runCDN is `vouch cdn`: the export directory's static origin, its health
// and metrics on the operations listener.
func runCDN(ctx context.Context, log *slog.Logger) error {
	var cfg cdnConfig
	if err := loadConfig(ctx, &cfg); err != nil {
		return err
	}
	o, err := startCDN(cfg.CDN, cfg.Limit, log)
	if err != nil {
		return err
	}
	defer o.Close()
	ops := newOps(cfg.Ops, log, o.checks, runtimeRegistry())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return o.run(gctx) })
	g.Go(func() error { return ops.Run(gctx) })
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// origin is a started `vouch cdn`: run serves it until ctx ends.
type origin struct {
	*cdn.Server
	run    func(ctx context.Context) error
	checks map[string]server.Checker // for the operations listener
}

// startCDN checks cfg and opens the export directory; the caller runs the
// origin (run listens) and closes it. `vouch all` starts it beside the others.
func startCDN(cfg cdn.Config, limit cdnLimit, log *slog.Logger) (*origin, error) {
	if limit.MaxConns == 0 {
		limit.MaxConns = 4096
	}
	if limit.MaxConns < 0 {
		return nil, fmt.Errorf("VOUCH_CDN_MAX_CONNS must be positive, got %d", limit.MaxConns)
	}
	s, err := cdn.New(cfg, log.With("role", "cdn"))
	if err != nil {
		return nil, err
	}
	dir := cfg.Dir
	return &origin{Server: s,
		run: func(ctx context.Context) error {
			ln, err := net.Listen("tcp", cfg.Addr)
			if err != nil {
				return fmt.Errorf("cdn: %w", err)
			}
			return s.Serve(ctx, server.LimitListener(ln, limit.MaxConns))
		},
		checks: map[string]server.Checker{"export_dir": server.CheckFunc(func(context.Context) error {
			fi, err := os.Stat(dir)
			if err == nil && !fi.IsDir() {
				err = fmt.Errorf("%s is not a directory", dir)
			}
			return err
		})},
	}, nil
}
