package runner

import (
	"strings"
	"testing"
	"time"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func nextN(s Schedule, from time.Time, n int) []string {
	var out []string
	for t := from; len(out) < n; {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t.Format("2006-01-02 15:04 MST"))
	}
	return out
}

func TestScheduleNext(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	berlin := mustLoc(t, "Europe/Berlin")
	tests := []struct {
		name string
		spec string
		loc  *time.Location
		from time.Time
		want []string
	}{
		{"daily in zone", "30 2 * * *", berlin, time.Date(2026, 1, 10, 12, 0, 0, 0, berlin),
			[]string{"2026-01-11 02:30 CET", "2026-01-12 02:30 CET", "2026-01-13 02:30 CET"}},
		{"spring forward runs once at the end of the gap", "30 2 * * *", ny, time.Date(2026, 3, 7, 12, 0, 0, 0, ny),
			[]string{"2026-03-08 03:00 EDT", "2026-03-09 02:30 EDT"}},
		{"fall back runs once at the first occurrence", "30 1 * * *", ny, time.Date(2026, 10, 31, 12, 0, 0, 0, ny),
			[]string{"2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"}},
		{"hourly across fall back", "30 * * * *", ny, time.Date(2026, 11, 1, 0, 0, 0, 0, ny),
			[]string{"2026-11-01 00:30 EDT", "2026-11-01 01:30 EDT", "2026-11-01 02:30 EST", "2026-11-01 03:30 EST"}},
		{"every 15 min across spring forward", "*/15 * * * *", ny, time.Date(2026, 3, 8, 1, 40, 0, 0, ny),
			[]string{"2026-03-08 01:45 EST", "2026-03-08 03:00 EDT", "2026-03-08 03:15 EDT"}},
		{"CRON_TZ overrides the global zone", "CRON_TZ=Asia/Tokyo 0 9 * * *", berlin, time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC),
			[]string{"2026-01-11 09:00 JST", "2026-01-12 09:00 JST"}},
		{"descriptor", "@weekly", time.UTC, time.Date(2026, 1, 7, 0, 0, 0, 0, time.UTC), // a Wednesday
			[]string{"2026-01-11 00:00 UTC", "2026-01-18 00:00 UTC"}},
		{"every ignores DST", "@every 6h", ny, time.Date(2026, 3, 7, 22, 0, 0, 0, ny),
			[]string{"2026-03-08 05:00 EDT", "2026-03-08 11:00 EDT"}}, // 6 real hours
		{"feb 29 only", "0 0 29 2 *", time.UTC, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			[]string{"2028-02-29 00:00 UTC"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSchedule(tt.spec, tt.loc)
			if err != nil {
				t.Fatal(err)
			}
			got := nextN(s, tt.from, len(tt.want))
			if strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

// TestDSTNightsExactlyOnce walks both DST change days the way the scheduler
// does (each Next from the previous start) and counts the runs.
func TestDSTNightsExactlyOnce(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	for _, tt := range []struct {
		spec string
		day  time.Time
	}{
		{"30 2 * * *", time.Date(2026, 3, 8, 0, 0, 0, 0, ny)},
		{"30 1 * * *", time.Date(2026, 11, 1, 0, 0, 0, 0, ny)},
	} {
		s, err := ParseSchedule(tt.spec, ny)
		if err != nil {
			t.Fatal(err)
		}
		runs := 0
		end := tt.day.Add(24 * time.Hour)
		for at := s.Next(tt.day.Add(-time.Second)); at.Before(end); at = s.Next(at) {
			runs++
		}
		if runs != 1 {
			t.Errorf("%s on %s: %d runs, want 1", tt.spec, tt.day.Format("2006-01-02"), runs)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                 `parse schedule "": empty spec string`,
		"CRON_TZ=UTC":      `parse schedule "CRON_TZ=UTC": CRON_TZ= must be followed by a schedule`,
		"* * *":            `parse schedule "* * *": expected exactly 5 fields, found 3: [* * *]`,
		"@every nothing":   `parse schedule "@every nothing": failed to parse duration @every nothing: time: invalid duration "nothing"`,
		"CRON_TZ=Nope/X *": `parse schedule "CRON_TZ=Nope/X *": provided bad location Nope/X: unknown time zone Nope/X`,
	} {
		if _, err := ParseSchedule(spec, time.UTC); err == nil || err.Error() != want {
			t.Errorf("ParseSchedule(%q) = %v, want %q", spec, err, want)
		}
	}
}
