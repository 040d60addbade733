// Package runner runs jobs on schedules and records every run. It owns the
// Job and RunContext interfaces that job kinds implement, the scheduler
// (robfig/cron parsing, an injected Clock), the per-job rules (no overlap,
// concurrency groups, timeout, retries, catch-up after downtime) and the
// History interface that storage/history implements.
//
// A run is recorded before its job starts and finalised in a deferred path
// whatever happens (error, timeout, panic, shutdown); starts that do not
// happen are recorded too, as skipped or missed runs, so the morning report
// never has a silent gap.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Job is one configured job, built by its kind from the config. Run is
// called once per attempt; it must return when ctx is cancelled (timeout
// or shutdown) and report through rc, never through globals.
type Job interface {
	Run(ctx context.Context, rc RunContext) error
}

// JobFunc adapts a function to Job.
type JobFunc func(ctx context.Context, rc RunContext) error

// Run implements Job.
func (f JobFunc) Run(ctx context.Context, rc RunContext) error { return f(ctx, rc) }

// RunContext is everything a job may touch while it runs. It is narrow on
// purpose: a job never sees the scheduler, other jobs or the history.
type RunContext interface {
	// RunID is the history id of this run (0 if the history is unavailable).
	RunID() int64
	// JobName is the configured job name.
	JobName() string
	// Attempt counts from 1; it is above 1 when the run is a retry.
	Attempt() int
	// Log is the run's own logger: lines go to the daemon log (tagged with
	// job and run) and into the run's history record.
	Log() *slog.Logger
	// Progress reports how far the run is; the CLI shows it for `vigil run`.
	Progress(p Progress)
	// SetSummary replaces the run's summary figures.
	SetSummary(s Summary)
	// AddFinding attaches a finding (e.g. a failed login burst) to the run.
	AddFinding(f Finding)
	// Repository returns the repository handle the daemon opened for jobs,
	// opening it on first use. Its concrete type belongs to storage/repo;
	// jobs that store data assert it. It errors when none is configured.
	Repository(ctx context.Context) (any, error)
}

// Progress is a point-in-time progress report.
type Progress struct {
	Phase   string `json:"phase,omitempty"`
	Done    int64  `json:"done"`
	Total   int64  `json:"total,omitempty"` // 0 when unknown
	Unit    string `json:"unit,omitempty"`  // "bytes", "files", ...
	Message string `json:"message,omitempty"`
}

// Summary holds a run's figures.
type Summary struct {
	BytesRead   int64          `json:"bytes_read"`
	BytesNew    int64          `json:"bytes_new"`
	BytesStored int64          `json:"bytes_stored"`
	Files       int64          `json:"files"`
	SnapshotID  string         `json:"snapshot_id,omitempty"`
	Extra       map[string]any `json:"extra,omitempty"` // kind-specific figures
}

// Severity of a finding.
type Severity string

const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityError    Severity = "error"
	SeverityCritical Severity = "critical"
)

