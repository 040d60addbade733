package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/history"
	"github.com/vigilops/vigil/storage/repo"
)

// addRunnerCommands wires the scheduler, job and history commands
// (daemon, run, jobs, runs, config). Owned by the runner work (issue 4).
func addRunnerCommands(root *cobra.Command, g *globals) {
	rf := &runnerFlags{g: g}
	root.AddCommand(
		newDaemonCmd(rf),
		newRunJobCmd(rf),
		newJobsCmd(rf),
		newRunsCmd(rf),
		newConfigCmd(rf),
		newFindingsCmd(rf),
		newHealthCmd(rf),
	)
}

const defaultConfigPath = "/etc/vigil/vigil.yaml"

// runnerFlags holds what the runner commands share.
type runnerFlags struct {
	g      *globals
	config string
}

func (rf *runnerFlags) addConfigFlag(c *cobra.Command) {
	c.Flags().StringVarP(&rf.config, "config", "c", "", "config file (env VIGIL_CONFIG, default "+defaultConfigPath+")")
}

func (rf *runnerFlags) configPath() string {
	if rf.config != "" {
		return rf.config
	}
	if p := os.Getenv("VIGIL_CONFIG"); p != "" {
		return p
	}
	return defaultConfigPath
}

// load reads and validates the config; invalid configs are usage errors
// (exit 2) and every problem is printed.
func (rf *runnerFlags) load(path string) (*configs.Config, *jobs.Registry, error) {
	reg := jobs.Default()
	cfg, err := configs.Load(path, configs.Options{Kinds: reg})
	var es configs.Errors
	if errors.As(err, &es) {
		return cfg, reg, withCode(exitUsage, fmt.Errorf("%d problem(s) in the config:\n%w", len(es), es))
	}
	if err != nil {
		return nil, nil, withCode(exitUsage, err)
	}
	return cfg, reg, nil
}

// openHistory opens the run history. When it cannot be opened, writers get
// an in-memory history and a loud error (jobs must still run); the error
// is returned as well so callers can reflect it in their exit status.
func openHistory(ctx context.Context, cfg *configs.Config, log *slog.Logger, readOnly bool) (runner.History, error) {
	h, err := history.Open(ctx, cfg.History.Path, history.Options{ReadOnly: readOnly})
	if err == nil {
		return h, nil
	}
	if readOnly {
		return nil, err
	}
	log.Error("HISTORY UNAVAILABLE: jobs will run but their runs are NOT recorded; fix or move the database file",
		"path", cfg.History.Path, "err", err)
	return runner.NewMemHistory(), err
}

// jobLocker keeps per-job lock files next to the history, so `vigil run`
// and the daemon never run one job twice at once.
func jobLocker(cfg *configs.Config) runner.JobLocker {
	return runner.NewDirLocker(filepath.Join(filepath.Dir(cfg.History.Path), "locks"))
}

// repoOpener opens the configured repository on first use by a job.
func (rf *runnerFlags) repoOpener(cfg *configs.Config) func(ctx context.Context) (any, error) {
	if cfg.Repository.URL == "" {
		return nil
	}
	return func(ctx context.Context) (any, error) {
		g := rf.g
		if g.repo == "" {
			g.repo = cfg.Repository.URL
		}
		st, err := g.openStore(ctx, false)
		if err != nil {
			return nil, err
		}
		pw := cfg.Repository.Password.Reveal()
		if pw == "" {
			if pw, err = g.password(""); err != nil {
				return nil, err
			}
		}
		r, err := repo.Open(ctx, st, pw, g.repoOptions())
		if err != nil {
			return nil, err
		}
		return r, nil
	}
}

// newLogger builds the daemon's logger.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErr("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErr("--log-format must be text or json, got %q", format)
}

// statusExit maps a run's status to the exit status of `vigil run`.
func statusExit(r runner.Run) int {
	switch r.Status {
	case runner.StatusSuccess:
		return exitOK
	case runner.StatusPartial:
		return exitPartial
	case runner.StatusCancelled:
		return exitInterrupted
	}
	return exitError
}

// age prints how long ago t was, coarsely.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// nextRuns lists a schedule's next n start times.
func nextRuns(s runner.Schedule, from time.Time, n int) []time.Time {
	var out []time.Time
	for t := from; s != nil && len(out) < n; {
		if t = s.Next(t); t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

func scheduleText(s runner.Spec) string {
	switch {
	case s.Schedule == nil:
		return "manual"
	case s.Disabled:
		return s.Schedule.String() + " (disabled)"
	}
	return s.Schedule.String()
}

func joinTimes(ts []time.Time) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Format("2006-01-02 15:04 MST")
	}
	return strings.Join(parts, ", ")
}
