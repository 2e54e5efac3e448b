package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const dashboardFile = "grafana/vouch.json"

type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"` // a collapsed row's
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// TestDashboard: the dashboard is JSON Grafana can import, every panel
// queries something, every query is PromQL promtool accepts and names only
// metrics the code exports, and the pipeline and the back office are both
// on it.
func TestDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("%s: no title or uid (Grafana keys an imported dashboard by its uid)", dashboardFile)
	}
	defined := definedMetrics(t)
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	ids := map[int]bool{}
	var rules []map[string]string
	var exprs strings.Builder
	for _, p := range all {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || len(p.Targets) == 0 {
			t.Errorf("panel %d (%q): a panel needs a title and a query", p.ID, p.Title)
		}
		for _, q := range p.Targets {
			if u := unknownMetrics(q.Expr, defined); len(u) > 0 {
				t.Errorf("panel %q queries metrics the code does not export: %s", p.Title, strings.Join(u, ", "))
			}
			// Grafana's interval variables, as a query would see them.
			expr := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m").Replace(q.Expr)
			rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:panel_%d_%s", p.ID, q.RefID), "expr": expr})
			exprs.WriteString(q.Expr + "\n")
		}
	}
	for _, m := range []string{"vouch_ingest_uploads_total", "vouch_ingest_pickups_total", "vouch_store_lag_messages",
		"vouch_store_batches_total", "vouch_export_runs_total", "vouch_export_keys_published", "vouch_export_free_bytes",
		"vouch_backoffice_signins_total", "vouch_backoffice_vouches_total", "vouch_http_request_duration_seconds_bucket",
		"vouch_crl_next_update_timestamp_seconds", "vouch_audit_chain_ok", "vouch_registry_sync_last_success_timestamp_seconds"} {
		if !strings.Contains(exprs.String(), m) {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
	// promtool parses PromQL when it checks recording rules.
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), out, 0o600); err != nil {
		t.Fatal(err)
	}
	if res, ok := runPromtool(t, dir, "check", "rules", "dashboard.yml"); !ok {
		t.Errorf("the dashboard's queries do not parse as PromQL:\n%s", res)
	}
}
