package registrysync

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vouch-nl/vouch/internal/revocation"
)

// TestReadCRLBounded shows that a CRL source, file or download, is read up to
// revocation.MaxCRLSize and not a byte further than one past it.
func TestReadCRLBounded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sparse := func(name string, size int64) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil { // sparse: no disk used
			t.Fatal(err)
		}
		return path
	}
	// An endless download: the server writes until the client hangs up.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		name, src string
		wantErr   string // "" reads revocation.MaxCRLSize bytes
	}{
		{"file at the limit", sparse("at.crl", revocation.MaxCRLSize), ""},
		{"file:// at the limit", "file://" + sparse("at2.crl", revocation.MaxCRLSize), ""},
		{"file a byte over", sparse("over.crl", revocation.MaxCRLSize+1), "CRL larger than 32 MiB"},
		{"endless download", srv.URL, "CRL larger than 32 MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := read(context.Background(), tt.src)
			switch {
			case tt.wantErr == "" && (err != nil || len(b) != revocation.MaxCRLSize):
				t.Errorf("read %d bytes (%v), want %d", len(b), err, revocation.MaxCRLSize)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("read %d bytes (%v), want an error %q", len(b), err, tt.wantErr)
			}
		})
	}
}
