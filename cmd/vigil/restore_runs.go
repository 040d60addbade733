package main

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/vigilops/vigil/runner"
)

// recordRestore writes a finished restore into the run history as a manual
// run, so restores show beside the backups they came from. A history that
// cannot be written is logged, never a failed restore.
func recordRestore(h runner.Recorder, job, kind string, start time.Time, err error, sum runner.Summary, log *slog.Logger) int64 {
	if h == nil {
		return 0
	}
	end := time.Now()
	if sum.Extra == nil {
		sum.Extra = map[string]any{}
	}
	if secs := end.Sub(start).Seconds(); secs > 0 && sum.BytesRead > 0 {
		sum.Extra["mb_per_s"] = float64(sum.BytesRead) / 1e6 / secs
	}
	run := runner.Run{Job: job, Kind: kind, Trigger: runner.TriggerManual, StartedAt: start, FinishedAt: end,
		Status: runner.StatusSuccess, Attempt: 1, Summary: sum, PID: os.Getpid()}
	if err != nil {
		run.Status, run.Error = runner.StatusFailed, err.Error()
	}
	// Detached and short: the restore is done whatever the history does.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, herr := h.Record(ctx, run)
	if herr != nil {
		log.Error("restore not recorded in the run history", "err", herr)
		return 0
	}
	return id
}
