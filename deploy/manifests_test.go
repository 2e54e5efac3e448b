package deploy

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	"golang.org/x/mod/sumdb/note"

	"github.com/vouch-nl/vouch/internal/testenv"
)

// The cluster layouts (compose.yaml, k8s/) are held to the code: every
// image is one make images builds, every role's environment passes `vouch
// config check ROLE` (which also names any variable the role does not
// read), every port is the one the role listens on, the probes are on the
// operations listener and nothing publishes it, and the NetworkPolicies
// keep the public front apart.

const (
	composeFile = "compose.yaml"
	k8sDir      = "k8s"
	imagesShell = "images.sh"
)

// publicAddr is the variable of each role's public listener.
var publicAddr = map[string]string{"ingest": "VOUCH_INGEST_ADDR", "backoffice": "VOUCH_HTTP_ADDR", "cdn": "VOUCH_CDN_ADDR"}

// workload is one vouch container as a manifest runs it.
type workload struct {
	where  string // file and name, for messages
	role   string
	env    map[string]string
	ports  []int  // compose: expose; k8s: containerPorts
	opsIn  string // k8s: the port the probes use ("" none)
	probes map[string]string
	public []int // ports a Service (or a compose ports: entry) publishes
}

// imageRoles are the roles deploy/images.sh builds an image for, each
// with its kind: "static" (FROM scratch) or "cgo" (the Debian base).
func imageRoles(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(imagesShell)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^(static|cgo)_roles=\(([^)]*)\)`).FindAllSubmatch(b, -1) {
		for _, r := range strings.Fields(string(m[2])) {
			roles[r] = string(m[1])
		}
	}
	if len(roles) == 0 {
		t.Fatalf("%s: no static_roles=(...) or cgo_roles=(...)", imagesShell)
	}
	return roles
}

// checkedRoles are the roles `vouch config check` knows, from its usage.
func checkedRoles(t *testing.T, vouch string) map[string]bool {
	t.Helper()
	out, err := exec.Command(vouch, "config", "check", "-h").Output()
	if err != nil {
		t.Fatalf("vouch config check -h: %v", err)
	}
	_, list, ok := strings.Cut(string(out), "Roles: ")
	if !ok {
		t.Fatalf("vouch config check -h lists no roles:\n%s", out)
	}
	roles := map[string]bool{}
	for _, r := range strings.Split(strings.TrimSpace(list), ", ") {
		roles[r] = true
	}
	return roles
}

// roleOfImage is ROLE of vouch-ROLE:TAG, or "" for another image.
func roleOfImage(image string) string {
	name, _, _ := strings.Cut(image, ":")
	role, ok := strings.CutPrefix(name, "vouch-")
	if !ok {
		return ""
	}
	return role
}

func composeWorkloads(t *testing.T) ([]workload, map[string]any) {
	t.Helper()
	var doc map[string]any
	readYAML(t, composeFile, &doc)
	services, _ := doc["services"].(map[string]any)
	if len(services) == 0 {
		t.Fatalf("%s: no services", composeFile)
	}
	var ws []workload
	for name, v := range services {
		s := v.(map[string]any)
		image, _ := s["image"].(string)
		role := roleOfImage(image)
		if role == "" {
			continue
		}
		w := workload{where: composeFile + " " + name, role: role, env: map[string]string{}}
		env, _ := s["environment"].(map[string]any)
		for k, v := range env {
			if k == "<<" {
				continue
			}
			w.env[k] = fmt.Sprint(v)
		}
		for _, p := range asList(s["expose"]) {
			n, _ := strconv.Atoi(fmt.Sprint(p))
			w.ports = append(w.ports, n)
		}
		for _, p := range asList(s["ports"]) {
			// HOST:PUBLISHED:TARGET/PROTO: the container's port is the last.
			spec := fmt.Sprint(p)
			target, _, _ := strings.Cut(spec[strings.LastIndex(spec, ":")+1:], "/")
			n, _ := strconv.Atoi(target)
			w.public = append(w.public, n)
		}
		ws = append(ws, w)
	}
	return ws, doc
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

// k8sObjects are every document of k8s/*.yaml.
func k8sObjects(t *testing.T) []map[string]any {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no %s/*.yaml: %v", k8sDir, err)
	}
	var objs []map[string]any
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o map[string]any
			if err := dec.Decode(&o); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			o["#file"] = f
			objs = append(objs, o)
		}
	}
	return objs
}

// get walks m by keys.
func get(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func k8sWorkloads(t *testing.T, objs []map[string]any) []workload {
	t.Helper()
	// Service target ports by the pods they select.
	type svc struct {
		sel     map[string]any
		targets []string
	}
	var svcs []svc
	for _, o := range objs {
		if o["kind"] != "Service" {
			continue
		}
		s := svc{sel: map[string]any{}}
		if m, ok := get(o, "spec", "selector").(map[string]any); ok {
			s.sel = m
		}
		for _, p := range asList(get(o, "spec", "ports")) {
			tp := str(get(p, "targetPort"))
			if tp == "" {
				tp = str(get(p, "port"))
			}
			s.targets = append(s.targets, tp)
		}
		svcs = append(svcs, s)
	}
	var ws []workload
	for _, o := range objs {
		var pod any
		switch o["kind"] {
		case "Deployment", "StatefulSet", "DaemonSet", "Job":
			pod = get(o, "spec", "template")
		case "CronJob":
			pod = get(o, "spec", "jobTemplate", "spec", "template")
		default:
			continue
		}
		labels, _ := get(pod, "metadata", "labels").(map[string]any)
		for _, c := range asList(get(pod, "spec", "containers")) {
			role := roleOfImage(str(get(c, "image")))
			if role == "" {
				continue
			}
			w := workload{where: fmt.Sprintf("%s %s/%s", o["#file"], str(get(o, "metadata", "name")), str(get(c, "name"))),
				role: role, env: map[string]string{}, probes: map[string]string{}}
			for _, e := range asList(get(c, "env")) {
				if get(e, "valueFrom") != nil {
					t.Errorf("%s: %s comes from valueFrom; Vouch reads secrets from files (%s_FILE)", w.where, str(get(e, "name")), str(get(e, "name")))
				}
				w.env[str(get(e, "name"))] = str(get(e, "value"))
			}
			if get(c, "envFrom") != nil {
				t.Errorf("%s: envFrom hides the variables from this test: name each in env", w.where)
			}
			named := map[string]int{}
			for _, p := range asList(get(c, "ports")) {
				n, _ := strconv.Atoi(str(get(p, "containerPort")))
				w.ports = append(w.ports, n)
				named[str(get(p, "name"))] = n
			}
			portOf := func(v any) string {
				if n, ok := named[str(v)]; ok {
					return strconv.Itoa(n)
				}
				return str(v)
			}
			for _, kind := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
				if p := get(c, kind, "httpGet"); p != nil {
					w.probes[kind] = str(get(p, "path")) + "@" + portOf(get(p, "port"))
				}
			}
			for _, s := range svcs {
				if len(s.sel) > 0 && subset(s.sel, labels) {
					for _, tp := range s.targets {
						n, _ := strconv.Atoi(portOf(tp))
						w.public = append(w.public, n)
					}
				}
			}
			ws = append(ws, w)
		}
	}
	return ws
}

func subset(sel, labels map[string]any) bool {
	for k, v := range sel {
		if str(labels[k]) != str(v) {
			return false
		}
	}
	return true
}

func portOfAddr(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// fixtures makes, under root, a file or directory for every absolute path
// the environment names under /run/secrets, /etc/vouch and /var/lib/vouch,
// and returns env with those paths moved under root. Trust files are the
// test PKI's (testdata/bundle), so the card profile is "test".
func fixtures(t *testing.T, root string, env map[string]string) map[string]string {
	t.Helper()
	files := testenv.Cards(t).TrustFiles()
	cas := map[string]string{}
	for _, c := range files.IssuingCAs {
		cas[string(c.Type)] = c.File
	}
	trust := map[string]string{"roots.pem": files.Roots[0], "care-provider-ca.pem": cas["Z"], "named-employee-ca.pem": cas["N"],
		"nameless-ca.pem": cas["M"], "server-ca.pem": cas["S"], "ca.pem": files.Roots[0]}
	path := regexp.MustCompile(`/(?:run/secrets|etc/vouch|var/lib/vouch)/[^,;& ]*`)
	out := map[string]string{}
	for k, v := range env {
		out[k] = path.ReplaceAllStringFunc(v, func(p string) string {
			local := filepath.Join(root, p)
			if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(p, "/var/lib/vouch/") {
				if err := os.MkdirAll(local, 0o755); err != nil {
					t.Fatal(err)
				}
				return local
			}
			base := filepath.Base(p)
			var content []byte
			switch {
			case trust[base] != "":
				content = readFile(t, trust[base])
			case strings.HasSuffix(base, ".pub.pem"):
				content = readFile(t, filepath.Join("..", "testdata", "bundle", "attestation.pub.pem"))
			case strings.Contains(base, "token"):
				content = []byte(strings.Repeat("t", 40))
			case base == "pgpass":
				content = []byte("*:*:*:vouch:secret\n")
			case base == "transparency_key" || base == "transparency-key":
				// The log's signer key, named by the origin it signs.
				skey, _, err := note.GenerateKey(rand.Reader, env["VOUCH_TRANSPARENCY_ORIGIN"])
				if err != nil {
					t.Fatal(err)
				}
				content = []byte(skey + "\n")
			default:
				content = []byte("secret\n")
			}
			if err := os.WriteFile(local, content, 0o600); err != nil {
				t.Fatal(err)
			}
			return local
		})
	}
	if _, ok := env["VOUCH_UZI_ROOTS"]; ok {
		out["VOUCH_CARD_PROFILE"] = "test"
	}
	return out
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// configCheck runs vouch config check role with exactly env.
func configCheck(vouch, role string, env map[string]string) (string, error) {
	cmd := exec.Command(vouch, "config", "check", role)
	cmd.Env = []string{"HOME=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestManifestsMatchTheCode: every vouch container of compose.yaml and
// k8s/ runs an image make images builds, with an environment `vouch
// config check ROLE` accepts, listens where its ports say, and is probed
// on the operations listener, which no Service or published port exposes.
func TestManifestsMatchTheCode(t *testing.T) {
	t.Parallel()
	vouch := testenv.Build(t, "./cmd/vouch")
	images, checked := imageRoles(t), checkedRoles(t, vouch)
	for r := range images {
		if !checked[r] {
			t.Errorf("%s builds an image for %q, which vouch config check does not know as a role", imagesShell, r)
		}
	}
	cw, _ := composeWorkloads(t)
	kw := k8sWorkloads(t, k8sObjects(t))
	seen := map[string]map[string]bool{composeFile: {}, k8sDir: {}}
	for _, w := range append(cw, kw...) {
		t.Run(strings.ReplaceAll(w.where, "/", "_"), func(t *testing.T) {
			if strings.HasPrefix(w.where, composeFile) {
				seen[composeFile][w.role] = true
			} else {
				seen[k8sDir][w.role] = true
			}
			if images[w.role] == "" {
				t.Fatalf("image vouch-%s: make images builds no such image (%s)", w.role, imagesShell)
			}
			out, err := configCheck(vouch, w.role, fixtures(t, t.TempDir(), w.env))
			if err != nil {
				t.Errorf("vouch config check %s with its environment: %v\n%s", w.role, err, out)
			}
			// Does the role have an operations listener? It reads
			// VOUCH_OPS_LISTEN then.
			probe := map[string]string{"VOUCH_OPS_LISTEN": "127.0.0.1:9090"}
			out, _ = configCheck(vouch, w.role, probe)
			hasOps := !strings.Contains(out, "VOUCH_OPS_LISTEN is set, but")
			ops := portOfAddr(w.env["VOUCH_OPS_LISTEN"])
			switch {
			case hasOps && ops == 0:
				t.Errorf("vouch %s has an operations listener and VOUCH_OPS_LISTEN is not set: on loopback (the default) no probe or Prometheus reaches it", w.role)
			case hasOps && strings.HasPrefix(w.env["VOUCH_OPS_LISTEN"], "127."):
				t.Errorf("VOUCH_OPS_LISTEN=%s: on loopback no probe reaches it", w.env["VOUCH_OPS_LISTEN"])
			}
			if slices.Contains(w.public, ops) && ops != 0 {
				t.Errorf("the operations listener's port %d is published (a Service or ports:): it must stay inside the pod", ops)
			}
			if addrVar := publicAddr[w.role]; addrVar != "" {
				p := portOfAddr(w.env[addrVar])
				if p == 0 {
					t.Errorf("%s is not set to HOST:PORT (got %q): the default is loopback", addrVar, w.env[addrVar])
				} else if !slices.Contains(w.ports, p) {
					t.Errorf("%s listens on %d, which is not among the container's ports %v", addrVar, p, w.ports)
				}
			}
			for _, p := range w.ports {
				if p != ops && p != portOfAddr(w.env[publicAddr[w.role]]) {
					t.Errorf("port %d is neither %s's listener nor the operations listener", p, w.role)
				}
			}
			if strings.HasPrefix(w.where, k8sDir) && w.probes != nil {
				want := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
				for kind, path := range want {
					got := w.probes[kind]
					switch {
					case !hasOps && got != "":
						t.Errorf("%s %s: vouch %s has no operations listener", kind, got, w.role)
					case hasOps && got != path+"@"+strconv.Itoa(ops):
						t.Errorf("%s is %q, want %s on the operations listener's port %d", kind, got, path, ops)
					}
				}
			}
		})
	}
	// The cluster of issue 20: every server role has its copies.
	for where, roles := range seen {
		for _, r := range []string{"ingest", "store", "aggregate", "cdn", "backoffice", "registry-sync", "cleanup", "federate"} {
			if !roles[r] {
				t.Errorf("%s runs no vouch %s", where, r)
			}
		}
	}
}

