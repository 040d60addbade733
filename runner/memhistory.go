package runner

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// MemHistory is an in-memory History. The daemon falls back to it when the
// history database cannot be opened (jobs keep running, the failure is
// logged loudly), and tests use it.
type MemHistory struct {
	mu       sync.Mutex
	runs     []Run
	logs     map[int64][]LogLine
	findings map[int64][]Finding
	changed  chan struct{}
	*MemState
}

// NewMemHistory returns an empty MemHistory.
func NewMemHistory() *MemHistory {
	return &MemHistory{logs: map[int64][]LogLine{}, findings: map[int64][]Finding{}, changed: make(chan struct{}), MemState: NewMemState()}
}

// Changed returns a channel closed at the next write; tests wait on it.
func (h *MemHistory) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.changed
}

func (h *MemHistory) notify() {
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *MemHistory) Start(ctx context.Context, run Run) (int64, error) {
	return h.insert(run)
}

func (h *MemHistory) StartBatch(ctx context.Context, runs []Run) ([]int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ids := make([]int64, len(runs))
	for i, run := range runs {
		run.ID = int64(len(h.runs) + 1)
		h.runs = append(h.runs, run)
		ids[i] = run.ID
	}
	h.notify()
	return ids, nil
}

func (h *MemHistory) Record(ctx context.Context, run Run) (int64, error) {
	return h.insert(run)
}

func (h *MemHistory) insert(run Run) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	run.ID = int64(len(h.runs) + 1)
	h.runs = append(h.runs, run)
	h.notify()
	return run.ID, nil
}

func (h *MemHistory) Finish(ctx context.Context, run Run) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if run.ID < 1 || int(run.ID) > len(h.runs) {
		return fmt.Errorf("finish run %d: %w", run.ID, ErrNotFound)
	}
	h.runs[run.ID-1] = run
	h.notify()
	return nil
}

func (h *MemHistory) AppendLogs(ctx context.Context, runID int64, lines []LogLine) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.logs[runID] = append(h.logs[runID], lines...)
	return nil
}

func (h *MemHistory) AddFindings(ctx context.Context, runID int64, fs []Finding) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.findings[runID] = append(h.findings[runID], fs...)
	return nil
}

func (h *MemHistory) LastScheduled(ctx context.Context, job string) (time.Time, bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var last time.Time
	for _, r := range h.runs {
		if r.Job == job && (r.Trigger == TriggerSchedule || r.Trigger == TriggerCatchUp) && r.ScheduledAt.After(last) {
			last = r.ScheduledAt
		}
	}
	return last, !last.IsZero(), nil
}

func (h *MemHistory) MarkInterrupted(ctx context.Context, at time.Time, stillRunning func(Run) bool) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for i, r := range h.runs {
		if r.Status == StatusRunning && (stillRunning == nil || !stillRunning(r)) {
			h.runs[i].Status, h.runs[i].Error, h.runs[i].FinishedAt = StatusFailed, InterruptedError, at
			n++
		}
	}
	if n > 0 {
		h.notify()
	}
	return n, nil
}

// InterruptedError is the error text of runs found running at start-up.
const InterruptedError = "interrupted: vigil stopped while the run was in progress"

func (h *MemHistory) Runs(ctx context.Context, f RunFilter) ([]Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	var out []Run
	for i := len(h.runs) - 1; i >= 0 && len(out) < limit; i-- {
		r := h.runs[i]
		if (f.Job == "" || r.Job == f.Job) && (f.Status == "" || r.Status == f.Status) && (f.Since.IsZero() || !r.sortTime().Before(f.Since)) {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].sortTime().After(out[j].sortTime()) })
	return out, nil
}

// sortTime is when a run started, or was due for runs that never started.
func (r Run) sortTime() time.Time {
	if !r.StartedAt.IsZero() {
		return r.StartedAt
	}
	return r.ScheduledAt
}

func (h *MemHistory) Get(ctx context.Context, id int64) (Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if id < 1 || int(id) > len(h.runs) {
		return Run{}, fmt.Errorf("get run %d: %w", id, ErrNotFound)
	}
	return h.runs[id-1], nil
}

func (h *MemHistory) Logs(ctx context.Context, runID int64) ([]LogLine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]LogLine(nil), h.logs[runID]...), nil
}

func (h *MemHistory) Findings(ctx context.Context, runID int64) ([]Finding, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Finding(nil), h.findings[runID]...), nil
}

func (h *MemHistory) LastRuns(ctx context.Context) (map[string]Run, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]Run{}
	for _, r := range h.runs {
		if prev, ok := out[r.Job]; !ok || !r.sortTime().Before(prev.sortTime()) {
			out[r.Job] = r
		}
	}
	return out, nil
}

func (h *MemHistory) Prune(ctx context.Context, before time.Time) (int64, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	// Ids are positions here, so pruning only blanks the records.
	var n int64
	for i, r := range h.runs {
		if r.Status != StatusRunning && !r.FinishedAt.IsZero() && r.FinishedAt.Before(before) && r.Job != "" {
			h.runs[i] = Run{ID: r.ID}
			delete(h.logs, r.ID)
			delete(h.findings, r.ID)
			n++
		}
	}
	return n, nil
}

// ListFindings implements FindingLister.
func (h *MemHistory) ListFindings(ctx context.Context, f FindingFilter) ([]FindingRecord, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	limit := f.Limit
	if limit <= 0 {
		limit = 1000
	}
	var out []FindingRecord
	for i := len(h.runs) - 1; i >= 0 && len(out) < limit; i-- {
		r := h.runs[i]
		if (f.Job != "" && r.Job != f.Job) || (!f.Since.IsZero() && r.sortTime().Before(f.Since)) {
			continue
		}
		for _, fd := range h.findings[r.ID] {
			if len(out) >= limit {
				break
			}
			if f.MinSeverity != "" && !fd.Severity.AtLeast(f.MinSeverity) || !codeMatches(fd.Code, f.Code) {
				continue
			}
			out = append(out, FindingRecord{Finding: fd, RunID: r.ID, Job: r.Job, At: r.sortTime()})
		}
	}
	return out, nil
}

// codeMatches applies FindingFilter.Code.
func codeMatches(code, want string) bool {
	if want == "" {
		return true
	}
	if strings.HasSuffix(want, ".") {
		return strings.HasPrefix(code, want)
	}
	return code == want
}

func (h *MemHistory) Close() error { return nil }

var (
	_ History       = (*MemHistory)(nil)
	_ StateStore    = (*MemHistory)(nil)
	_ FindingLister = (*MemHistory)(nil)
)
