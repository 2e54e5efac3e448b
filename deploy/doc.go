// Package deploy holds what operators run Vouch with: the images' build
// (images.sh, make images), the cluster for Docker Compose (compose.yaml)
// and Kubernetes (k8s/), Prometheus alert rules (prometheus/alerts.yml,
// unit-tested in prometheus/alerts_test.yml), a Grafana dashboard
// (grafana/vouch.json). Its tests build the images on a docker daemon of
// their own and run vouch all's until it is ready, hold the manifests to
// the code (vouch config check on every container's environment, ports,
// probes, NetworkPolicies), run promtool over the rules, hold every
// metric name the rules and the dashboard use to the names the code
// defines, and hold docs/threat-model.md's named tests to the tests that
// exist. There is no Go code to import here.
package deploy
