package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vouch-nl/vouch/internal/exposure"
	"github.com/vouch-nl/vouch/internal/phoneclient"
)

// A keys file holds one temporary exposure key a line:
//
//	<32 hex digits> <rolling start interval> <rolling period> <transmission risk>
//
// upload writes the keys it publishes there, and sync reads the keys a
// phone "observed" from one (for a demo, another phone's upload).

// randomKeys makes n keys of the days before now's, as a phone holds them
// (phoneclient.RandomKeys, which the phone's chaff uses too).
func randomKeys(n int, now time.Time) ([]exposure.Key, error) {
	return phoneclient.RandomKeys(n, now)
}

func formatKeys(keys []exposure.Key) []byte {
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d %d %d\n", hex.EncodeToString(k.Data[:]), k.RollingStart, k.RollingPeriod, k.TransmissionRisk)
	}
	return b.Bytes()
}

func writeKeys(file string, keys []exposure.Key) error {
	return os.WriteFile(file, formatKeys(keys), 0o600)
}

// readKeys reads a keys file; a line may hold only the key's hex digits
// (the other fields are then zero), enough to match against.
func readKeys(file string) ([]exposure.Key, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var keys []exposure.Key
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		var k exposure.Key
		d, err := hex.DecodeString(fields[0])
		if err != nil || len(d) != exposure.KeySize {
			return nil, fmt.Errorf("%s:%d: not a %d-byte hex key", file, line, exposure.KeySize)
		}
		copy(k.Data[:], d)
		ints := []*int32{&k.RollingStart, &k.RollingPeriod, &k.TransmissionRisk}
		for i, s := range fields[1:] {
			if i >= len(ints) {
				return nil, fmt.Errorf("%s:%d: too many fields", file, line)
			}
			v, err := strconv.ParseInt(s, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", file, line, err)
			}
			*ints[i] = int32(v)
		}
		keys = append(keys, k)
	}
	return keys, sc.Err()
}
