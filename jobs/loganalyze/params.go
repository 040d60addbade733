// Package loganalyze is the "loganalyze" job kind: it reads what is new
// in log files since the last run (rotated and gzip-compressed copies
// included), parses syslog, web access logs, JSON lines or a custom
// regular expression, applies built-in security and health rules plus
// user rules, and reports aggregated findings with day-over-day deltas.
//
// Reading is resumable and exact: a cursor per file content (a hash of the
// first bytes, the offset reached, the inode) is kept in the job's state,
// so a file renamed or compressed by rotation is recognised and each line
// is read once.
package loganalyze

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// Params is the kind's with: section.
type Params struct {
	Inputs []Input `yaml:"inputs"`
	// Since bounds the first run: older events are skipped (default 24h).
	Since configs.Duration `yaml:"since"`
	// Rules adds user rules to the built-in ones.
	Rules []UserRule `yaml:"rules"`
	// Disable turns off built-in rules by code ("http.top_4xx").
	Disable []string `yaml:"disable"`
	// Thresholds overrides the minimum count per subject of built-in rules.
	Thresholds map[string]int `yaml:"thresholds"`
	// SudoUsers, when set, makes sudo by anyone else a finding.
	SudoUsers []string `yaml:"sudo_users"`
	// HTTP5xxRate is the share of 5xx responses that is a finding (default 0.01).
	HTTP5xxRate float64 `yaml:"http_5xx_rate"`
	// MaxSubjects caps findings per code (default 20, the largest counts).
	MaxSubjects int `yaml:"max_subjects"`
}

// Input is one group of files in one format.
type Input struct {
	// Paths are globs; include rotated copies ("/var/log/auth.log*").
	Paths []string `yaml:"paths"`
	// Format is syslog (RFC 3164, RFC 5424, ISO timestamps as in
	// journalctl -o short-iso), combined (Apache/nginx), json, regex, or
	// auto (each line tried as syslog, combined, then JSON).
	Format string `yaml:"format"`
	// Fields maps JSON keys to event fields (time, message, host,
	// program, status, path, client, method, level); json only.
	Fields map[string]string `yaml:"fields"`
	// Pattern is a regular expression with named groups (time, host,
	// program, message, status, path, client, method, or any other name
	// for group_by); regex only.
	Pattern string `yaml:"pattern"`
	// TimeLayout parses the time group or field (Go layout; default RFC 3339).
	TimeLayout string `yaml:"time_layout"`
}

// UserRule counts events matching a pattern.
type UserRule struct {
	Code string `yaml:"code"`
	// Pattern is a regular expression matched against the message.
	Pattern string `yaml:"pattern"`
	// Program restricts the rule to one program (syslog tag).
	Program string `yaml:"program"`
	// GroupBy names a field (host, program, client, path, status, or a
	// named group of Pattern or of the input's regex) to count separately.
	GroupBy   string           `yaml:"group_by"`
	Threshold int              `yaml:"threshold"` // default 1
	Window    configs.Duration `yaml:"window"`    // 0: the whole run
	Severity  string           `yaml:"severity"`  // default warning
	Message   string           `yaml:"message"`
}

var codeRE = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)+$`)

// New builds a loganalyze job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p := Params{Since: configs.Duration(24 * time.Hour), HTTP5xxRate: 0.01, MaxSubjects: 20}
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	var errs configs.Errors
	w := job.With
	if len(p.Inputs) == 0 {
		errs = append(errs, w.Errorf("inputs", "is required: e.g. [{paths: [/var/log/auth.log*], format: syslog}]"))
	}
	j := &Job{p: p, now: time.Now}
	for i, in := range p.Inputs {
		field := fmt.Sprintf("inputs[%d]", i)
		if len(in.Paths) == 0 {
			errs = append(errs, w.Errorf("inputs", "%s: paths is required", field))
		}
		for _, g := range in.Paths {
			if !filepath.IsAbs(g) {
				errs = append(errs, w.Errorf("inputs", "%s: %q is not absolute", field, g))
			} else if _, err := filepath.Match(g, "x"); err != nil {
				errs = append(errs, w.Errorf("inputs", "%s: bad glob %q: %v", field, g, err))
			}
		}
		pr, err := newParser(in)
		if err != nil {
			errs = append(errs, w.Errorf("inputs", "%s: %v", field, err))
			continue
		}
		j.parsers = append(j.parsers, pr)
	}
	for _, c := range p.Disable {
		if !slices.Contains(builtinCodes, c) {
			errs = append(errs, w.Errorf("disable", "unknown built-in rule %q (known: %v)", c, builtinCodes))
		}
	}
	for c, n := range p.Thresholds {
		if !slices.Contains(builtinCodes, c) || n < 1 {
			errs = append(errs, w.Errorf("thresholds", "%s: want a built-in rule code and a count of at least 1", c))
		}
	}
	if p.HTTP5xxRate < 0 || p.HTTP5xxRate > 1 {
		errs = append(errs, w.Errorf("http_5xx_rate", "must be between 0 and 1"))
	}
	if p.Since < 0 || p.MaxSubjects < 1 {
		errs = append(errs, w.Errorf("", "since must not be negative and max_subjects must be at least 1"))
	}
	for i, r := range p.Rules {
		ur, err := compileRule(r)
		if err != nil {
			errs = append(errs, w.Errorf("rules", "rules[%d]: %v", i, err))
			continue
		}
		j.rules = append(j.rules, ur)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return j, nil
}

// Job analyses the configured logs.
type Job struct {
	p       Params
	parsers []*parser
	rules   []*userRule
	now     func() time.Time // injected by tests
}

func compileRule(r UserRule) (*userRule, error) {
	if !codeRE.MatchString(r.Code) {
		return nil, fmt.Errorf("code %q: want dotted lower-case words like app.db_timeout", r.Code)
	}
	if slices.Contains(builtinCodes, r.Code) {
		return nil, fmt.Errorf("code %q is a built-in rule's", r.Code)
	}
	if r.Pattern == "" {
		return nil, fmt.Errorf("%s: pattern is required", r.Code)
	}
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return nil, fmt.Errorf("%s: pattern: %w", r.Code, err)
	}
	sev := runner.SeverityWarning
	if r.Severity != "" {
		if sev, err = runner.ParseSeverity(r.Severity); err != nil {
			return nil, fmt.Errorf("%s: %w", r.Code, err)
		}
	}
	if r.Threshold == 0 {
		r.Threshold = 1
	}
	if r.Threshold < 0 || r.Window < 0 {
		return nil, fmt.Errorf("%s: threshold and window must not be negative", r.Code)
	}
	if r.Threshold > 100000 {
		return nil, fmt.Errorf("%s: threshold above 100000", r.Code)
	}
	return &userRule{UserRule: r, re: re, sev: sev, group: re.SubexpIndex(r.GroupBy)}, nil
}