// Finding is something a run noticed that an admin should read.
type Finding struct {
	Severity Severity `json:"severity"`
	Code     string   `json:"code"`    // stable, machine-readable ("auth.failed_logins")
	Message  string   `json:"message"` // one line for humans
	Subject  string   `json:"subject,omitempty"`
	// The fields below are optional; analysers that aggregate events
	// (loganalyze) fill them.
	Count     int64     `json:"count,omitempty"` // events behind the finding
	FirstSeen time.Time `json:"first_seen,omitzero"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
	Examples  []string  `json:"examples,omitempty"` // sample lines, secrets masked
	// Extra holds kind-specific details (e.g. "previous_count", "new").
	Extra map[string]any `json:"extra,omitempty"`
}

// severityRank orders severities; unknown ones rank lowest.
var severityRank = map[Severity]int{SeverityInfo: 1, SeverityWarning: 2, SeverityError: 3, SeverityCritical: 4}

// AtLeast reports whether s is at least as severe as min.
func (s Severity) AtLeast(min Severity) bool { return severityRank[s] >= severityRank[min] }

// ParseSeverity accepts the severity names and the usual short forms
// ("warn", "err", "crit").
func ParseSeverity(s string) (Severity, error) {
	switch s {
	case "info":
		return SeverityInfo, nil
	case "warn", "warning":
		return SeverityWarning, nil
	case "err", "error":
		return SeverityError, nil
	case "crit", "critical":
		return SeverityCritical, nil
	}
	return "", fmt.Errorf("unknown severity %q (want info, warning, error or critical)", s)
}

// FindingFilter selects findings across runs; zero fields do not filter.
type FindingFilter struct {
	Job         string
	MinSeverity Severity
	Code        string    // exact code, or a prefix ending in "." ("ssh.")
	Since       time.Time // the run started at or after
	Limit       int       // 0 means 1000
}

// FindingRecord is a finding with the run it belongs to.
type FindingRecord struct {
	Finding
	RunID int64     `json:"run_id"`
	Job   string    `json:"job"`
	At    time.Time `json:"at"` // when the run started
}

// FindingLister lists findings across runs, newest run first.
// storage/history and MemHistory implement it.
type FindingLister interface {
	ListFindings(ctx context.Context, f FindingFilter) ([]FindingRecord, error)
}

// Status of a run.
type Status string

const (
	StatusRunning   Status = "running"
	StatusSuccess   Status = "success"
	StatusPartial   Status = "partial"
	StatusFailed    Status = "failed"
	StatusSkipped   Status = "skipped"
	StatusMissed    Status = "missed"
	StatusCancelled Status = "cancelled"
)

// Statuses lists every status, for validating filters.
var Statuses = []Status{StatusRunning, StatusSuccess, StatusPartial, StatusFailed, StatusSkipped, StatusMissed, StatusCancelled}

// Trigger says why a run started.
type Trigger string

const (
	TriggerSchedule Trigger = "schedule"
	TriggerCatchUp  Trigger = "catch-up"
	TriggerManual   Trigger = "manual"
	TriggerAPI      Trigger = "api"
)

// Run is one run's record.
type Run struct {
	ID          int64     `json:"id"`
	Job         string    `json:"job"`
	Kind        string    `json:"kind"`
	Trigger     Trigger   `json:"trigger"`
	ScheduledAt time.Time `json:"scheduled_at,omitzero"` // zero for manual runs
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Status      Status    `json:"status"`
	Attempt     int       `json:"attempt"`
	Error       string    `json:"error,omitempty"`
	Summary     Summary   `json:"summary"`
	PID         int       `json:"pid,omitempty"` // process that ran it
}

// Duration is how long a finished run took.
func (r Run) Duration() time.Duration {
	if r.StartedAt.IsZero() || r.FinishedAt.IsZero() {
		return 0
	}
	return r.FinishedAt.Sub(r.StartedAt)
}

// LogLine is one line of a run's log.
type LogLine struct {
	Seq     int       `json:"seq"`
	At      time.Time `json:"at"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Attrs   string    `json:"attrs,omitempty"` // key=value pairs
}

type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// Retryable marks err as worth retrying (a network blip, a busy server).
// Only marked errors are retried: retrying a bad password just locks the
// account.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return &retryableError{err}
}

// IsRetryable reports whether err was marked with Retryable.
func IsRetryable(err error) bool {
	var r *retryableError
	return errors.As(err, &r)
}

type partialError struct{ err error }

func (e *partialError) Error() string { return e.err.Error() }
func (e *partialError) Unwrap() error { return e.err }

// Partial marks err as "the run did most of its work" (some files were
// unreadable): the run is recorded as partial, not failed, and not retried.
func Partial(err error) error {
	if err == nil {
		return nil
	}
	return &partialError{err}
}

// IsPartial reports whether err was marked with Partial.
func IsPartial(err error) bool {
	var p *partialError
	return errors.As(err, &p)
}

var (
	// ErrTimeout is the context cause when a run exceeds its timeout.
	ErrTimeout = errors.New("timeout")
	// ErrShutdown is the context cause when vigil stops while a job runs.
	ErrShutdown = errors.New("vigil is shutting down")
	// ErrUnknownJob is returned for a job name that is not configured.
	ErrUnknownJob = errors.New("unknown job")
	// ErrLocked is returned when a lock is held by another process.
	ErrLocked = errors.New("locked by another process")
	// ErrNoRepository is returned by RunContext.Repository when none is configured.
	ErrNoRepository = errors.New("no repository configured")
)
