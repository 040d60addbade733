package runner

import (
	"context"
	"errors"
	"time"
)

// Recorder is the part of the history the runner writes. Every method is
// called with a short, detached context: history I/O must never hold up or
// cancel a backup, and a failing Recorder only produces loud log lines.
type Recorder interface {
	// Start inserts a run with status running and returns its id.
	Start(ctx context.Context, run Run) (int64, error)
	// StartBatch inserts runs in one write and returns their ids in order.
	// The scheduler uses it for everything one tick starts, skips or
	// misses, so 1,000 jobs due together cost one transaction, not 1,000.
	// Runs may be running or already final; on error none is inserted.
	StartBatch(ctx context.Context, runs []Run) ([]int64, error)
	// Finish writes a run's final status, times, error and summary.
	Finish(ctx context.Context, run Run) error
	// Record inserts a run that is already final (skipped or missed).
	Record(ctx context.Context, run Run) (int64, error)
	// AppendLogs adds log lines to a run.
	AppendLogs(ctx context.Context, runID int64, lines []LogLine) error
	// AddFindings adds findings to a run.
	AddFindings(ctx context.Context, runID int64, findings []Finding) error
	// LastScheduled returns the latest scheduled_at among the job's
	// scheduled and catch-up runs (any status); ok is false if there is none.
	LastScheduled(ctx context.Context, job string) (t time.Time, ok bool, err error)
	// MarkInterrupted finalises runs left "running" by a process that died:
	// each one for which stillRunning returns false becomes failed with an
	// "interrupted" error. It returns how many rows it changed.
	MarkInterrupted(ctx context.Context, at time.Time, stillRunning func(Run) bool) (int, error)
}

// RunFilter selects runs; zero fields do not filter.
type RunFilter struct {
	Job    string
	Status Status
	Since  time.Time // started (or scheduled, for runs that never started) at or after
	Limit  int       // 0 means 100
}

// Reader is the part of the history the CLI and web UI read.
type Reader interface {
	// Runs returns matching runs, newest first.
	Runs(ctx context.Context, f RunFilter) ([]Run, error)
	// Get returns one run or an error wrapping ErrNotFound.
	Get(ctx context.Context, id int64) (Run, error)
	Logs(ctx context.Context, runID int64) ([]LogLine, error)
	Findings(ctx context.Context, runID int64) ([]Finding, error)
	// LastRuns returns the most recent run of each job.
	LastRuns(ctx context.Context) (map[string]Run, error)
}

// History is the whole run history.
type History interface {
	Recorder
	Reader
	// Prune deletes finished runs (with their logs and findings) that
	// finished before the cutoff and returns how many runs it deleted.
	Prune(ctx context.Context, before time.Time) (int64, error)
	Close() error
}

// ErrNotFound is returned by Reader.Get for an unknown id.
var ErrNotFound = errors.New("run not found")
