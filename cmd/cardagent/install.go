package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// HostName is the native messaging host's name, as the extension calls it.
const HostName = "nl.vouch.cardagent"

// ExtensionID is the Chromium id of web/extension, fixed by the "key" in
// its manifest.json (the first 32 hex digits of SHA-256 over that public
// key, written with the letters a to p).
const ExtensionID = "ddcbnhkaghojgidgbjinhcfobfeoholo"

// config is what `cardagent install` writes and the host reads: which back
// office may ask for signatures and where the card's PKCS#11 module is.
type config struct {
	Origins     []string          `json:"origins"`
	Module      string            `json:"module"`
	ModuleEnv   map[string]string `json:"module_env,omitempty"` // e.g. SOFTHSM2_CONF for the test cards
	ExtensionID string            `json:"extension_id"`
}

// configPath is $VOUCH_CARDAGENT_CONFIG, or cardagent.json in the user's
// configuration directory.
func configPath() (string, error) {
	if p := os.Getenv("VOUCH_CARDAGENT_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "vouch", "cardagent.json"), nil
}

func loadConfig() (config, error) {
	var c config
	p, err := configPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w", p, err)
	}
	if len(c.Origins) == 0 || c.Module == "" || c.ExtensionID == "" {
		return c, fmt.Errorf("%s: origins, module and extension_id are needed", p)
	}
	return c, nil
}

// manifestDirs are where each browser looks for a user's native messaging
// hosts on Linux. Firefox is not among them: the extension is a Chromium
// MV3 one, which Firefox does not run.
func manifestDirs(home string) map[string]string {
	return map[string]string{
		"chromium": filepath.Join(home, ".config", "chromium", "NativeMessagingHosts"),
		"chrome":   filepath.Join(home, ".config", "google-chrome", "NativeMessagingHosts"),
	}
}

// firefoxManifest is where an earlier cardagent install wrote a host
// manifest for Firefox; install removes it.
func firefoxManifest(home string) string {
	return filepath.Join(home, ".mozilla", "native-messaging-hosts", HostName+".json")
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// runInstall writes the agent's configuration and a host manifest for each
// browser, so that the extension can start the agent.
func runInstall(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("cardagent install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var origins, env listFlag
	fs.Var(&origins, "origin", "back-office origin allowed to ask for signatures, e.g. https://vouch.example (repeatable)")
	fs.Var(&env, "env", "KEY=VALUE set before the module loads, e.g. SOFTHSM2_CONF=... for the test cards (repeatable)")
	module := fs.String("module", envOr("VOUCH_PKCS11_MODULE", defaultModule), "the card's PKCS#11 module")
	extID := fs.String("extension-id", ExtensionID, "Chromium id of the Vouch extension")
	browsers := fs.String("browsers", "chromium,chrome", "browsers to install the host manifest for")
	manifestDir := fs.String("manifest-dir", "", "write one Chromium host manifest into this directory instead (a test browser's profile)")
	exe := fs.String("path", "", "the cardagent binary the browser starts (default: this one)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError(2)
	}
	if len(origins) == 0 || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "cardagent install: -origin is needed (the back office's address, e.g. https://vouch.example)")
		return exitError(2)
	}
	cfg := config{Origins: origins, Module: *module, ExtensionID: *extID, ModuleEnv: map[string]string{}}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "cardagent install: -env %q is not KEY=VALUE\n", kv)
			return exitError(2)
		}
		cfg.ModuleEnv[k] = v
	}
	// Refuse now what the host would refuse at every start.
	if _, err := newCheckedAgent(cfg); err != nil {
		fmt.Fprintln(stderr, "cardagent install:", err)
		return exitError(2)
	}
	if *exe == "" {
		p, err := os.Executable()
		if err != nil {
			return err
		}
		*exe = p
	}
	abs, err := filepath.Abs(*exe)
	if err != nil {
		return err
	}
	cp, err := configPath()
	if err != nil {
		return err
	}
	if err := writeJSON(cp, cfg); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "configuration:", cp)
	targets := map[string]string{}
	if *manifestDir != "" {
		targets["chromium"] = *manifestDir
	} else {
		home, err := os.UserHomeDir()
		if err != nil {
			return err
		}
		dirs := manifestDirs(home)
		for _, b := range strings.Split(*browsers, ",") {
			d, ok := dirs[b]
			if !ok {
				fmt.Fprintf(stderr, "cardagent install: unknown browser %q (chromium, chrome; Firefox is not supported)\n", b)
				return exitError(2)
			}
			targets[b] = d
		}
		// A Firefox manifest of an earlier install named an add-on id
		// the host no longer accepts: removed, not left to mislead.
		if err := os.Remove(firefoxManifest(home)); err == nil {
			fmt.Fprintln(stdout, "removed:", firefoxManifest(home))
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	names := make([]string, 0, len(targets))
	for b := range targets {
		names = append(names, b)
	}
	slices.Sort(names)
	for _, b := range names {
		m := map[string]any{"name": HostName, "description": "Vouch card agent: your card for the Vouch back office", "path": abs, "type": "stdio",
			"allowed_origins": []string{"chrome-extension://" + cfg.ExtensionID + "/"}}
		p := filepath.Join(targets[b], HostName+".json")
		if err := writeJSON(p, m); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-9s %s\n", b+":", p)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
