package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
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
			lockPath := cfg.History.Path + ".lock"
			pid, err := lockHolder(lockPath)
			if err != nil {
				return fmt.Errorf("health: %w", err)
			}
			if pid == 0 {
				return fmt.Errorf("health: no vigil daemon is running on %s", cfg.History.Path)
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
				return g.emit(map[string]any{"healthy": true, "daemon_pid": pid, "history": cfg.History.Path, "jobs": len(specs), "jobs_with_runs": len(last)})
			}
			g.out("healthy: daemon (pid %d) running on %s, %d job(s), %d with recorded runs\n", pid, cfg.History.Path, len(specs), len(last))
			return nil
		},
	}
	rf.addConfigFlag(c)
	return c
}

// lockHolder returns the pid holding the daemon's flock on path, or 0 when
// none does. It reads /proc/locks rather than trying the lock: a check
// that took the lock, however briefly, could make a daemon starting at
// that moment believe another one runs and exit.
func lockHolder(path string) (int, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("daemon lock: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("daemon lock %s: no inode information", path)
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, fmt.Errorf("daemon lock: %w", err)
	}
	// "1: FLOCK  ADVISORY  WRITE 2715 fe:00:9989129 0 EOF"
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[3] != "WRITE" {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 || dev[2] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			continue
		}
		return max(pid, 1), nil // 1 stands for a holder in another pid namespace
	}
	return 0, nil
}
