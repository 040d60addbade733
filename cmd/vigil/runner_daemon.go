package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/runner"
)

func newDaemonCmd(rf *runnerFlags) *cobra.Command {
	var logFormat, logLevel string
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Run the scheduler in the foreground until SIGTERM or SIGINT",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(rf.g.stderr, logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg, reg, err := rf.load(rf.configPath())
			if err != nil {
				return err
			}
			log = log.With("component", "daemon")
			if err := os.MkdirAll(filepath.Dir(cfg.History.Path), 0o750); err != nil {
				return fmt.Errorf("daemon: %w", err)
			}
			// One daemon per history: a second one would run every job twice.
			lock, err := runner.LockFile(cfg.History.Path + ".lock")
			if errors.Is(err, runner.ErrLocked) {
				return withCode(exitLocked, fmt.Errorf("another vigil daemon is running on this history: %w", err))
			}
			if err != nil {
				return fmt.Errorf("daemon: %w", err)
			}
			defer lock.Unlock()

			ctx := cmd.Context()
			hist, herr := openHistory(ctx, cfg, log, false)
			defer hist.Close()
			specs, err := reg.Build(cfg)
			if err != nil {
				return withCode(exitUsage, err)
			}
			r, err := runner.New(specs, runner.Options{
				History: hist, Logger: log, GroupLimits: cfg.ConcurrencyGroups,
				OpenRepository: rf.repoOpener(cfg), Locker: jobLocker(cfg), MaxLogLines: cfg.History.MaxLogLines,
			})
			if err != nil {
				return err
			}
			log.Info("vigil daemon starting", "version", version, "config", cfg.File, "history", cfg.History.Path, "jobs", len(specs), "pid", os.Getpid())
			var wg sync.WaitGroup
			if herr == nil && cfg.History.Keep > 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					pruneHistory(ctx, hist, cfg.History.Keep.D(), log)
				}()
			}
			err = r.Run(ctx)
			wg.Wait()
			log.Info("vigil daemon stopped", "history_errors", r.HistoryErrors())
			return err
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
	c.Flags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return c
}

// pruneHistory drops history rows older than keep, at start and daily.
func pruneHistory(ctx context.Context, h runner.History, keep time.Duration, log *slog.Logger) {
	t := time.NewTicker(24 * time.Hour)
	defer t.Stop()
	for {
		n, err := h.Prune(ctx, time.Now().Add(-keep))
		switch {
		case err != nil && ctx.Err() == nil:
			log.Error("prune history", "err", err)
		case n > 0:
			log.Info("pruned old history", "runs", n, "older_than", keep)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
