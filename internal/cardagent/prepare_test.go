package cardagent

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/protocol"
)

// TestAgentClockSkew: a statement issued within MaxClockSkew of the agent's
// clock, either way, is signed; one just beyond it is not.
func TestAgentClockSkew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		shift time.Duration // of the statement's issue and expiry
		want  string        // "" a signature, or the error
	}{
		{"now", 0, ""},
		{"issued a while ago", -MaxClockSkew + time.Minute, ""},
		{"issued at the oldest", -MaxClockSkew, ""},
		{"issued just too long ago", -MaxClockSkew - time.Second, ErrStale},
		{"the agent's clock behind", MaxClockSkew - time.Minute, ""},
		{"issued at the latest", MaxClockSkew, ""},
		{"issued just too late", MaxClockSkew + time.Second, ErrStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeCards{cards: []Card{gpCard}}
			st := statement(t, func(s *protocol.Statement) {
				s.IssuedAt, s.ExpiresAt = s.IssuedAt.Add(tt.shift), s.ExpiresAt.Add(tt.shift)
			})
			resp := newAgent(t, f).Handle(context.Background(), Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement, Statement: st, PIN: "1"})
			switch {
			case tt.want == "" && (resp.Type != "signature" || len(f.signed) != 1):
				t.Errorf("%+v, want a signature", resp)
			case tt.want != "" && (resp.Error != tt.want || len(f.signed) != 0):
				t.Errorf("%+v, want %s", resp, tt.want)
			}
		})
	}
}

// TestAgentValidity: a statement valid for at most protocol.MaxValidity
// after its issue is signed.
func TestAgentValidity(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		validity time.Duration
		want     string
	}{
		{time.Second, ""},
		{protocol.MaxValidity, ""},
		{protocol.MaxValidity + time.Second, ErrStale}, // the encoding has seconds
		{0, ErrStale},
		{-time.Hour, ErrStale},
	} {
		f := &fakeCards{cards: []Card{gpCard}}
		st := statement(t, func(s *protocol.Statement) { s.ExpiresAt = s.IssuedAt.Add(tt.validity) })
		resp := newAgent(t, f).Handle(context.Background(), Request{Type: TypeSign, Origin: origin, Token: "tok-gp", Kind: KindStatement, Statement: st, PIN: "1"})
		if resp.Error != tt.want || (tt.want == "") != (len(f.signed) == 1) {
			t.Errorf("valid for %s: %+v, want %q", tt.validity, resp, tt.want)
		}
	}
}

func TestNewChecksLoopbackOrigins(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"http://[::1]:8080", true},
		{"http://localhost", true},
		{"http://127.0.0.1", true},
		{"http://127.0.0.2:8080", false},
		{"http://localhost.example", false},
		{"ftp://vouch.example", false},
		{"HTTPS://vouch.example", false}, // not as a browser writes it
	} {
		_, err := New([]string{tt.origin}, &fakeCards{}, slog.New(slog.DiscardHandler))
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok %v", tt.origin, err, tt.ok)
		}
	}
}
