package deploy

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "prometheus/alerts.yml"
	ruleTestsFile = "prometheus/alerts_test.yml"
	operationsDoc = "../docs/operations.md"
)

// promtool is the path of Debian's promtool, or the test fails saying how
// to get it: the rules are part of the suite, not optional.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found (%v): run `make deps`, which installs Debian's prometheus package", err)
	}
	return p
}

// runPromtool runs promtool with args in dir and returns its output and
// whether it succeeded.
func runPromtool(t *testing.T, dir string, args ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("promtool %s: no answer within 2 minutes:\n%s", strings.Join(args, " "), out)
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("promtool %s: %v", strings.Join(args, " "), err)
	}
	return string(out), err == nil
}

func TestAlertRulesPassPromtool(t *testing.T) {
	t.Parallel()
	if out, ok := runPromtool(t, ".", "check", "rules", rulesFile); !ok {
		t.Fatalf("promtool check rules %s:\n%s", rulesFile, out)
	}
	if out, ok := runPromtool(t, ".", "test", "rules", ruleTestsFile); !ok {
		t.Fatalf("promtool test rules %s:\n%s", ruleTestsFile, out)
	}
}

// ruleFile and ruleTests are the parts of the two files the tests read;
// the rest goes through as yaml.Node untouched.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

type ruleTests struct {
	RuleFiles          []string    `yaml:"rule_files"`
	EvaluationInterval string      `yaml:"evaluation_interval"`
	Tests              []testGroup `yaml:"tests"`
}

type testGroup struct {
	Interval      string      `yaml:"interval"`
	InputSeries   []yaml.Node `yaml:"input_series"`
	AlertRuleTest []ruleTest  `yaml:"alert_rule_test"`
}

type ruleTest struct {
	EvalTime  string      `yaml:"eval_time"`
	AlertName string      `yaml:"alertname"`
	ExpAlerts []yaml.Node `yaml:"exp_alerts"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s holds no rules", rulesFile)
	}
	return rules
}

// TestAlertsHaveRunbooks: every alert says how bad it is, what it means
// and what to do, and links its section of docs/operations.md, which
// exists.
func TestAlertsHaveRunbooks(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatalf("the runbook links point into %s: %v", operationsDoc, err)
	}
	headings := map[string]bool{}
	for _, l := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(l, "### "); ok {
			headings[strings.TrimSpace(h)] = true
		}
	}
	seen := map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			t.Errorf("a rule that is not an alert (%q): this file holds alerts only", r.Expr)
			continue
		}
		if seen[r.Alert] {
			t.Errorf("%s: two alerts of that name", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "page" && s != "ticket" {
			t.Errorf("%s: severity %q, want page or ticket", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s", r.Alert, a)
			}
		}
		if want := "docs/operations.md#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
		}
		if !headings[r.Alert] {
			t.Errorf("%s: %s has no section \"### %s\" for its runbook link", r.Alert, operationsDoc, r.Alert)
		}
	}
}

// TestAlertTestsCatchBrokenRules holds the unit tests to their word: for
// each alert, its cases alone pass against it alone, and fail when its
// expression never fires and when it always fires, so every alert has a
// case where it must fire and one where it must not.
func TestAlertTestsCatchBrokenRules(t *testing.T) {
	t.Parallel()
	var tests ruleTests
	readYAML(t, ruleTestsFile, &tests)
	rules := alertRules(t)
	known := map[string]bool{}
	for _, r := range rules {
		known[r.Alert] = true
	}
	for _, g := range tests.Tests {
		for _, a := range g.AlertRuleTest {
			if !known[a.AlertName] {
				t.Errorf("%s tests %s, which %s does not define", ruleTestsFile, a.AlertName, rulesFile)
			}
		}
	}
	for _, r := range rules {
		t.Run(r.Alert, func(t *testing.T) {
			t.Parallel()
			var own ruleTests
			own.RuleFiles = []string{"rules.yml"}
			own.EvaluationInterval = tests.EvaluationInterval
			for _, g := range tests.Tests {
				g.AlertRuleTest = slices.DeleteFunc(slices.Clone(g.AlertRuleTest), func(a ruleTest) bool { return a.AlertName != r.Alert })
				if len(g.AlertRuleTest) > 0 {
					own.Tests = append(own.Tests, g)
				}
			}
			if len(own.Tests) == 0 {
				t.Fatalf("%s has no case in %s", r.Alert, ruleTestsFile)
			}
			dir := t.TempDir()
			write := func(name string, v any) {
				b, err := yaml.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			write("tests.yml", own)
			for _, m := range []struct {
				name, expr string
				pass       bool
			}{
				{"as written", r.Expr, true},
				{"never firing", "vector(1) < 0", false},
				{"always firing", "vector(1)", false},
			} {
				mutated := r
				mutated.Expr = m.expr
				write("rules.yml", map[string]any{"groups": []any{map[string]any{"name": "one", "rules": []rule{mutated}}}})
				out, ok := runPromtool(t, dir, "test", "rules", "tests.yml")
				switch {
				case m.pass && !ok:
					t.Errorf("%s's own cases fail against it alone:\n%s", r.Alert, out)
				case !m.pass && ok:
					t.Errorf("%s's cases still pass with the expression %s (%q): they do not test it", r.Alert, m.name, m.expr)
				}
			}
		})
	}
}

// metricName matches the names of the series Vouch exports as they appear
// in a query or a text: vouch_…, and the Go runtime's and the process's.
var metricName = regexp.MustCompile(`\b(?:vouch|go|process)_[a-z0-9_]+\b`)

// definedMetrics is every metric name the code defines: the Name of each
// collector in the non-test sources of internal/ and cmd/, and the Go and
// process collectors' names when cmd/vouch registers them.
func definedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	def := regexp.MustCompile(`Name:\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
	names := map[string]bool{}
	runtime := false
	for _, root := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range def.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
			if strings.Contains(string(b), "collectors.NewGoCollector(") && strings.Contains(string(b), "collectors.NewProcessCollector(") {
				runtime = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !names["vouch_http_requests_total"] {
		t.Fatalf("no vouch_http_requests_total among the names found in the sources (%d): the search for metric definitions is broken", len(names))
	}
	if runtime {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
	}
	return names
}

// unknownMetrics lists the names in text that the code does not define; a
// histogram's series (_bucket, _sum, _count) count as the histogram.
func unknownMetrics(text string, defined map[string]bool) []string {
	var unknown []string
	for _, n := range metricName.FindAllString(text, -1) {
		base := n
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(n, s); ok && defined[b] {
				base = b
			}
		}
		if !defined[base] && !slices.Contains(unknown, n) {
			unknown = append(unknown, n)
		}
	}
	return unknown
}

