// Package deploy holds what operators run Vouch with: Prometheus alert
// rules (prometheus/alerts.yml, unit-tested in prometheus/alerts_test.yml),
// a Grafana dashboard (grafana/vouch.json). Its tests run promtool over
// the rules and hold every metric name the rules and the dashboard use to
// the names the code defines, and hold docs/threat-model.md's named tests
// to the tests that exist. There is no Go code to import here.
package deploy
