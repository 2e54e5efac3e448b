package exposure_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vouch-nl/vouch/internal/exposure"
)

var now = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// day returns a key valid for the whole UTC day d days before now.
func day(d int, b byte) exposure.Key {
	start := now.Truncate(24*time.Hour).AddDate(0, 0, -d)
	k := exposure.Key{RollingStart: exposure.IntervalNumber(start), RollingPeriod: 144}
	k.Data[0] = b
	return k
}

func TestValidate(t *testing.T) {
	t.Parallel()
	fourteen := make([]exposure.Key, 14)
	for i := range fourteen {
		fourteen[i] = day(i, byte(i))
	}
	tooMany := make([]exposure.Key, 31)
	for i := range tooMany {
		tooMany[i] = day(i%13, byte(i))
	}
	mod := func(k exposure.Key, f func(*exposure.Key)) exposure.Key { f(&k); return k }
	tests := []struct {
		name string
		keys []exposure.Key
		want error
	}{
		{"fourteen days", fourteen, nil},
		{"thirty", tooMany[:30], nil},
		{"none", nil, exposure.ErrNoKeys},
		{"thirty-one", tooMany, exposure.ErrTooManyKeys},
		{"three resets a day", []exposure.Key{day(1, 1), day(1, 2), day(1, 3)}, nil},
		{"four with one start", []exposure.Key{day(1, 1), day(1, 2), day(1, 3), day(1, 4)}, exposure.ErrSameStart},
		{"period 0", []exposure.Key{mod(day(1, 1), func(k *exposure.Key) { k.RollingPeriod = 0 })}, exposure.ErrPeriod},
		{"period 1", []exposure.Key{mod(day(1, 1), func(k *exposure.Key) { k.RollingPeriod = 1 })}, nil},
		{"period 145", []exposure.Key{mod(day(1, 1), func(k *exposure.Key) { k.RollingPeriod = 145 })}, exposure.ErrPeriod},
		{"risk 8", []exposure.Key{mod(day(1, 1), func(k *exposure.Key) { k.TransmissionRisk = 8 })}, nil},
		{"risk 9", []exposure.Key{mod(day(1, 1), func(k *exposure.Key) { k.TransmissionRisk = 9 })}, exposure.ErrRisk},
		{"risk -1", []exposure.Key{mod(day(1, 1), func(k *exposure.Key) { k.TransmissionRisk = -1 })}, exposure.ErrRisk},
		{"ended 15 days ago", []exposure.Key{day(15, 1)}, exposure.ErrTooOld},
		// A key that started 14 days ago ended 13 days ago: still published.
		{"started 14 days ago", []exposure.Key{day(14, 1)}, nil},
		{"today's", []exposure.Key{day(0, 1)}, nil},
		{"tomorrow's", []exposure.Key{day(-1, 1)}, exposure.ErrFuture},
		{"within the skew", []exposure.Key{{RollingStart: exposure.IntervalNumber(now.Add(50 * time.Minute)), RollingPeriod: 144}}, nil},
		{"beyond the skew", []exposure.Key{{RollingStart: exposure.IntervalNumber(now.Add(70 * time.Minute)), RollingPeriod: 144}}, exposure.ErrFuture},
		{"the same key twice", []exposure.Key{day(1, 1), day(2, 1)}, exposure.ErrDuplicateKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := exposure.Validate(tt.keys, now, exposure.DefaultMaxAgeDays)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestKeyTimes(t *testing.T) {
	t.Parallel()
	k := day(0, 1)
	if got, want := k.Start(), now.Truncate(24*time.Hour); !got.Equal(want) {
		t.Errorf("Start = %s, want %s", got, want)
	}
	if got, want := k.End(), now.Truncate(24*time.Hour).Add(24*time.Hour); !got.Equal(want) {
		t.Errorf("End = %s, want %s", got, want)
	}
	if got := exposure.Coarse(time.Date(2026, 12, 3, 12, 59, 59, 999, time.FixedZone("CET", 3600))); !got.Equal(time.Date(2026, 12, 3, 11, 0, 0, 0, time.UTC)) {
		t.Errorf("Coarse = %s", got)
	}
}

func TestDaysSinceOnset(t *testing.T) {
	t.Parallel()
	onset := now.AddDate(0, 0, -3).Format(time.DateOnly)
	for _, tt := range []struct {
		key  exposure.Key
		days int32
	}{{day(0, 1), 3}, {day(3, 1), 0}, {day(5, 1), -2}} {
		d, ok := exposure.DaysSinceOnset(onset, tt.key)
		if !ok || d != tt.days {
			t.Errorf("DaysSinceOnset(%s, %s) = %d, %v; want %d", onset, tt.key.Start(), d, ok, tt.days)
		}
	}
	// A key started at noon by a reset counts from its day.
	noon := day(1, 1)
	noon.RollingStart += 72
	if d, _ := exposure.DaysSinceOnset(onset, noon); d != 2 {
		t.Errorf("DaysSinceOnset of a key started at noon = %d, want 2", d)
	}
	early := day(5, 1)
	early.RollingStart += 72
	if d, _ := exposure.DaysSinceOnset(onset, early); d != -2 {
		t.Errorf("DaysSinceOnset of a key started at noon before the onset = %d, want -2", d)
	}
	if _, ok := exposure.DaysSinceOnset("", day(0, 1)); ok {
		t.Error("no onset gave a day")
	}
	if _, ok := exposure.DaysSinceOnset("2026-13-01", day(0, 1)); ok {
		t.Error("a bad onset gave a day")
	}
}

func TestSortKeys(t *testing.T) {
	t.Parallel()
	keys := []exposure.Key{day(0, 3), day(1, 1), day(2, 2)}
	exposure.SortKeys(keys)
	for i := 1; i < len(keys); i++ {
		if bytes.Compare(keys[i-1].Data[:], keys[i].Data[:]) >= 0 {
			t.Fatalf("not sorted: %v", keys)
		}
	}
}

func record() *exposure.Record {
	r := &exposure.Record{Received: exposure.Coarse(now), SymptomOnset: "2026-12-01",
		Keys: []exposure.Key{day(0, 1), day(1, 2)}}
	r.AuthorizationID[0] = 7
	r.Keys[1].TransmissionRisk = 8
	return r
}

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	bounds := record()
	bounds.Keys = nil
	for i := range exposure.MaxKeysPerUpload {
		k := day(i%14, byte(i))
		switch i {
		case 0:
			k.RollingStart, k.RollingPeriod = 0, 1
		case 1:
			k.RollingPeriod, k.TransmissionRisk = exposure.MaxRollingPeriod, exposure.MaxTransmissionRisk
		}
		bounds.Keys = append(bounds.Keys, k)
	}
	for _, r := range []*exposure.Record{record(), func() *exposure.Record { r := record(); r.SymptomOnset = ""; return r }(), bounds} {
		got, err := exposure.UnmarshalRecord(r.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(r, got); d != "" {
			t.Errorf("round trip (-want +got):\n%s", d)
		}
	}
}

func TestRecordRefused(t *testing.T) {
	t.Parallel()
	good := record().Marshal()
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	label := len("vouch/keys/v1")
	onsetLen := label + 16 + 8
	count := onsetLen + 1 + 10
	firstKey := count + 1
	tests := map[string][]byte{
		"empty":          nil,
		"other label":    mutate(func(b []byte) []byte { b[6] = 'x'; return b }),
		"truncated":      good[:len(good)-1],
		"trailing":       append(bytes.Clone(good), 0),
		"header only":    good[:label+10],
		"onset too long": mutate(func(b []byte) []byte { b[onsetLen] = 11; return b }),
		"onset not date": mutate(func(b []byte) []byte { b[onsetLen+1] = 'x'; return b }),
		"no keys":        good[: firstKey-1 : firstKey-1],
		"count zero":     mutate(func(b []byte) []byte { b[count] = 0; return b[:firstKey] }),
		"count 31":       mutate(func(b []byte) []byte { b[count] = 31; return b }),
		"period 0":       mutate(func(b []byte) []byte { b[firstKey+16+7] = 0; return b }),
		"period 145":     mutate(func(b []byte) []byte { b[firstKey+16+7] = 145; return b }),
		"risk 9":         mutate(func(b []byte) []byte { b[firstKey+24] = 9; return b }),
		"negative start": mutate(func(b []byte) []byte { b[firstKey+16] = 0x80; return b }),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if r, err := exposure.UnmarshalRecord(b); !errors.Is(err, exposure.ErrRecord) {
				t.Fatalf("UnmarshalRecord = %v, %v; want ErrRecord", r, err)
			}
		})
	}
}

func FuzzUnmarshalRecord(f *testing.F) {
	f.Add(record().Marshal())
	f.Add([]byte("vouch/keys/v1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := exposure.UnmarshalRecord(b)
		if err != nil {
			return
		}
		// What decodes encodes to the same bytes: one encoding per record.
		if !bytes.Equal(r.Marshal(), b) {
			t.Fatalf("re-encoding differs")
		}
	})
}