// TestManifestsCatchWrongEnvironments: the check above fails on a
// misspelt variable, another role's variable, and a bad value, so a
// manifest that drifts from the code cannot pass.
func TestManifestsCatchWrongEnvironments(t *testing.T) {
	t.Parallel()
	vouch := testenv.Build(t, "./cmd/vouch")
	cw, _ := composeWorkloads(t)
	var ingest workload
	for _, w := range cw {
		if w.role == "ingest" {
			ingest = w
		}
	}
	if ingest.role == "" {
		t.Fatal("compose.yaml has no ingest")
	}
	for name, edit := range map[string][2]string{
		"misspelt":     {"VOUCH_INGEST_ADRR", "0.0.0.0:8081"},
		"other role's": {"VOUCH_EXPORT_DIR", "/var/lib/vouch/export"},
		"bad value":    {"VOUCH_BUS_REPLICAS", "2"},
	} {
		env := map[string]string{edit[0]: edit[1]}
		for k, v := range ingest.env {
			if _, ok := env[k]; !ok {
				env[k] = v
			}
		}
		out, err := configCheck(vouch, "ingest", fixtures(t, t.TempDir(), env))
		if err == nil || !strings.Contains(out, edit[0]) {
			t.Errorf("%s: ingest with %s=%s passed, or the output does not name it: %v\n%s", name, edit[0], edit[1], err, out)
		}
	}
}

