// Package e2e holds the tests that run Vouch's public pipeline as separate
// processes, the way it is deployed: a phone picks up its bundle and uploads
// its keys to `vouch ingest`, the keys cross the bus to `vouch store`,
// `vouch aggregate` signs the export and `vouch cdn` serves it to a second
// phone, which finds the match. The fault tests kill each process with -9
// and stop PostgreSQL under load, then count that every acknowledged upload
// was published exactly once.
package e2e
