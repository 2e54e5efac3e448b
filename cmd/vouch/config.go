package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/sethvargo/go-envconfig"
)

// fileLookuper reads KEY from the environment or, when KEY_FILE is set, from
// that file (trailing newline trimmed), so secrets need not sit in the
// environment. Setting both is refused: which one wins would be a guess.
type fileLookuper struct{}

func (fileLookuper) Lookup(key string) (string, bool) {
	v, ok := os.LookupEnv(key)
	path, fok := os.LookupEnv(key + "_FILE")
	if !fok {
		return v, ok
	}
	if ok {
		panic(fmt.Sprintf("both %s and %s_FILE are set", key, key))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		panic(fmt.Sprintf("%s_FILE: %v", key, err))
	}
	return strings.TrimRight(string(b), "\r\n"), true
}

// loadConfig fills target from the environment. The values are never
// logged: some are secrets.
func loadConfig(ctx context.Context, target any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("configuration: %v", r)
		}
	}()
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: target, Lookuper: fileLookuper{}}); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}
