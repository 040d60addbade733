package configs

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/robfig/cron/v3"
)

var jobName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

type validator struct {
	c    *Config
	errs Errors
}

func (v *validator) add(path, format string, args ...any) {
	if strings.HasPrefix(path, "jobs[") && !v.c.explicit(path) {
		// The value came from defaults; its error is reported there once.
		return
	}
	v.errs = append(v.errs, &FieldError{File: v.c.File, Line: v.c.Line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

// explicit reports whether a job field was written in the file (always
// true for a config built in code).
func (c *Config) explicit(path string) bool {
	if c.pos == nil || strings.HasSuffix(path, ".name") || strings.HasSuffix(path, ".kind") || strings.HasSuffix(path, ".with") {
		return true
	}
	_, ok := c.pos[path]
	return ok
}

// Validate checks the whole config and returns Errors listing every
// problem, or nil. kinds may be nil to skip job-kind checks.
func (c *Config) Validate(kinds KindChecker) error {
	v := &validator{c: c}
	if _, err := loadLocation(c.Timezone); err != nil {
		v.add("timezone", "unknown time zone %q", c.Timezone)
	}
	if c.History.Path == "" {
		v.add("history.path", "is required")
	}
	if c.History.Keep < 0 {
		v.add("history.keep", "must not be negative")
	}
	if c.History.MaxLogLines < 0 {
		v.add("history.max_log_lines", "must not be negative")
	}
	ch := c.Repository.Chunking
	if ch.MinSize < 0 || ch.AvgSize < 0 || ch.MaxSize < 0 {
		v.add("repository.chunking", "sizes must not be negative")
	} else if ch.MinSize > 0 && ch.AvgSize > 0 && ch.MaxSize > 0 && !(ch.MinSize <= ch.AvgSize && ch.AvgSize <= ch.MaxSize) {
		v.add("repository.chunking", "need min_size <= avg_size <= max_size")
	}
	v.timing("defaults", c.Defaults.Timeout, c.Defaults.Retries, c.Defaults.RetryBackoff, c.Defaults.CatchUp, c.Defaults.MaxLateness)
	v.retention("defaults.retention", c.Defaults.Retention)
	for name, n := range c.ConcurrencyGroups {
		if n < 1 {
			v.add("concurrency_groups."+name, "must be at least 1")
		}
	}

	var known map[string]bool
	if kinds != nil {
		known = map[string]bool{}
		for _, k := range kinds.Kinds() {
			known[k] = true
		}
	}
	firstLine := map[string]int{}
	for i, j := range c.Jobs {
		p := fmt.Sprintf("jobs[%d]", i)
		switch {
		case j.Name == "":
			v.add(p+".name", "is required")
		case !jobName.MatchString(j.Name):
			v.add(p+".name", "invalid name %q: use letters, digits, '.', '_' and '-', at most 64", j.Name)
		default:
			if first, dup := firstLine[j.Name]; dup {
				v.add(p+".name", "duplicate job name %q (first defined at line %d)", j.Name, first)
			} else {
				firstLine[j.Name] = c.Line(p + ".name")
			}
		}
		if j.Schedule != "" {
			if err := CheckSchedule(j.Schedule); err != nil {
				v.add(p+".schedule", "%v", err)
			}
		}
		v.timing(p, j.Timeout, j.Retries, j.RetryBackoff, j.CatchUp, j.MaxLateness)
		v.retention(p+".retention", j.Retention)
		switch {
		case j.Kind == "":
			v.add(p+".kind", "is required")
		case known != nil && !known[j.Kind]:
			v.add(p+".kind", "unknown kind %q (known: %s)", j.Kind, strings.Join(kinds.Kinds(), ", "))
		case kinds != nil:
			if kinds.NeedsRepository(j.Kind) && c.Repository.URL == "" {
				v.add(p+".kind", "kind %q needs a repository: set repository.url", j.Kind)
			}
			v.errs = v.errs.flatten(kinds.CheckJob(j), FieldError{File: c.File, Line: c.Line(p + ".with"), Path: p + ".with"})
		}
	}
	return v.errs.orNil()
}

func (v *validator) timing(p string, timeout Duration, retries int, backoff Duration, catchUp string, lateness Duration) {
	if timeout <= 0 {
		v.add(p+".timeout", "must be positive")
	}
	if retries < 0 || retries > 100 {
		v.add(p+".retries", "must be between 0 and 100")
	}
	if backoff <= 0 {
		v.add(p+".retry_backoff", "must be positive")
	}
	if catchUp != CatchUpSkip && catchUp != CatchUpOnce {
		v.add(p+".catch_up", "must be %q or %q, got %q", CatchUpSkip, CatchUpOnce, catchUp)
	}
	if lateness < 0 {
		v.add(p+".max_lateness", "must not be negative")
	}
}

func (v *validator) retention(p string, r Retention) {
	for _, f := range []struct {
		name string
		n    int
	}{{"keep_last", r.KeepLast}, {"keep_daily", r.KeepDaily}, {"keep_weekly", r.KeepWeekly}, {"keep_monthly", r.KeepMonthly}, {"keep_yearly", r.KeepYearly}} {
		if f.n < 0 {
			v.add(p+"."+f.name, "must not be negative")
		}
	}
}

// CheckSchedule reports whether spec is a schedule the runner accepts: five
// cron fields, a descriptor (@daily, @every 6h), optionally prefixed with
// CRON_TZ=Zone.
func CheckSchedule(spec string) (err error) {
	// robfig/cron panics on a few malformed inputs (e.g. "CRON_TZ=UTC"
	// with nothing after it); a config file must never crash the daemon.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("invalid schedule %q", spec)
		}
	}()
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		if !strings.Contains(spec, " ") {
			return fmt.Errorf("invalid schedule %q: CRON_TZ= must be followed by a schedule", spec)
		}
	}
	if _, err := cron.ParseStandard(spec); err != nil {
		return fmt.Errorf("invalid schedule %q: %v", spec, err)
	}
	return nil
}
