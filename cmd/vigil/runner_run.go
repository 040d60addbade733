package main

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/runner"
)

func newRunJobCmd(rf *runnerFlags) *cobra.Command {
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
	return c
}