// policy is a NetworkPolicy, reduced to what the rules below need.
type policy struct {
	name    string
	sel     map[string]any // podSelector
	types   []string
	ingress []any
	egress  []any
}

// selects reports whether p applies to pods labelled labels.
func (p policy) selects(labels map[string]string) bool {
	if ml, ok := p.sel["matchLabels"].(map[string]any); ok {
		for k, v := range ml {
			if labels[k] != str(v) {
				return false
			}
		}
	}
	for _, e := range asList(p.sel["matchExpressions"]) {
		key, op := str(get(e, "key")), str(get(e, "operator"))
		var vals []string
		for _, v := range asList(get(e, "values")) {
			vals = append(vals, str(v))
		}
		in := slices.Contains(vals, labels[key])
		if (op == "In" && !in) || (op == "NotIn" && in) {
			return false
		}
	}
	return true
}

func policies(t *testing.T, objs []map[string]any) []policy {
	t.Helper()
	var ps []policy
	for _, o := range objs {
		if o["kind"] != "NetworkPolicy" {
			continue
		}
		p := policy{name: str(get(o, "metadata", "name")), ingress: asList(get(o, "spec", "ingress")), egress: asList(get(o, "spec", "egress"))}
		p.sel, _ = get(o, "spec", "podSelector").(map[string]any)
		if p.sel == nil {
			t.Errorf("NetworkPolicy %s has no podSelector", p.name)
			p.sel = map[string]any{"matchLabels": map[string]any{"#": "none"}}
		}
		for _, ty := range asList(get(o, "spec", "policyTypes")) {
			p.types = append(p.types, str(ty))
		}
		ps = append(ps, p)
	}
	return ps
}

