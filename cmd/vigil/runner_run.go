package main

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/history"
)

func newRunJobCmd(rf *runnerFlags) *cobra.Command {
	var dryRun bool
	c := &cobra.Command{
		Use:   "run JOB",
		Short: "Run a configured job now, in the foreground (recorded with trigger manual)",
		Long: "Run a configured job now. The exit status reflects the run: 0 success, 3 partial,\n" +
			"1 failed or skipped (already running), 130 cancelled; 1 also when the run could not be recorded.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			cfg, reg, err := rf.load(rf.configPath())
			if err != nil {
				return err
			}
			level := slog.LevelInfo
			if g.quiet || g.json {
				level = slog.LevelWarn
			}
			if g.verbose {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
			ctx := cmd.Context()
			if dryRun {
				return runDry(cmd, rf, cfg, reg, args[0])
			}
			hist, herr := openHistory(ctx, cfg, log, false)
			defer hist.Close()
			specs, err := reg.Build(cfg)
			if err != nil {
				return withCode(exitUsage, err)
			}
			var mu sync.Mutex // progress may come from the job's goroutines
			r, err := runner.New(specs, runner.Options{
				History: hist, Logger: log, GroupLimits: cfg.ConcurrencyGroups,
				OpenRepository: rf.repoOpener(cfg), Locker: jobLocker(cfg), MaxLogLines: cfg.History.MaxLogLines,
				OnProgress: func(run runner.Run, p runner.Progress) {
					mu.Lock()
					defer mu.Unlock()
					if g.json {
						_ = g.emit(map[string]any{"message_type": "progress", "job": run.Job, "run": run.ID, "progress": p})
					} else if !g.quiet {
						fmt.Fprintf(g.stderr, "%s: %s %d/%d %s %s\n", run.Job, p.Phase, p.Done, p.Total, p.Unit, p.Message)
					}
				},
			})
			if err != nil {
				return err
			}
			run, err := r.RunNow(ctx, args[0], runner.TriggerManual)
			if err != nil {
				return withCode(exitUsage, err)
			}
			if g.json {
				if err := g.emit(map[string]any{"message_type": "summary", "run": run}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "run %d of %s: %s after %s (attempts: %d)\n", run.ID, run.Job, run.Status, run.Duration().Round(1e6), run.Attempt)
				if run.Error != "" {
					fmt.Fprintf(g.stdout, "  error: %s\n", run.Error)
				}
			}
			if code := statusExit(run); code != exitOK {
				return withCode(code, fmt.Errorf("job %s: %s", run.Job, run.Status))
			}
			if herr != nil || r.HistoryErrors() > 0 {
				return withCode(exitError, fmt.Errorf("job %s succeeded but its run was not recorded: history %s is unavailable", run.Job, cfg.History.Path))
			}
			return nil
		},
	}
	rf.addConfigFlag(c)
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what the job would do; change nothing and record no run (kinds that support it)")
	return c
}

// runDry runs a job with runner.DryRun: the job's plan goes to stdout as
// log lines; the history is only read (for the job's state), never written.
func runDry(cmd *cobra.Command, rf *runnerFlags, cfg *configs.Config, reg *jobs.Registry, name string) error {
	g := rf.g
	ctx := cmd.Context()
	var hist runner.History
	if h, err := history.Open(ctx, cfg.History.Path, history.Options{ReadOnly: true}); err == nil {
		hist = h
	} else {
		g.logger().Warn("history unreadable; the dry run starts from empty job state", "path", cfg.History.Path, "err", err)
		hist = runner.NewMemHistory()
	}
	defer hist.Close()
	specs, err := reg.Build(cfg)
	if err != nil {
		return withCode(exitUsage, err)
	}
	r, err := runner.New(specs, runner.Options{History: hist})
	if err != nil {
		return err
	}
	var out slog.Handler = slog.NewTextHandler(g.stdout, nil)
	if g.json {
		out = slog.NewJSONHandler(g.stdout, nil)
	}
	res, err := r.DryRun(ctx, name, slog.New(out))
	if err != nil {
		return withCode(exitUsage, err)
	}
	if g.json {
		msg := map[string]any{"message_type": "summary", "dry_run": true, "job": name, "summary": res.Summary, "findings": res.Findings}
		if res.Err != nil {
			msg["error"] = res.Err.Error()
		}
		if err := g.emit(msg); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.stdout, "dry run of %s: %d finding(s), nothing changed\n", name, len(res.Findings))
		for _, f := range res.Findings {
			fmt.Fprintf(g.stdout, "  [%s] %s %s: %s\n", f.Severity, f.Code, f.Subject, f.Message)
		}
	}
	if res.Err != nil {
		if runner.IsPartial(res.Err) {
			return withCode(exitPartial, fmt.Errorf("dry run of %s: %w", name, res.Err))
		}
		return fmt.Errorf("dry run of %s: %w", name, res.Err)
	}
	return nil
}