func TestAlertMetricsExist(t *testing.T) {
	t.Parallel()
	defined := definedMetrics(t)
	// The check itself: a name nobody defines is caught.
	if u := unknownMetrics(`rate(vouch_no_such_thing_total[5m]) and vouch_http_request_duration_seconds_bucket`, defined); !slices.Equal(u, []string{"vouch_no_such_thing_total"}) {
		t.Fatalf("unknownMetrics found %q, want only vouch_no_such_thing_total", u)
	}
	for _, f := range []string{rulesFile, ruleTestsFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if u := unknownMetrics(string(b), defined); len(u) > 0 {
			t.Errorf("%s names metrics the code does not export: %s", f, strings.Join(u, ", "))
		}
	}
}

// TestAlertVariablesExist: the variables (and the stream) the rules and
// their runbooks tell an operator to look at are ones the code reads: an
// env tag, a listener prefix and its tag, or a name the code spells out.
func TestAlertVariablesExist(t *testing.T) {
	t.Parallel()
	tag := regexp.MustCompile(`env:"([A-Z][A-Z0-9_]*)`)
	prefix := regexp.MustCompile(`prefix=([A-Z][A-Z0-9_]*)`)
	literal := regexp.MustCompile(`"(VOUCH_[A-Z0-9_]+)"`)
	tags, prefixes, literals := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, root := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for re, set := range map[*regexp.Regexp]map[string]bool{tag: tags, prefix: prefixes, literal: literals} {
				for _, m := range re.FindAllSubmatch(b, -1) {
					set[string(m[1])] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	known := func(name string) bool {
		if tags[name] || literals[name] {
			return true
		}
		for p := range prefixes {
			if rest, ok := strings.CutPrefix(name, p); ok && tags[rest] {
				return true
			}
		}
		return false
	}
	if !known("VOUCH_EXPORT_PERIOD") || !known("VOUCH_HTTP_MAX_BODIES") || known("VOUCH_NO_SUCH_SETTING") {
		t.Fatal("the search for the code's variables is broken")
	}
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	_, alerts, _ := strings.Cut(string(doc), "\n## Alerts\n")
	alerts, _, _ = strings.Cut(alerts, "\n## ")
	if strings.TrimSpace(alerts) == "" {
		t.Fatalf("%s has no ## Alerts section", operationsDoc)
	}
	for name, text := range map[string]string{rulesFile: string(rules), operationsDoc + " ## Alerts": alerts} {
		for _, v := range regexp.MustCompile(`VOUCH_[A-Z0-9_]*[A-Z0-9]`).FindAllString(text, -1) {
			if !known(v) {
				t.Errorf("%s names %s, which the code does not read", name, v)
			}
		}
	}
}
