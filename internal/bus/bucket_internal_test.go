package bus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Only the server's "error creating store" is asked again: any other
// refusal of a bucket's creation is final.
func TestStoreBusyIsOnlyThatError(t *testing.T) {
	t.Parallel()
	busy := fmt.Errorf("wrapped: %w", &jetstream.APIError{Code: 500, ErrorCode: 10049, Description: "error creating store for stream"})
	other := &jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use"}
	if !isStoreBusy(busy) {
		t.Error("10049 not recognised")
	}
	if isStoreBusy(other) || isStoreBusy(errors.New("10049")) {
		t.Error("another error taken for 10049")
	}
}
