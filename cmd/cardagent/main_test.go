package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/cardagent"
	"github.com/vouch-nl/vouch/internal/testenv"
)

func TestTokens(t *testing.T) {
	man := testenv.Cards(t)
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"tokens", "-module", man.Module}, nil, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"vouch-gp", "vouch-staff", "vouch-backend"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("token list lacks %s:\n%s", want, out.String())
		}
	}
}

// TestInstallThenHost: install writes the configuration and a host
// manifest per browser; the browser then starts the agent with the
// extension's origin as argument, and it answers on standard output.
func TestInstallThenHost(t *testing.T) {
	man := testenv.Cards(t)
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, ".config"))
	t.Setenv("VOUCH_CARDAGENT_CONFIG", "")
	run := func(stdin []byte, args ...string) (string, error) {
		var out bytes.Buffer
		err := realMain(context.Background(), args, bytes.NewReader(stdin), &out, &out)
		return out.String(), err
	}
	for _, bad := range [][]string{
		{"install"},
		{"install", "-origin", "http://vouch.example"},
		{"install", "-origin", "https://vouch.example/login"},
		{"install", "-origin", "https://vouch.example", "-browsers", "lynx"},
		{"install", "-origin", "https://vouch.example", "-browsers", "firefox"},
		{"install", "-origin", "https://vouch.example", "-env", "NOEQUALS"},
	} {
		if out, err := run(nil, bad...); err != exitError(2) {
			t.Errorf("%v: %v %q", bad, err, out)
		}
	}
	// A Firefox manifest an earlier version wrote: removed by install.
	oldFirefox := filepath.Join(home, ".mozilla", "native-messaging-hosts", HostName+".json")
	if err := os.MkdirAll(filepath.Dir(oldFirefox), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldFirefox, []byte(`{"allowed_extensions":["cardagent@vouch-nl.github.io"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(nil, "install", "-origin", "https://vouch.example", "-module", man.Module,
		"-env", "SOFTHSM2_CONF="+man.SoftHSMConf, "-path", "/opt/vouch/cardagent"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if _, err := os.Stat(oldFirefox); !os.IsNotExist(err) {
		t.Errorf("the Firefox host manifest is still there: %v", err)
	}
	var m struct {
		Name, Path, Type  string
		AllowedOrigins    []string `json:"allowed_origins"`
		AllowedExtensions []string `json:"allowed_extensions"`
	}
	for dir, want := range map[string]string{
		".config/chromium/NativeMessagingHosts":      "chrome-extension://" + ExtensionID + "/",
		".config/google-chrome/NativeMessagingHosts": "chrome-extension://" + ExtensionID + "/",
	} {
		b, err := os.ReadFile(filepath.Join(home, dir, HostName+".json"))
		if err != nil {
			t.Fatal(err)
		}
		m.AllowedOrigins, m.AllowedExtensions = nil, nil
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Name != HostName || m.Path != "/opt/vouch/cardagent" || m.Type != "stdio" || len(m.AllowedOrigins)+len(m.AllowedExtensions) != 1 ||
			(len(m.AllowedOrigins) == 1 && m.AllowedOrigins[0] != want) || (len(m.AllowedExtensions) == 1 && m.AllowedExtensions[0] != want) {
			t.Errorf("%s: %s", dir, b)
		}
	}

	var req bytes.Buffer
	if err := cardagent.WriteMessage(&req, cardagent.Request{ID: "1", Type: cardagent.TypeCards, Origin: "https://vouch.example"}); err != nil {
		t.Fatal(err)
	}
	out, err := run(req.Bytes(), "chrome-extension://"+ExtensionID+"/")
	if err != nil {
		t.Fatalf("host: %v %s", err, out)
	}
	// A reply may be larger than a request: read its length by hand.
	if len(out) < 4 || int(binary.LittleEndian.Uint32([]byte(out[:4]))) != len(out)-4 || !strings.Contains(out, `"holder":"A. Huisarts"`) {
		t.Fatalf("host answered %.300q", out)
	}
	// Started for another extension, it serves nothing; nor as Firefox
	// starts a host (a manifest's path and the add-on id), whatever the
	// id.
	for _, args := range [][]string{
		{"chrome-extension://abcdefghijklmnopabcdefghijklmnop/"},
		{filepath.Join(home, ".mozilla/native-messaging-hosts", HostName+".json"), "cardagent@vouch-nl.github.io"},
		{"/usr/lib/mozilla/native-messaging-hosts/" + HostName + ".json", ExtensionID},
	} {
		if out, err := run(req.Bytes(), args...); err != exitError(2) || strings.Contains(out, "Huisarts") {
			t.Errorf("%v: %v %q", args, err, out)
		}
	}
}

// replies splits what the host wrote into its messages.
func replies(t *testing.T, out []byte) []cardagent.Response {
	t.Helper()
	var rs []cardagent.Response
	for len(out) > 0 {
		if len(out) < 4 {
			t.Fatalf("a truncated reply: %q", out)
		}
		n := int(binary.LittleEndian.Uint32(out))
		if len(out) < 4+n {
			t.Fatalf("a truncated reply: %q", out)
		}
		var r cardagent.Response
		if err := json.Unmarshal(out[4:4+n], &r); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
		out = out[4+n:]
	}
	return rs
}

// TestHostOpensModuleOnlyForConfiguredOrigin: the host tells the
// extension its origins, and refuses another origin, without opening the
// PKCS#11 module (here one that does not exist: a host that opened it at
// its start would not answer at all); a request of the configured origin
// then tries it, and fails as a card error, without ending the host.
func TestHostOpensModuleOnlyForConfiguredOrigin(t *testing.T) {
	t.Setenv("VOUCH_CARDAGENT_CONFIG", filepath.Join(t.TempDir(), "cardagent.json"))
	var out bytes.Buffer
	if err := realMain(context.Background(), []string{"install", "-origin", "https://vouch.example", "-origin", "http://127.0.0.1:8080",
		"-module", "/nonexistent/pkcs11.so", "-manifest-dir", t.TempDir()}, nil, &out, &out); err != nil {
		t.Fatalf("%v %s", err, out.String())
	}
	var in bytes.Buffer
	for _, r := range []cardagent.Request{
		{ID: "1", Type: cardagent.TypeOrigins},
		{ID: "2", Type: cardagent.TypeCards, Origin: "https://evil.example"},
		{ID: "3", Type: cardagent.TypeCards, Origin: "https://vouch.example"},
		{ID: "4", Type: cardagent.TypeOrigins},
	} {
		if err := cardagent.WriteMessage(&in, r); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := realMain(context.Background(), []string{"chrome-extension://" + ExtensionID + "/"}, &in, &stdout, &stderr); err != nil {
		t.Fatalf("host: %v\n%s", err, stderr.String())
	}
	got := replies(t, stdout.Bytes())
	want := []cardagent.Response{
		{ID: "1", Type: "origins", Origins: []string{"https://vouch.example", "http://127.0.0.1:8080"}},
		{ID: "2", Type: "error", Error: cardagent.ErrOrigin},
		{ID: "3", Type: "error", Error: cardagent.ErrCardError},
		{ID: "4", Type: "origins", Origins: []string{"https://vouch.example", "http://127.0.0.1:8080"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got)\n%s\nlog:\n%s", d, stderr.String())
	}
	if !strings.Contains(stderr.String(), "/nonexistent/pkcs11.so") {
		t.Errorf("the log does not say which module failed:\n%s", stderr.String())
	}
}
