package configs

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration that also accepts days and weeks ("7d",
// "2w", "1d12h"), because retention and lateness are thought of in days.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

var durationUnits = map[string]float64{
	"ns": float64(time.Nanosecond), "us": float64(time.Microsecond), "µs": float64(time.Microsecond),
	"ms": float64(time.Millisecond), "s": float64(time.Second), "m": float64(time.Minute),
	"h": float64(time.Hour), "d": float64(24 * time.Hour), "w": float64(7 * 24 * time.Hour),
}

// ParseDuration parses "90s", "15m", "1h30m", "7d", "2w" and "0".
func ParseDuration(s string) (Duration, error) {
	bad := fmt.Errorf("expected a duration like 90s, 15m or 7d, got %q", s)
	orig := s
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, bad
	}
	var total float64
	for s != "" {
		i := 0
		for i < len(s) && (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) {
			i++
		}
		if i == 0 {
			return 0, bad
		}
		num, err := strconv.ParseFloat(s[:i], 64)
		if err != nil {
			return 0, bad
		}
		s = s[i:]
		j := 0
		for j < len(s) && !(s[j] == '.' || (s[j] >= '0' && s[j] <= '9')) {
			j++
		}
		unit, ok := durationUnits[s[:j]]
		if !ok {
			return 0, bad
		}
		s = s[j:]
		total += num * unit
	}
	if total > math.MaxInt64 {
		return 0, fmt.Errorf("duration %q is out of range", orig)
	}
	if neg {
		total = -total
	}
	return Duration(total), nil
}

// ByteSize is a size in bytes written as a plain integer or with a unit
// (KiB, MiB, GiB, TiB binary; KB, MB, GB, TB decimal).
type ByteSize int64

func (b ByteSize) String() string { return strconv.FormatInt(int64(b), 10) }

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
}

// ParseByteSize parses "4096", "512KiB" or "8MiB".
func ParseByteSize(s string) (ByteSize, error) {
	bad := fmt.Errorf("expected a size like 4096, 512KiB or 8MiB, got %q", s)
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, bad
	}
	if n != 0 && (n > math.MaxInt64/mult || n < math.MinInt64/mult) {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return ByteSize(n * mult), nil
}
