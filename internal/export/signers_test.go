package export

import (
	"strings"
	"testing"
)

// TestOpenSignersErrors: a key that cannot be opened is an error naming
// the setting, not a panic (every error return once called a nil close).
func TestOpenSignersErrors(t *testing.T) {
	t.Parallel()
	for name, uri := range map[string]string{
		"bad URI":        "not-a-pkcs11-uri",
		"missing module": "pkcs11:token=t;object=k?module-path=" + t.TempDir() + "/no-such-module.so",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			signers, release, err := OpenSigners(Config{KeyURIs: []string{uri}})
			if err == nil || signers != nil || release != nil {
				t.Fatalf("got %v, %v, %v; want an error alone", signers, release != nil, err)
			}
			if !strings.Contains(err.Error(), "export signing key") && !strings.Contains(err.Error(), "VOUCH_EXPORT_KEY_URIS") {
				t.Errorf("error %q names neither the key nor VOUCH_EXPORT_KEY_URIS", err)
			}
		})
	}
}
