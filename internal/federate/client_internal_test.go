package federate

import (
	"net/http"
	"testing"
	"time"
)

// TestNewClientTimeout: without a client of its own, a pull gives up on a
// site that stops answering after 60 seconds instead of hanging for ever;
// a client passed in is used as it is.
func TestNewClientTimeout(t *testing.T) {
	t.Parallel()
	p, err := New(nil, nil, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if p.client.Timeout != 60*time.Second {
		t.Errorf("default client timeout %s, want 60s", p.client.Timeout)
	}
	own := &http.Client{Timeout: time.Second}
	if p, err = New(nil, own, Config{}); err != nil || p.client != own {
		t.Errorf("New with a client: %v; want that client used", err)
	}
}
