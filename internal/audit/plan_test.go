package audit

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// TestTrailPlansUseIndexes: on a log of many rows (a year at the size of
// a busy deployment when VOUCH_AUDIT_PLAN_ROWS says so; 200,000 by
// default), every filter of the trail reads a page as an index range in
// (at, seq) order, or finds the few rows of a narrow filter by an index —
// never a sequential scan, never thousands of rows read for a page — for
// the first page and one far back. Without migration 018's indexes a page
// of one card holder reads up to the whole year (checked by dropping
// them). The timings are logged (-v) for the record.
func TestTrailPlansUseIndexes(t *testing.T) {
	t.Parallel()
	n := 200_000
	if v := os.Getenv("VOUCH_AUDIT_PLAN_ROWS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			t.Fatal(err)
		}
	}
	db := testenv.Database(t)
	ctx := t.Context()
	// A year of rows, one every year/n: 200 card holders, the actions and
	// reasons in the proportions of a working back office. The hashes are
	// not a chain: the plan does not read them.
	if _, err := db.Pool().Exec(ctx, `insert into audit_log (seq, at, actor, action, reason, ip, prev_hash, hash)
		select i, now() - interval '365 days' + (i * interval '365 days' / $1),
			(900000000 + i % 200)::text,
			(array['sign-in','vouch','vouch','vouch','lock','unlock','sign-out','vouch-refused','sign-in-refused','access-refused'])[1 + i % 10],
			case when i % 10 >= 7 then (array['quota-reached','cert-revoked','role-missing'])[1 + i % 3] end,
			'192.0.2.1', null, '\x00'
		from generate_series(1, $1) i`, n); err != nil {
		t.Fatal(err)
	}
	// And a card holder seen in the year's first days only, whose rows an
	// index on time alone would find after reading the whole year.
	if _, err := db.Pool().Exec(ctx, `insert into audit_log (seq, at, actor, action, prev_hash, hash)
		select $1 + i, now() - interval '364 days' + i * interval '1 hour', '900009999', 'sign-in', null, '\x00'
		from generate_series(1, 20) i`, n); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool().Exec(ctx, `analyze audit_log`); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	far := &Cursor{At: now.AddDate(0, -6, 0), Seq: int64(n / 2)}
	filters := map[string]Filter{
		"none":           {UpTo: int64(n)},
		"rare actor":     {Actor: "900009999"},
		"time":           {From: now.AddDate(0, -3, 0), To: now.AddDate(0, -2, 0), UpTo: int64(n)},
		"actor":          {Actor: "900000042", UpTo: int64(n)},
		"action":         {Action: "sign-out", UpTo: int64(n)},
		"reason":         {Reason: "cert-revoked", UpTo: int64(n)},
		"refused":        {Result: ResultRefused, UpTo: int64(n)},
		"ok":             {Result: ResultOK, UpTo: int64(n)},
		"actor and time": {Actor: "900000042", From: now.AddDate(0, -1, 0), UpTo: int64(n)},
		"action reason":  {Action: "vouch-refused", Reason: "quota-reached", UpTo: int64(n)},
	}
	for name, f := range filters {
		for _, after := range []*Cursor{nil, far} {
			sql, args := pageSQL(f, after, nil, 51)
			var plan []map[string]any
			var raw []byte
			if err := db.Pool().QueryRow(ctx, "explain (analyze, format json) "+sql, args...).Scan(&raw); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if err := json.Unmarshal(raw, &plan); err != nil {
				t.Fatal(err)
			}
			nodes, read := planNodes(plan[0]["Plan"].(map[string]any))
			// A sort is fine over what an index found (the planner sorts
			// the few rows of a narrow filter); a sequential scan is not,
			// nor reading thousands of rows to show 50.
			if strings.Contains(nodes, "Seq Scan") || read > maxRead {
				t.Errorf("%s (far back %v): %.0f rows read, plan %s", name, after != nil, read, nodes)
			}
			t.Logf("%d rows, %s (far back %v): %.2f ms, %.0f rows read, %s", n, name, after != nil, plan[0]["Execution Time"], read, nodes)
		}
	}
}

// maxRead bounds the rows a page's plan may read (kept and filtered out)
// to show 51: a combined filter's index finds its rows among a few
// thousand; without migration 018 an uncommon card holder's page reads
// the whole year.
const maxRead = 5000

// planNodes lists a plan's node types and the indexes they use, and how
// many rows its scans read (kept, and removed by their filter).
func planNodes(p map[string]any) (string, float64) {
	s := p["Node Type"].(string)
	var read float64
	if ix, ok := p["Index Name"].(string); ok {
		s += " on " + ix
	}
	if strings.Contains(s, "Scan") {
		kept, _ := p["Actual Rows"].(float64)
		removed, _ := p["Rows Removed by Filter"].(float64)
		read += kept + removed
	}
	if kids, ok := p["Plans"].([]any); ok {
		for _, k := range kids {
			ks, kr := planNodes(k.(map[string]any))
			s += " > " + ks
			read += kr
		}
	}
	return s, read
}
