// Package configexport is the "configexport" job kind: it pulls the
// configuration of switches, controllers, vCenter and anything else that
// can print its settings (ssh, http, a local command, the vCenter
// inventory), normalises and redacts it, stores every version in the
// repository and reports what changed since the last export.
//
// Each run commits one snapshot labelled with the job; target T's export is
// the single file under /configs/T/. A target whose export is unchanged
// reuses the earlier node as it is, so it adds no data and no new tree; a
// target that failed is absent from that run's snapshot (history skips
// over it rather than showing a stale copy as if it were fresh).
package configexport

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/vigilops/vigil/configs"
)

// Params is the kind's with: section.
type Params struct {
	// Concurrency is how many targets export at once (default 4).
	Concurrency int `yaml:"concurrency"`
	// Timeout applies to each target that sets none (default 2m).
	Timeout configs.Duration `yaml:"timeout"`
	// MaxOutput caps one target's export; more is cut and reported
	// (default 8MiB).
	MaxOutput configs.ByteSize `yaml:"max_output"`
	// StoreSecrets keeps the stored copy complete (the repository is
	// encrypted); false stores the redacted text instead. Default true.
	StoreSecrets string `yaml:"store_secrets"`
	// LockWait is how long to wait for the repository lock (default 10m).
	LockWait configs.Duration `yaml:"lock_wait"`
	// Volatile and Redact add regexes for every target.
	Volatile []string `yaml:"volatile"`
	Redact   []string `yaml:"redact"`
	// Profiles adds or overrides ssh device profiles by name.
	Profiles map[string]Profile `yaml:"profiles"`
	Targets  []Target           `yaml:"targets"`
}

// Target is one thing to export. Exactly one source block is set.
type Target struct {
	Name      string           `yaml:"name"`
	Timeout   configs.Duration `yaml:"timeout"`
	MaxOutput configs.ByteSize `yaml:"max_output"`
	// Volatile lines (regexes) are dropped before storing and diffing.
	Volatile []string `yaml:"volatile"`
	// Redact regexes hide secrets: capture groups are replaced when the
	// regex has any, the whole match otherwise.
	Redact []string `yaml:"redact"`

	SSH              SSHSource     `yaml:"ssh"`
	HTTP             HTTPSource    `yaml:"http"`
	Command          CommandSource `yaml:"command"`
	VCenterInventory VCenterSource `yaml:"vcenter_inventory"`
}

// SourceName is the kind of source the target uses ("" if none is set).
func (t Target) SourceName() string {
	names := t.sources()
	if len(names) == 1 {
		return names[0]
	}
	return ""
}

func (t Target) sources() []string {
	var s []string
	if !t.SSH.isZero() {
		s = append(s, "ssh")
	}
	if !t.HTTP.isZero() {
		s = append(s, "http")
	}
	if !t.Command.isZero() {
		s = append(s, "command")
	}
	if !t.VCenterInventory.isZero() {
		s = append(s, "vcenter_inventory")
	}
	return s
}

// fileName is the name of the stored file under /configs/<target>/.
func (t Target) fileName() string {
	switch t.SourceName() {
	case "ssh":
		return "running-config.txt"
	case "http":
		if t.HTTP.Format == "text" {
			return "export.txt"
		}
		return "export.json"
	case "command":
		return "output.txt"
	case "vcenter_inventory":
		if t.VCenterInventory.Format == "json" {
			return "inventory.json"
		}
		return "inventory.yaml"
	}
	return "export.txt"
}

// targetName is what a target may be called: it becomes a path element
// and appears in findings, so keep it plain.
var targetName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func defaultParams() Params {
	return Params{
		Concurrency: 4,
		Timeout:     configs.Duration(2 * time.Minute),
		MaxOutput:   8 << 20,
		LockWait:    configs.Duration(10 * time.Minute),
	}
}

