// Package logrotate is the "logrotate" job kind: it rotates log files
// that grew too large or too old, compresses and expires the rotated
// copies, and optionally archives them into the repository before any is
// deleted.
//
// Differences from logrotate(8) on purpose: the per-file state lives in
// the history database and is written only after a rotation succeeded (a
// crash repeats a rotation rather than forgetting one), a state entry that
// cannot be read only affects its own file, and with archive: true a
// rotated file is never deleted before the repository holds it.
package logrotate

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// Params is the kind's with: section.
type Params struct {
	// Paths are file globs ("/var/log/nginx/*.log"). Rotated and
	// compressed copies matched by a glob are ignored.
	Paths []string `yaml:"paths"`
	// Size rotates a file at or above this size (0: no size trigger).
	Size configs.ByteSize `yaml:"size"`
	// Age rotates a file when its last rotation is at least this old
	// (0: no age trigger). A file seen for the first time starts its clock.
	Age configs.Duration `yaml:"age"`
	// MinSize keeps the age trigger from rotating tiny files.
	MinSize configs.ByteSize `yaml:"min_size"`
	// RotateEmpty rotates empty files too (default false).
	RotateEmpty bool `yaml:"rotate_empty"`
	// Keep is how many rotated files to keep (0: no count limit).
	Keep int `yaml:"keep"`
	// MaxAge deletes rotated files older than this (0: no age limit).
	MaxAge configs.Duration `yaml:"max_age"`
	// Compress is gzip (default), zstd or none.
	Compress string `yaml:"compress"`
	// DelayCompress leaves the newest rotated file uncompressed until the
	// next rotation, for writers that keep writing to it for a while.
	DelayCompress bool `yaml:"delay_compress"`
	// Suffix is counter (app.log.1, default) or date (app.log-20260301).
	Suffix string `yaml:"suffix"`
	// DateFormat is a Go time layout for date suffixes (default 20060102).
	DateFormat string `yaml:"date_format"`
	// Method is create (rename, create a new file with the same owner and
	// mode, tell the writer) or copytruncate (copy, then truncate in place:
	// lines written between the copy and the truncation are lost).
	Method string `yaml:"method"`
	// PIDFile names a file holding the writer's pid; it gets Signal after
	// the rotation.
	PIDFile string `yaml:"pid_file"`
	// Signal is sent to PIDFile's process: HUP (default), USR1, USR2.
	Signal string `yaml:"signal"`
	// PostRotate is run once per run after files were rotated, without a
	// shell (e.g. [/usr/sbin/nginx, -s, reopen]).
	PostRotate []string `yaml:"post_rotate"`
	// Settle is how long to wait after telling writers to reopen before
	// compressing what was just rotated (default 1s), so lines a writer
	// was still flushing to the old file are compressed too.
	Settle configs.Duration `yaml:"settle"`
	// Archive stores rotated files in the repository; retention then
	// deletes only files the repository holds.
	Archive bool `yaml:"archive"`
	// Tags are added to archive snapshots (with "logrotate").
	Tags []string `yaml:"tags"`
}

var signals = map[string]syscall.Signal{"HUP": syscall.SIGHUP, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2}

// New builds a logrotate job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p := Params{Compress: "gzip", Suffix: "counter", DateFormat: "20060102", Method: "create", Signal: "HUP", Settle: configs.Duration(time.Second)}
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	var errs configs.Errors
	w := job.With
	if len(p.Paths) == 0 {
		errs = append(errs, w.Errorf("paths", "is required: globs of log files, e.g. [/var/log/app/*.log]"))
	}
	for _, g := range p.Paths {
		if !filepath.IsAbs(g) {
			errs = append(errs, w.Errorf("paths", "%q is not absolute", g))
		} else if _, err := filepath.Match(g, "x"); err != nil {
			errs = append(errs, w.Errorf("paths", "bad glob %q: %v", g, err))
		}
	}
	if p.Size <= 0 && p.Age <= 0 {
		errs = append(errs, w.Errorf("", "set size and/or age: without a trigger nothing is ever rotated"))
	}
	if p.Size < 0 || p.MinSize < 0 || p.Age < 0 || p.MaxAge < 0 || p.Keep < 0 || p.Settle < 0 {
		errs = append(errs, w.Errorf("", "size, min_size, age, max_age, keep and settle must not be negative"))
	}
	switch p.Compress {
	case "gzip", "zstd", "none":
	default:
		errs = append(errs, w.Errorf("compress", "must be gzip, zstd or none, got %q", p.Compress))
	}
	switch p.Suffix {
	case "counter":
	case "date":
		if p.DateFormat == "" || strings.ContainsAny(p.DateFormat, "/") || time.Unix(0, 0).Format(p.DateFormat) == p.DateFormat {
			errs = append(errs, w.Errorf("date_format", "%q is not a usable Go time layout (e.g. 20060102)", p.DateFormat))
		}
	default:
		errs = append(errs, w.Errorf("suffix", "must be counter or date, got %q", p.Suffix))
	}
	switch p.Method {
	case "create", "copytruncate":
	default:
		errs = append(errs, w.Errorf("method", "must be create or copytruncate, got %q", p.Method))
	}
	if _, ok := signals[strings.TrimPrefix(strings.ToUpper(p.Signal), "SIG")]; !ok {
		errs = append(errs, w.Errorf("signal", "must be HUP, USR1 or USR2, got %q", p.Signal))
	}
	if p.Method == "copytruncate" && (p.PIDFile != "" || len(p.PostRotate) > 0) {
		errs = append(errs, w.Errorf("method", "copytruncate keeps the file open for the writer: pid_file and post_rotate are for method create"))
	}
	if len(p.PostRotate) > 0 && p.PostRotate[0] == "" {
		errs = append(errs, w.Errorf("post_rotate", "the program is empty"))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	p.Signal = strings.TrimPrefix(strings.ToUpper(p.Signal), "SIG")
	return &Job{p: p, now: time.Now}, nil
}

// Job rotates the configured files.
type Job struct {
	p   Params
	now func() time.Time // injected by tests
}

func (p Params) compressExt() string {
	switch p.Compress {
	case "gzip":
		return ".gz"
	case "zstd":
		return ".zst"
	}
	return ""
}

func (j *Job) String() string { return fmt.Sprintf("logrotate(%v)", j.p.Paths) }
