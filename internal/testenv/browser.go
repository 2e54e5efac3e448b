package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
)

// Chromium is Debian's browser, the one the browser tests drive.
const Chromium = "/usr/bin/chromium"

// built holds the binaries built for this test process, by package.
var built struct {
	mu   sync.Mutex
	bins map[string]*binary
}

type binary struct {
	once sync.Once
	path string
	err  error
}

// repoRoot is the module's root, found from this file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Build builds the command at pkg (relative to the module's root, such as
// "./cmd/vouch") once per test process and returns its path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	built.mu.Lock()
	if built.bins == nil {
		built.bins = map[string]*binary{}
	}
	b := built.bins[pkg]
	if b == nil {
		b = &binary{}
		built.bins[pkg] = b
	}
	built.mu.Unlock()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "vouch-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = &buildError{out: string(out), err: err}
		}
	})
	if b.err != nil {
		t.Fatalf("testenv: build %s: %v", pkg, b.err)
	}
	return b.path
}

// CardAgent builds cmd/cardagent once per test process and returns its path.
func CardAgent(t testing.TB) string {
	t.Helper()
	return Build(t, "./cmd/cardagent")
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// Browser starts headless Chromium with the Vouch extension (web/extension)
// loaded and the card agent installed as its native messaging host, signing
// for origins with the test cards of module (SoftHSM, configured by conf).
// It returns once the extension has taken the origins from the agent and
// registered its content script for them, with the browser's context; the
// browser ends with the test.
func Browser(t testing.TB, origins []string, module, conf string) context.Context {
	t.Helper()
	if _, err := os.Stat(Chromium); err != nil {
		missing(t, "Chromium ("+Chromium+")", err)
	}
	agent := CardAgent(t)
	// Not t.TempDir: Chromium's helper processes may still write to the
	// profile for a moment after the browser is closed, and TempDir's
	// removal would fail the test for it.
	dir, err := os.MkdirTemp("", "vouch-browser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 20 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	profile := filepath.Join(dir, "profile") // fresh: an old service worker would outlive an edit
	cfg := filepath.Join(dir, "cardagent.json")
	args := []string{"install", "-module", module, "-env", "SOFTHSM2_CONF=" + conf,
		"-manifest-dir", filepath.Join(profile, "NativeMessagingHosts"), "-path", agent}
	for _, o := range origins {
		args = append(args, "-origin", o)
	}
	install := exec.Command(agent, args...)
	install.Env = append(os.Environ(), "VOUCH_CARDAGENT_CONFIG="+cfg)
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("testenv: cardagent install: %v\n%s", err, out)
	}
	ext := filepath.Join(repoRoot(), "web", "extension")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Chromium),
		chromedp.Flag("headless", "new"),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// A tab or window that is not in front must go on running: the
		// test drives a page and the extension's PIN window at once.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-features", "CalculateNativeWinOcclusion,IntensiveWakeUpThrottling"),
		chromedp.Flag("lang", "en-US"),
		chromedp.Flag("load-extension", ext),
		chromedp.Flag("disable-extensions-except", ext),
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(profile),
		// The browser starts the agent with its own environment.
		chromedp.Env("VOUCH_CARDAGENT_CONFIG=" + cfg),
	}
	// The browser's output holds the card agent's log (its standard
	// error): kept beside the profile for a failing test to be read.
	logf, err := os.Create(filepath.Join(dir, "browser.log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("browser log:\n%s", tail(b, 8<<10))
			}
		}
	})
	opts = append(opts, chromedp.CombinedOutput(logf))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		// A card agent the browser started and did not end would go on
		// holding the readers for the next test.
		killStarted("VOUCH_CARDAGENT_CONFIG=" + cfg)
	})
	// Start it now, so that a browser that does not come up fails here.
	// Not with a timeout context: the browser lives as long as the context
	// of this first Run.
	started := make(chan error, 1)
	go func() { started <- chromedp.Run(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("testenv: start Chromium: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("testenv: Chromium did not start in 30 s")
	}
	waitConfigured(t, ctx, origins)
	return ctx
}

// waitConfigured waits until the extension's service worker has asked the
// agent for its origins and registered its content script for them: a
// page of the back office loaded before that would have no content script.
func waitConfigured(t testing.TB, browser context.Context, origins []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var sw target.ID
	for sw == "" {
		targets, err := chromedp.Targets(browser)
		if err != nil {
			t.Fatalf("testenv: the browser's targets: %v", err)
		}
		for _, ti := range targets {
			if ti.Type == "service_worker" && strings.HasSuffix(ti.URL, "/background.js") {
				sw = ti.TargetID
			}
		}
		if sw == "" {
			if time.Now().After(deadline) {
				t.Fatal("testenv: the extension's service worker did not start in 30 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Not under a timeout: chromedp ties the target's session to the
	// context of its first Run (see attach in web/watch_test.go). Its
	// cancel would close the worker: it ends with the test.
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithTargetID(sw))
	t.Cleanup(cancel)
	attached := make(chan error, 1)
	go func() { attached <- chromedp.Run(ctx) }()
	select {
	case err := <-attached:
		if err != nil {
			t.Fatalf("testenv: attaching to the service worker: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("testenv: the service worker did not answer in 20 s")
	}
	var got []string
	ectx, ecancel := context.WithTimeout(ctx, time.Until(deadline)+10*time.Second)
	defer ecancel()
	err := chromedp.Run(ectx, chromedp.ActionFunc(func(ctx context.Context) error {
		res, exc, err := cdpruntime.Evaluate(`configure().then((s) => [...s])`).WithAwaitPromise(true).WithReturnByValue(true).Do(ctx)
		switch {
		case err != nil:
			return err
		case exc != nil:
			return errors.New(exc.Text)
		}
		return json.Unmarshal(res.Value, &got)
	}))
	if err != nil {
		t.Fatalf("testenv: the extension's configuration: %v", err)
	}
	for _, o := range origins {
		if !slices.Contains(got, o) {
			t.Fatalf("testenv: the extension took the origins %v from the agent, not %s", got, o)
		}
	}
}

// tail is the last n bytes of b.
func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// killStarted kills the processes whose environment holds env: those a
// browser started with it.
func killStarted(env string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || !slices.Contains(strings.Split(string(b), "\x00"), env) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