// validate checks p and compiles what each target needs. It does no I/O.
func (p *Params) validate(w configs.With) ([]*target, configs.Errors) {
	var errs configs.Errors
	if p.Concurrency < 1 || p.Concurrency > 256 {
		errs = append(errs, w.Errorf("concurrency", "must be between 1 and 256, got %d", p.Concurrency))
	}
	if p.Timeout <= 0 {
		errs = append(errs, w.Errorf("timeout", "must be positive"))
	}
	if p.MaxOutput <= 0 {
		errs = append(errs, w.Errorf("max_output", "must be positive"))
	}
	switch strings.ToLower(p.StoreSecrets) {
	case "", "true", "false":
	default:
		errs = append(errs, w.Errorf("store_secrets", "must be true or false, got %q", p.StoreSecrets))
	}
	if len(p.Targets) == 0 {
		errs = append(errs, w.Errorf("targets", "is required: at least one target to export"))
	}
	globalVolatile, e := compileAll(p.Volatile)
	for _, m := range e {
		errs = append(errs, w.Errorf("volatile", "%s", m))
	}
	globalRedact, e := compileAll(p.Redact)
	for _, m := range e {
		errs = append(errs, w.Errorf("redact", "%s", m))
	}
	profiles := builtinProfiles()
	for name, prof := range p.Profiles {
		if _, err := prof.compile(); err != nil {
			errs = append(errs, w.Errorf("profiles."+name, "%v", err))
		}
		profiles[name] = prof
	}

	seen := map[string]bool{}
	var out []*target
	for i, t := range p.Targets {
		field := fmt.Sprintf("targets[%d]", i)
		bad := func(format string, args ...any) {
			errs = append(errs, w.Errorf(field, "%s", fmt.Sprintf(format, args...)))
		}
		if !targetName.MatchString(t.Name) {
			bad("name %q: use letters, digits, '.', '_' and '-' (it becomes a path in the repository)", t.Name)
		} else if seen[t.Name] {
			bad("name %q is used twice", t.Name)
		}
		seen[t.Name] = true
		if t.Timeout < 0 {
			bad("timeout must not be negative")
		}
		if t.MaxOutput < 0 {
			bad("max_output must not be negative")
		}
		tg := &target{Target: t, timeout: t.Timeout.D(), maxOutput: int64(t.MaxOutput)}
		if tg.timeout == 0 {
			tg.timeout = p.Timeout.D()
		}
		if tg.maxOutput == 0 {
			tg.maxOutput = int64(p.MaxOutput)
		}
		srcs := t.sources()
		switch len(srcs) {
		case 0:
			bad("needs a source: one of ssh, http, command or vcenter_inventory")
			continue
		case 1:
		default:
			bad("has %d sources (%s): set exactly one", len(srcs), strings.Join(srcs, ", "))
			continue
		}
		volatile, e := compileAll(t.Volatile)
		for _, m := range e {
			bad("volatile: %s", m)
		}
		redact, e := compileAll(t.Redact)
		for _, m := range e {
			bad("redact: %s", m)
		}
		tg.volatile = append(slices.Clone(globalVolatile), volatile...)
		tg.redactor = newRedactor(append(slices.Clone(globalRedact), redact...))
		var err error
		switch srcs[0] {
		case "ssh":
			tg.src, err = newSSH(t.SSH, profiles)
		case "http":
			tg.src, err = newHTTP(t.HTTP)
		case "command":
			tg.src, err = newCommand(t.Command)
		case "vcenter_inventory":
			tg.src, err = newVCenter(t.VCenterInventory)
		}
		if err != nil {
			errs = append(errs, w.Errorf(field, "%s: %v", srcs[0], err))
			continue
		}
		if r, ok := tg.src.(ruleSource); ok {
			x := r.rules()
			tg.volatile = append(tg.volatile, x.volatile...)
			tg.pager = x.pager
			tg.redactor = newRedactor(append(append(slices.Clone(globalRedact), redact...), x.redact...))
		}
		out = append(out, tg)
	}
	return out, errs
}

func compileAll(exprs []string) ([]*regexp.Regexp, []string) {
	var out []*regexp.Regexp
	var errs []string
	for _, e := range exprs {
		re, err := regexp.Compile(e)
		if err != nil {
			errs = append(errs, fmt.Sprintf("bad regex %q: %v", e, err))
			continue
		}
		out = append(out, re)
	}
	return out, errs
}
