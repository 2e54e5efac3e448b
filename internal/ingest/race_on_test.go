//go:build race

package ingest

// raceDetector: under -race, sync.Pool drops a quarter of what is put back
// on purpose, so a pooled buffer is sometimes made anew.
const raceDetector = true
