// Package phoneapi is the public phone API's wire format, shared by the
// server (internal/ingest) and every client (cmd/phone, the tests, the
// benchmark): paths, JSON bodies, the chaff header and the padding rules
// that make real and chaff exchanges, and pending and ready pickups, the
// same size on the wire. docs/openapi.yaml describes the same.
package phoneapi

import (
	"strings"
)

// Paths.
const (
	PathPickup  = "/v1/pickup"
	PathUploads = "/v1/uploads"
	PathOpenAPI = "/openapi.yaml"
)

// HeaderChaff is sent with every request: "0" for a real one, "1" for
// chaff that only makes traffic look alike. The values have the same
// length, so the header alone tells nothing (a pentest told the German
// server's chaff apart by its header's length: cwa-verification-server#205).
const (
	HeaderChaff = "X-Chaff"
	ChaffReal   = "0"
	ChaffFake   = "1"
)

// Statuses in responses.
const (
	StatusPending   = "pending"   // pickup: not vouched yet, ask again later
	StatusReady     = "ready"     // pickup: the bundle is here
	StatusPublished = "published" // upload: the keys are on the bus
)

// PickupRequest asks for the bundle of the phone with PublicKey. Signature
// is Ed25519 over protocol.PickupMessage(PublicKey, Time).
type PickupRequest struct {
	PublicKey []byte `json:"public_key"`
	Time      int64  `json:"time"` // Unix seconds
	Signature []byte `json:"signature"`
	Padding   string `json:"padding"`
}

// PickupResponse is "pending" or "ready" with the bundle.
type PickupResponse struct {
	Status  string `json:"status"`
	Bundle  []byte `json:"bundle,omitempty"`
	Padding string `json:"padding"`
}

// Key is one temporary exposure key on the wire.
type Key struct {
	Key                        []byte `json:"key"` // 16 bytes
	RollingStartIntervalNumber int32  `json:"rolling_start_interval_number"`
	RollingPeriod              int32  `json:"rolling_period"`
	TransmissionRisk           int32  `json:"transmission_risk"`
}

// UploadRequest publishes Keys with the bundle the phone picked up.
// Signature is Ed25519 over protocol.Upload{Bundle, PublicKey, Time,
// Keys}.Marshal().
type UploadRequest struct {
	Bundle    []byte `json:"bundle"`
	PublicKey []byte `json:"public_key"`
	Time      int64  `json:"time"`
	Keys      []Key  `json:"keys"`
	Signature []byte `json:"signature"`
	Padding   string `json:"padding"`
}

// UploadResponse says the keys were accepted and the bus holds them.
type UploadResponse struct {
	Status  string `json:"status"`
	Padding string `json:"padding"`
}

// ErrorResponse is every refusal: a stable code for programs and a text for
// a phone's developer; never an internal error's text.
type ErrorResponse struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Padding string `json:"padding"`
}

// Sizes every body is padded to, in bytes: the smallest multiple of the
// block that holds it. A request's block is the same for real and chaff;
// a response's the same for pending and ready, success and refusal.
const (
	PickupRequestBlock   = 512
	UploadRequestBlock   = 8 << 10
	PickupResponseBlock  = 4 << 10
	UploadResponseBlock  = 512
	MaxPickupRequestSize = 4 << 10
	MaxUploadRequestSize = 64 << 10
)

// PadLen is how many padding characters bring a body of n bytes, whose
// padding field is empty, to the next multiple of block.
func PadLen(n, block int) int {
	if r := n % block; r != 0 {
		return block - r
	}
	return 0
}

// Padding is n characters of padding.
func Padding(n int) string { return strings.Repeat("=", n) }
