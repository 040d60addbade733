package configexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"time"
)

// CommandSource runs a local program (no shell) and keeps its stdout:
// ldapsearch for Active Directory, a vendor's export tool, a script.
type CommandSource struct {
	Argv []string `yaml:"argv"`
	Dir  string   `yaml:"dir"`
	// EnvAllow names variables passed through from vigil's environment;
	// nothing else is (vigil's own secrets stay out of the child).
	EnvAllow []string          `yaml:"env_allow"`
	Env      map[string]string `yaml:"env"`
}

func (c CommandSource) isZero() bool { return len(c.Argv) == 0 && c.Dir == "" && len(c.Env) == 0 }

type commandSource struct{ c CommandSource }

func newCommand(c CommandSource) (source, error) {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return nil, errors.New("argv is required: the program and its arguments")
	}
	for i, n := range c.EnvAllow {
		if !envName.MatchString(n) {
			return nil, fmt.Errorf("env_allow entry %d: invalid variable name %q", i, n)
		}
	}
	for n := range c.Env {
		if !envName.MatchString(n) {
			return nil, fmt.Errorf("env: invalid variable name %q", n)
		}
	}
	return &commandSource{c: c}, nil
}

func (s *commandSource) export(ctx context.Context, out *capture, log *slog.Logger, red *redactor) error {
	c := s.c
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = []string{}
	for _, n := range c.EnvAllow {
		if v, ok := os.LookupEnv(n); ok {
			cmd.Env = append(cmd.Env, n+"="+v)
		}
	}
	for k, v := range c.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Own process group, so a timeout stops the tool's children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	stderr := &tail{n: 512}
	cmd.Stdout = out
	cmd.Stderr = stderr
	log.Debug("running export command", "program", c.Argv[0])
	err := cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("command %s: stopped: %w", c.Argv[0], context.Cause(ctx))
	}
	if msg := stderr.String(); msg != "" {
		return fmt.Errorf("command %s: %w: %s", c.Argv[0], err, red.Redact(lastLine(msg)))
	}
	return fmt.Errorf("command %s: %w", c.Argv[0], err)
}

func lastLine(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
