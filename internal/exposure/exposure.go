// Package exposure is the model of what a phone publishes: temporary
// exposure keys under the rules of Google and Apple's Exposure Notification
// (GAEN), and the record of one upload that travels on the bus from ingest
// to the readers. It knows nothing of HTTP, the bus or the database, so the
// phone, ingest, the readers and the aggregator share one set of rules.
package exposure

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
)

// GAEN's bounds for one upload.
const (
	KeySize = 16
	// MaxKeysPerUpload: a phone keeps 14 days of keys, one a day, plus the
	// keys of days it was reset; 30 is what the platforms send at most.
	MaxKeysPerUpload = 30
	// MaxSameStart: keys with the same start interval happen when a phone
	// rotates its key early (a reset); more than three is not a phone.
	MaxSameStart = 3
	// MaxRollingPeriod is a day of 10-minute intervals.
	MaxRollingPeriod = 144
	// IntervalSeconds is the length of one ENIntervalNumber.
	IntervalSeconds = 600
	// MaxTransmissionRisk bounds the deprecated transmission risk level.
	MaxTransmissionRisk = 8
	// DefaultMaxAgeDays is how many days of keys are published; FloorMaxAgeDays
	// the least an operator may configure (GAEN matches 14 days; fewer than
	// 10 would miss the contagious days before symptoms).
	DefaultMaxAgeDays = 14
	FloorMaxAgeDays   = 10
	// ReceivedGranularity is how coarsely the time a key arrived is kept:
	// an exact time would tell real uploads from chaff and link keys to
	// requests in logs (dp3t-sdk-backend#72).
	ReceivedGranularity = time.Hour
)

// Key is one temporary exposure key.
type Key struct {
	Data             [KeySize]byte
	RollingStart     int32 // ENIntervalNumber: Unix time / 600
	RollingPeriod    int32 // intervals of validity, 1..144
	TransmissionRisk int32 // 0..8, deprecated by GAEN but still in the format
}

// IntervalNumber is the ENIntervalNumber of t.
func IntervalNumber(t time.Time) int32 { return int32(t.Unix() / IntervalSeconds) }

// Start is when k became valid.
func (k Key) Start() time.Time { return time.Unix(int64(k.RollingStart)*IntervalSeconds, 0).UTC() }

// End is when k stopped (or stops) being valid: before then it may still be
// broadcast, and publishing it would let anyone replay it.
func (k Key) End() time.Time {
	return time.Unix(int64(k.RollingStart+k.RollingPeriod)*IntervalSeconds, 0).UTC()
}

// Why keys are refused. Each is an error a phone's developer can act on.
var (
	ErrNoKeys       = errors.New("exposure: no keys")
	ErrTooManyKeys  = fmt.Errorf("exposure: more than %d keys", MaxKeysPerUpload)
	ErrSameStart    = fmt.Errorf("exposure: more than %d keys with the same start interval", MaxSameStart)
	ErrPeriod       = fmt.Errorf("exposure: rolling period outside 1..%d", MaxRollingPeriod)
	ErrRisk         = fmt.Errorf("exposure: transmission risk outside 0..%d", MaxTransmissionRisk)
	ErrTooOld       = errors.New("exposure: key older than the days published")
	ErrFuture       = errors.New("exposure: key starts in the future")
	ErrDuplicateKey = errors.New("exposure: the same key twice")
	ErrOverlap      = errors.New("exposure: keys with the same start interval overlap other than by a reset")
)

// clockSkew is how far in the future a phone's clock may put a key's start.
const clockSkew = time.Hour

// Validate applies GAEN's rules to one upload's keys at now, publishing the
// last maxAgeDays days. It returns the first rule broken, wrapped with the
// key's index.
func Validate(keys []Key, now time.Time, maxAgeDays int) error {
	switch {
	case len(keys) == 0:
		return ErrNoKeys
	case len(keys) > MaxKeysPerUpload:
		return ErrTooManyKeys
	}
	oldest := IntervalNumber(now.Add(-time.Duration(maxAgeDays) * 24 * time.Hour))
	latest := IntervalNumber(now.Add(clockSkew))
	starts := map[int32]int{}
	for i, k := range keys {
		switch {
		case k.RollingPeriod < 1 || k.RollingPeriod > MaxRollingPeriod:
			return fmt.Errorf("key %d: %w", i, ErrPeriod)
		case k.TransmissionRisk < 0 || k.TransmissionRisk > MaxTransmissionRisk:
			return fmt.Errorf("key %d: %w", i, ErrRisk)
		case k.RollingStart+k.RollingPeriod <= oldest:
			return fmt.Errorf("key %d: %w", i, ErrTooOld)
		case k.RollingStart > latest:
			return fmt.Errorf("key %d: %w", i, ErrFuture)
		}
		starts[k.RollingStart]++
		if starts[k.RollingStart] > MaxSameStart {
			return fmt.Errorf("key %d: %w", i, ErrSameStart)
		}
		for j := range i {
			if keys[j].Data == k.Data {
				return fmt.Errorf("key %d: %w", i, ErrDuplicateKey)
			}
		}
	}
	return nil
}

// SortKeys orders keys by their bytes: the order of every export, so that
// the same keys give the same file and nothing in it tells when a key came.
func SortKeys(keys []Key) {
	slices.SortFunc(keys, func(a, b Key) int { return bytes.Compare(a.Data[:], b.Data[:]) })
}

// DaysSinceOnset is the day of k's start counted from the symptom onset
// ("YYYY-MM-DD"), as GAEN's days_since_onset_of_symptoms; ok is false when
// there is no onset.
func DaysSinceOnset(onset string, k Key) (days int32, ok bool) {
	if onset == "" {
		return 0, false
	}
	d, err := time.Parse(time.DateOnly, onset)
	if err != nil {
		return 0, false
	}
	startDay := k.Start().Truncate(24 * time.Hour)
	return int32(startDay.Sub(d) / (24 * time.Hour)), true
}

// Coarse is t as the store keeps it.
func Coarse(t time.Time) time.Time { return t.UTC().Truncate(ReceivedGranularity) }
