// Package command is the "command" job kind: it runs an argv (no shell),
// streams its output into the run log, and maps exit codes to run
// statuses. The child sees only the environment variables the config
// allows, so vigil's secrets do not leak into admin scripts by accident.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// Params is the kind's with: section.
type Params struct {
	// Argv is the program and its arguments; the program is looked up in
	// vigil's PATH when it has no slash.
	Argv []string `yaml:"argv"`
	Dir  string   `yaml:"dir"`
	// EnvAllow names variables passed through from vigil's environment.
	EnvAllow []string `yaml:"env_allow"`
	// Env sets variables for the child (after EnvAllow).
	Env map[string]string `yaml:"env"`
	// MaxOutput caps the output kept in the run log (default 1MiB).
	MaxOutput configs.ByteSize `yaml:"max_output"`
	// SuccessCodes are exit codes that mean success (default [0]).
	SuccessCodes []int `yaml:"success_codes"`
	// PartialCodes mean "mostly worked" (rsync's 24, for instance).
	PartialCodes []int `yaml:"partial_codes"`
	// RetryCodes are worth retrying (with the job's retries).
	RetryCodes []int `yaml:"retry_codes"`
	// KillGrace is how long the program gets after SIGTERM before SIGKILL
	// on timeout or shutdown (default 10s).
	KillGrace configs.Duration `yaml:"kill_grace"`
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// New builds a command job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p := Params{MaxOutput: 1 << 20, SuccessCodes: []int{0}, KillGrace: configs.Duration(10 * time.Second)}
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	var errs configs.Errors
	w := job.With
	if len(p.Argv) == 0 || p.Argv[0] == "" {
		errs = append(errs, w.Errorf("argv", "is required: the program and its arguments, e.g. [/usr/local/bin/report, --daily]"))
	}
	for i, n := range p.EnvAllow {
		if !envName.MatchString(n) {
			errs = append(errs, w.Errorf("env_allow", "entry %d: invalid variable name %q", i, n))
		}
	}
	for n := range p.Env {
		if !envName.MatchString(n) {
			errs = append(errs, w.Errorf("env", "invalid variable name %q", n))
		}
	}
	for _, codes := range []struct {
		field string
		list  []int
	}{{"success_codes", p.SuccessCodes}, {"partial_codes", p.PartialCodes}, {"retry_codes", p.RetryCodes}} {
		for _, c := range codes.list {
			if c < 0 || c > 255 {
				errs = append(errs, w.Errorf(codes.field, "exit code %d is outside 0-255", c))
			}
		}
	}
	if p.MaxOutput < 0 {
		errs = append(errs, w.Errorf("max_output", "must not be negative"))
	}
	if p.KillGrace <= 0 {
		errs = append(errs, w.Errorf("kill_grace", "must be positive"))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &Job{p: p}, nil
}

// Job runs one command.
type Job struct {
	p Params
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	p := j.p
	cmd := exec.CommandContext(ctx, p.Argv[0], p.Argv[1:]...)
	cmd.Dir = p.Dir
	cmd.Env = j.environ(os.LookupEnv)
	// Own process group, so a timeout stops the script's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = p.KillGrace.D()
	out := &output{rc: rc, max: int64(p.MaxOutput)}
	cmd.Stdout = out.stream("stdout")
	cmd.Stderr = out.stream("stderr")

	start := time.Now()
	rc.Log().Info("starting command", "argv", fmt.Sprintf("%q", p.Argv))
	err := cmd.Run()
	if cmd.Process != nil {
		// Whatever is left of the group after the leader exited.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	out.flush()
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	rc.SetSummary(runner.Summary{Extra: map[string]any{
		"exit_code": code, "output_bytes": out.total, "output_truncated": out.dropped > 0, "seconds": time.Since(start).Seconds(),
	}})
	var exitErr *exec.ExitError
	switch {
	case err == nil || (errors.As(err, &exitErr) && slices.Contains(p.SuccessCodes, code)):
		if !slices.Contains(p.SuccessCodes, code) {
			return fmt.Errorf("command %s: exit status %d is not a success code%s", p.Argv[0], code, out.lastStderr())
		}
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("command %s: stopped: %w", p.Argv[0], ctx.Err())
	case errors.As(err, &exitErr) && code >= 0:
		e := fmt.Errorf("command %s: exit status %d%s", p.Argv[0], code, out.lastStderr())
		if slices.Contains(p.PartialCodes, code) {
			return runner.Partial(e)
		}
		if slices.Contains(p.RetryCodes, code) {
			return runner.Retryable(e)
		}
		return e
	default:
		return fmt.Errorf("command %s: %w", p.Argv[0], err)
	}
}

// environ builds the child's environment from the allow-list and Env.
func (j *Job) environ(lookup func(string) (string, bool)) []string {
	env := []string{}
	for _, n := range j.p.EnvAllow {
		if v, ok := lookup(n); ok {
			env = append(env, n+"="+v)
		}
	}
	keys := make([]string, 0, len(j.p.Env))
	for k := range j.p.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		env = append(env, k+"="+j.p.Env[k])
	}
	return env
}

// maxLine cuts very long lines so one line cannot eat the log budget.
const maxLine = 4096

// output turns the child's output into run log lines, up to max bytes.
type output struct {
	rc      runner.RunContext
	max     int64
	mu      sync.Mutex
	total   int64
	dropped int64
	streams []*stream
	stderr  string // last stderr line, for the error message
}

type stream struct {
	o    *output
	name string
	buf  []byte
}

func (o *output) stream(name string) *stream {
	s := &stream{o: o, name: name}
	o.streams = append(o.streams, s)
	return s
}

func (s *stream) Write(b []byte) (int, error) {
	s.o.mu.Lock()
	defer s.o.mu.Unlock()
	s.buf = append(s.buf, b...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			if len(s.buf) >= maxLine {
				i = maxLine
			} else {
				break
			}
		}
		s.o.line(s.name, string(s.buf[:i]))
		if i < len(s.buf) && s.buf[i] == '\n' {
			i++
		}
		s.buf = s.buf[i:]
	}
	return len(b), nil
}

// line logs one line; callers hold o.mu.
func (o *output) line(stream, text string) {
	o.total += int64(len(text)) + 1
	if stream == "stderr" && text != "" {
		o.stderr = text
	}
	if o.total > o.max {
		o.dropped += int64(len(text)) + 1
		return
	}
	o.rc.Log().Info(text, "stream", stream)
}

func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.streams {
		if len(s.buf) > 0 {
			o.line(s.name, string(s.buf))
			s.buf = nil
		}
	}
	if o.dropped > 0 {
		o.rc.Log().Warn("command output truncated", "kept_bytes", o.max, "dropped_bytes", o.dropped)
	}
}

func (o *output) lastStderr() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.stderr == "" {
		return ""
	}
	return ": " + o.stderr
}
