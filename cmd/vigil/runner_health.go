package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/runner"
)

// newHealthCmd is what container health checks and monitoring call: it
// answers "is a daemon running on this config, and is its history
// readable?" without writing anything a daemon needs.
func newHealthCmd(rf *runnerFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if a vigil daemon holds this config's history and the history is readable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			cfg, reg, err := rf.load(rf.configPath())
			if err != nil {
				return err
			}
			specs, err := reg.Build(cfg)
			if err != nil {
				return withCode(exitUsage, err)
			}
			// The daemon holds this flock for its whole life. Taking it here
			// succeeds only when no daemon runs; it is dropped at once.
			lockPath := cfg.History.Path + ".lock"
			lock, err := runner.LockFile(lockPath)
			switch {
			case err == nil:
				_ = lock.Unlock()
				return fmt.Errorf("health: no vigil daemon is running on %s", cfg.History.Path)
			case !errors.Is(err, runner.ErrLocked):
				return fmt.Errorf("health: %w", err)
			}
			h, err := openHistory(cmd.Context(), cfg, slog.New(slog.DiscardHandler), true)
			if err != nil {
				// The daemon keeps running jobs on an in-memory history; that
				// is exactly what a health check must flag.
				return fmt.Errorf("health: history unreadable, runs are not being recorded: %w", err)
			}
			defer h.Close()
			last, err := h.LastRuns(cmd.Context())
			if err != nil {
				return fmt.Errorf("health: history: %w", err)
			}
			if g.json {
				return g.emit(map[string]any{"healthy": true, "history": cfg.History.Path, "jobs": len(specs), "jobs_with_runs": len(last)})
			}
			g.out("healthy: daemon running on %s, %d job(s), %d with recorded runs\n", cfg.History.Path, len(specs), len(last))
			return nil
		},
	}
	rf.addConfigFlag(c)
	return c
}