// peer is one allowed peer of a rule, as a string: "pod:NAME" for a pod of
// this namespace by app.kubernetes.io/name, "dns" for kube-dns, "ns:NAME"
// for a namespace, "cidr:X" for an ipBlock, "any" for a rule with no peers.
func peers(rule any, dir string) []string {
	list := asList(get(rule, dir))
	if list == nil {
		return []string{"any"}
	}
	var out []string
	for _, pe := range list {
		ns := str(get(pe, "namespaceSelector", "matchLabels", "kubernetes.io/metadata.name"))
		pod := str(get(pe, "podSelector", "matchLabels", "app.kubernetes.io/name"))
		switch {
		case ns == "kube-system" && str(get(pe, "podSelector", "matchLabels", "k8s-app")) == "kube-dns":
			out = append(out, "dns")
		case get(pe, "ipBlock") != nil:
			out = append(out, "cidr:"+str(get(pe, "ipBlock", "cidr")))
		case get(pe, "namespaceSelector") != nil:
			out = append(out, "ns:"+ns)
		case pod != "":
			out = append(out, "pod:"+pod)
		default:
			out = append(out, "any")
		}
	}
	return out
}

// allowed is every peer pods labelled labels may reach (egress) or be
// reached from (ingress) under ps, and whether any policy of that
// direction selects them at all (else everything is allowed).
func allowed(ps []policy, labels map[string]string, dir string) (set map[string]bool, isolated bool) {
	set = map[string]bool{}
	kind, field := "Egress", "to"
	if dir == "ingress" {
		kind, field = "Ingress", "from"
	}
	for _, p := range ps {
		if !p.selects(labels) || !slices.Contains(p.types, kind) {
			continue
		}
		isolated = true
		rules := p.egress
		if dir == "ingress" {
			rules = p.ingress
		}
		for _, r := range rules {
			for _, pe := range peers(r, field) {
				set[pe] = true
			}
		}
	}
	return set, isolated
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestNetworkPolicies: the namespace denies by default; ingest reaches
// only the bus (and names), cdn nothing; nothing public — ingest, cdn, or
// anything outside the namespace — reaches PostgreSQL; the register and
// the HSM (outside the cluster, by ipBlock) are reached by the roles that
// need them and by no public one.
func TestNetworkPolicies(t *testing.T) {
	t.Parallel()
	ps := policies(t, k8sObjects(t))
	pod := func(name string) map[string]string {
		return map[string]string{"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "vouch"}
	}
	denyAll := false
	for _, p := range ps {
		if len(p.sel) == 0 && slices.Contains(p.types, "Ingress") && slices.Contains(p.types, "Egress") && len(p.ingress) == 0 && len(p.egress) == 0 {
			denyAll = true
		}
	}
	if !denyAll {
		t.Error("no default-deny NetworkPolicy (podSelector {}, Ingress and Egress, no rules)")
	}
	for _, c := range []struct {
		pod, dir string
		only     []string // every allowed peer must be one of these
		must     []string // and these must be allowed
	}{
		{"vouch-ingest", "egress", []string{"pod:nats", "dns"}, []string{"pod:nats"}},
		{"vouch-cdn", "egress", nil, nil},
		{"postgres", "ingress", []string{"pod:vouch-store", "pod:vouch-aggregate", "pod:vouch-transparency", "pod:vouch-backoffice", "pod:vouch-registry-sync",
			"pod:vouch-cleanup", "pod:vouch-federate", "pod:vouch-migrate", "pod:postgres", "ns:monitoring"}, []string{"pod:vouch-store"}},
		{"nats", "ingress", []string{"pod:vouch-ingest", "pod:vouch-store", "pod:vouch-backoffice", "pod:vouch-registry-sync", "pod:nats", "ns:monitoring"},
			[]string{"pod:vouch-ingest", "pod:nats"}},
		{"s3", "ingress", []string{"pod:vouch-aggregate", "pod:vouch-transparency", "ns:monitoring"}, []string{"pod:vouch-aggregate"}},
		{"vouch-transparency", "ingress", []string{"ns:monitoring"}, nil},
		{"vouch-store", "ingress", []string{"ns:monitoring"}, nil},
		{"vouch-aggregate", "ingress", []string{"ns:monitoring"}, nil},
	} {
		set, isolated := allowed(ps, pod(c.pod), c.dir)
		if !isolated {
			t.Errorf("%s: no NetworkPolicy limits its %s", c.pod, c.dir)
			continue
		}
		for pe := range set {
			if !slices.Contains(c.only, pe) {
				t.Errorf("%s %s allows %s; only %v", c.pod, c.dir, pe, c.only)
			}
		}
		for _, pe := range c.must {
			if !set[pe] {
				t.Errorf("%s %s does not allow %s (allowed: %v)", c.pod, c.dir, pe, keys(set))
			}
		}
	}
	// The register (LDAPS, 636) and the HSM: the roles that reach any
	// address outside the cluster on those ports.
	for _, c := range []struct {
		port  int
		roles []string
	}{{636, []string{"vouch-backoffice", "vouch-registry-sync"}}, {1792, []string{"vouch-aggregate", "vouch-backoffice", "vouch-transparency"}}} {
		var reach []string
		for _, p := range ps {
			for _, r := range p.egress {
				external := false
				for _, pe := range peers(r, "to") {
					external = external || strings.HasPrefix(pe, "cidr:") || pe == "any"
				}
				for _, pp := range asList(get(r, "ports")) {
					if n, _ := strconv.Atoi(str(get(pp, "port"))); n == c.port && external {
						for _, name := range []string{"vouch-ingest", "vouch-cdn", "vouch-store", "vouch-aggregate", "vouch-backoffice",
							"vouch-registry-sync", "vouch-cleanup", "vouch-federate", "vouch-migrate", "vouch-transparency", "nats", "postgres", "s3"} {
							if p.selects(pod(name)) {
								reach = append(reach, name)
							}
						}
					}
				}
			}
		}
		sort.Strings(reach)
		reach = slices.Compact(reach)
		if !slices.Equal(reach, c.roles) {
			t.Errorf("port %d outside the cluster is reached by %v, want %v", c.port, reach, c.roles)
		}
	}
	// Nothing selected by a policy that allows any peer on all ports to a
	// public pod: a rule with no "to" on ingest or cdn opens everything.
	for _, name := range []string{"vouch-ingest", "vouch-cdn"} {
		set, _ := allowed(ps, pod(name), "egress")
		for pe := range set {
			if pe == "any" || strings.HasPrefix(pe, "cidr:") {
				t.Errorf("%s may reach %s", name, pe)
			}
		}
	}
}

// TestComposeNetworks: in compose.yaml the public front shares no network
// with PostgreSQL, the S3 store or the roles that hold the HSM's PIN.
func TestComposeNetworks(t *testing.T) {
	t.Parallel()
	_, doc := composeWorkloads(t)
	services := doc["services"].(map[string]any)
	nets := func(name string) []string {
		var out []string
		for _, n := range asList(get(services[name], "networks")) {
			out = append(out, str(n))
		}
		return out
	}
	for _, c := range []struct {
		service string
		only    []string
	}{
		{"ingest", []string{"public", "bus", "ops"}},
		{"cdn", []string{"public", "ops"}},
		{"postgres-primary", []string{"data"}},
		{"postgres-standby", []string{"data"}},
		{"nats-1", []string{"bus"}},
		{"s3", []string{"s3"}},
	} {
		got := nets(c.service)
		if len(got) == 0 {
			t.Errorf("%s: no networks (it would be on the default one, with everything)", c.service)
		}
		for _, n := range got {
			if !slices.Contains(c.only, n) {
				t.Errorf("%s is on network %s; only %v", c.service, n, c.only)
			}
		}
	}
	for _, n := range []string{"bus", "data", "s3", "ops"} {
		if get(doc, "networks", n, "internal") != true {
			t.Errorf("network %s is not internal: it would reach out", n)
		}
	}
}
