package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestThreatModelNamesRealTests: every test docs/threat-model.md names as
// proof exists, in the package or file it is named with, so a renamed or
// deleted test cannot leave a claim standing without its proof.
func TestThreatModelNamesRealTests(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docs/threat-model.md")
	if err != nil {
		t.Fatal(err)
	}
	// Where each test function is defined, by directory and by file.
	def := regexp.MustCompile(`(?m)^func (Test\w+)\(`)
	where := map[string][]string{}
	err = filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", path)
		for _, m := range def.FindAllSubmatch(src, -1) {
			where[string(m[1])] = append(where[string(m[1])], filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// One line per paragraph, so that a name and its tests may wrap.
	text := regexp.MustCompile(`\n[ \t]*`).ReplaceAllString(string(b), " ")
	named := regexp.MustCompile(`\*\*(Test\w+)\*\*`).FindAllStringSubmatch(text, -1)
	if len(named) < 20 {
		t.Fatalf("only %d tests named: the pattern no longer matches the document", len(named))
	}
	for _, m := range named {
		if len(where[m[1]]) == 0 {
			t.Errorf("docs/threat-model.md names %s, which no test file defines", m[1])
		}
	}
	// `place` **TestA**, **TestB**: each in that package directory or file.
	group := regexp.MustCompile("`([a-z0-9_./-]+)`\\s+((?:\\*\\*Test\\w+\\*\\*(?:,\\s*|\\s+)?)+)")
	for _, g := range group.FindAllStringSubmatch(text, -1) {
		place := g[1]
		for _, m := range regexp.MustCompile(`Test\w+`).FindAllString(g[2], -1) {
			ok := false
			for _, f := range where[m] {
				if f == place || filepath.ToSlash(filepath.Dir(f)) == place {
					ok = true
				}
			}
			if !ok && len(where[m]) > 0 {
				t.Errorf("docs/threat-model.md puts %s in %s; it is in %s", m, place, strings.Join(where[m], ", "))
			}
		}
	}
}
