package repo

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Policy says which snapshots to keep. Zero fields are unused. A policy
// with no rule at all is refused, so a typo never removes everything.
type Policy struct {
	Last    int           `json:"keep_last,omitempty"`
	Hourly  int           `json:"keep_hourly,omitempty"`
	Daily   int           `json:"keep_daily,omitempty"`
	Weekly  int           `json:"keep_weekly,omitempty"`
	Monthly int           `json:"keep_monthly,omitempty"`
	Yearly  int           `json:"keep_yearly,omitempty"`
	Within  time.Duration `json:"keep_within,omitempty"`
	Tags    []string      `json:"keep_tags,omitempty"`
}

// Empty reports whether the policy has no rule.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 && p.Within == 0 && len(p.Tags) == 0
}

// Decision is the fate of one snapshot, with the rules that keep it.
type Decision struct {
	Snapshot *Snapshot `json:"-"`
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Keep     bool      `json:"keep"`
	Reasons  []string  `json:"reasons,omitempty"`
}

// Group is a set of snapshots the policy is applied to together.
type Group struct {
	Key       string     `json:"group"`
	Decisions []Decision `json:"snapshots"`
}

// GroupSnapshots splits snapshots by the given fields (host, job, tags, paths).
func GroupSnapshots(sns []*Snapshot, by []string) (map[string][]*Snapshot, error) {
	out := map[string][]*Snapshot{}
	for _, s := range sns {
		var parts []string
		for _, f := range by {
			switch f {
			case "host":
				parts = append(parts, "host="+s.Hostname)
			case "job":
				parts = append(parts, "job="+s.Job)
			case "tags":
				t := append([]string(nil), s.Tags...)
				sort.Strings(t)
				parts = append(parts, "tags="+strings.Join(t, ","))
			case "paths":
				parts = append(parts, "paths="+strings.Join(s.Paths, ","))
			case "":
			default:
				return nil, fmt.Errorf("group by %q: want host, job, tags or paths", f)
			}
		}
		k := strings.Join(parts, " ")
		out[k] = append(out[k], s)
	}
	return out, nil
}

type bucketRule struct {
	name  string
	count int
	key   func(time.Time) string
}

// ApplyPolicy decides, within one group, which snapshots to keep and why.
// Each bucket rule keeps the newest snapshot of each of its last N periods
// (hours, days, ...); Within keeps everything younger than the duration,
// measured from the newest snapshot so a stalled job does not lose history.
func ApplyPolicy(sns []*Snapshot, p Policy, loc *time.Location) []Decision {
	sorted := append([]*Snapshot(nil), sns...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Time.After(sorted[j].Time) })
	if loc == nil {
		loc = time.Local
	}
	rules := []bucketRule{
		{"last", p.Last, func(t time.Time) string { return t.Format(time.RFC3339Nano) }},
		{"hourly", p.Hourly, func(t time.Time) string { return t.In(loc).Format("2006-01-02 15") }},
		{"daily", p.Daily, func(t time.Time) string { return t.In(loc).Format("2006-01-02") }},
		{"weekly", p.Weekly, func(t time.Time) string { y, w := t.In(loc).ISOWeek(); return fmt.Sprintf("%d-W%02d", y, w) }},
		{"monthly", p.Monthly, func(t time.Time) string { return t.In(loc).Format("2006-01") }},
		{"yearly", p.Yearly, func(t time.Time) string { return t.In(loc).Format("2006") }},
	}
	left := make([]int, len(rules))
	last := make([]string, len(rules))
	for i, r := range rules {
		left[i] = r.count
	}
	var newest time.Time
	if len(sorted) > 0 {
		newest = sorted[0].Time
	}
	out := make([]Decision, 0, len(sorted))
	for i, s := range sorted {
		d := Decision{Snapshot: s, ID: s.ID.String(), Time: s.Time}
		for ri, r := range rules {
			if left[ri] == 0 {
				continue
			}
			k := r.key(s.Time)
			if ri == 0 {
				k = fmt.Sprint(i) // every snapshot is its own "last" bucket
			}
			if k != last[ri] {
				last[ri] = k
				left[ri]--
				d.Keep = true
				if ri == 0 {
					d.Reasons = append(d.Reasons, "last")
				} else {
					d.Reasons = append(d.Reasons, fmt.Sprintf("%s %s", r.name, k))
				}
			}
		}
		if p.Within > 0 && newest.Sub(s.Time) <= p.Within {
			d.Keep = true
			d.Reasons = append(d.Reasons, fmt.Sprintf("within %s", p.Within))
		}
		for _, t := range p.Tags {
			if s.HasTag(t) {
				d.Keep = true
				d.Reasons = append(d.Reasons, "tag "+t)
			}
		}
		out = append(out, d)
	}
	return out
}
