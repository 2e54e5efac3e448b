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
		{"install", "-origin", "https://vouch.example", "-env", "NOEQUALS"},
	} {
		if out, err := run(nil, bad...); err != exitError(2) {
			t.Errorf("%v: %v %q", bad, err, out)
		}
	}
	if out, err := run(nil, "install", "-origin", "https://vouch.example", "-module", man.Module,
		"-env", "SOFTHSM2_CONF="+man.SoftHSMConf, "-path", "/opt/vouch/cardagent"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var m struct {
		Name, Path, Type  string
		AllowedOrigins    []string `json:"allowed_origins"`
		AllowedExtensions []string `json:"allowed_extensions"`
	}
	for dir, want := range map[string]string{
		".config/chromium/NativeMessagingHosts":      "chrome-extension://" + ExtensionID + "/",
		".config/google-chrome/NativeMessagingHosts": "chrome-extension://" + ExtensionID + "/",
		".mozilla/native-messaging-hosts":            FirefoxExtensionID,
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
	// Started for another extension, it serves nothing.
	if out, err := run(req.Bytes(), "chrome-extension://abcdefghijklmnopabcdefghijklmnop/"); err != exitError(2) || strings.Contains(out, "Huisarts") {
		t.Errorf("another extension: %v %q", err, out)
	}
}
