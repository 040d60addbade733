package runner

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule computes a job's start times.
type Schedule interface {
	// Next returns the first start time strictly after t, or the zero time
	// if there is none.
	Next(t time.Time) time.Time
	String() string
}

// ParseSchedule parses a five-field cron expression, a descriptor
// (@hourly, @daily, @weekly, @monthly, @yearly) or "@every <duration>",
// optionally prefixed by "CRON_TZ=<zone> "; without the prefix the
// expression is read in loc.
//
// Daylight saving time rule (cron expressions and descriptors; @every
// counts real elapsed time and is unaffected):
//   - A wall-clock time that does not exist because clocks jump forward
//     (02:30 on the spring-forward night) runs once, at the first instant
//     after the jump (03:00). Several such times collapse into that one run.
//   - A wall-clock time that happens twice because clocks go back (01:30 on
//     the fall-back night) runs once, at its first occurrence.
//
// robfig/cron alone skips the first case and repeats the second, so the
// expression is evaluated on wall-clock time and mapped back to the zone.
func ParseSchedule(spec string, loc *time.Location) (s Schedule, err error) {
	defer func() {
		// robfig/cron panics on a few malformed inputs.
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("parse schedule %q: invalid expression", spec)
		}
	}()
	if loc == nil {
		loc = time.Local
	}
	explicitTZ := strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")
	if explicitTZ && !strings.Contains(spec, " ") {
		return nil, fmt.Errorf("parse schedule %q: CRON_TZ= must be followed by a schedule", spec)
	}
	parsed, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("parse schedule %q: %w", spec, err)
	}
	switch p := parsed.(type) {
	case *cron.SpecSchedule:
		zone := loc
		if explicitTZ {
			zone = p.Location
		}
		wall := *p
		wall.Location = time.UTC
		return &wallSchedule{spec: spec, wall: &wall, loc: zone}, nil
	case cron.ConstantDelaySchedule:
		return everySchedule{spec: spec, d: p, loc: loc}, nil
	default:
		return nil, fmt.Errorf("parse schedule %q: unsupported schedule type %T", spec, parsed)
	}
}

type everySchedule struct {
	spec string
	d    cron.ConstantDelaySchedule
	loc  *time.Location
}

func (e everySchedule) Next(t time.Time) time.Time { return e.d.Next(t).In(e.loc) }
func (e everySchedule) String() string             { return e.spec }

// wallSchedule evaluates a cron expression on wall-clock time (a copy of
// the expression in UTC, which has no DST) and maps results back to loc.
type wallSchedule struct {
	spec string
	wall *cron.SpecSchedule
	loc  *time.Location
}

func (w *wallSchedule) String() string { return w.spec }

func (w *wallSchedule) Next(t time.Time) time.Time {
	l := t.In(w.loc)
	wall := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), l.Second(), l.Nanosecond(), time.UTC)
	// A few iterations cover the case where the mapped time is not after
	// t (a repeated hour at fall-back, or a gap that maps onto t).
	for range 8 {
		nw := w.wall.Next(wall)
		if nw.IsZero() {
			return time.Time{}
		}
		if real := fromWall(nw, w.loc); real.After(t) {
			return real
		}
		wall = nw
	}
	return time.Time{}
}

// fromWall returns the instant at which the clock in loc reads w's
// wall-clock fields: the first occurrence if it reads them twice, the end
// of the gap if it never does.
func fromWall(w time.Time, loc *time.Location) time.Time {
	t := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), loc)
	if sameWall(t, w) {
		// Is there an earlier instant with the same wall clock (fall-back)?
		start, _ := t.ZoneBounds()
		if !start.IsZero() && t.Sub(start) < 24*time.Hour {
			_, prevOff := start.Add(-time.Nanosecond).Zone()
			earlier := time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), time.FixedZone("", prevOff))
			if earlier.Before(start) && sameWall(earlier.In(loc), w) {
				return earlier.In(loc)
			}
		}
		return t
	}
	// Spring-forward gap: Go normalised t to one side of the transition.
	start, end := t.ZoneBounds()
	if wallAfter(t, w) {
		return start // t is past the jump: the jump itself is the first instant after the gap
	}
	return end
}

func sameWall(t, w time.Time) bool {
	return t.Year() == w.Year() && t.YearDay() == w.YearDay() && t.Hour() == w.Hour() && t.Minute() == w.Minute() && t.Second() == w.Second()
}

func wallAfter(t, w time.Time) bool {
	tw := time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	return tw.After(w)
}
