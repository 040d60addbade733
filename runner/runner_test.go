package runner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
)

func TestScheduledRunIsRecorded(t *testing.T) {
	job := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
		rc.Log().Info("copied", "files", 3)
		rc.SetSummary(runner.Summary{Files: 3, BytesRead: 100, SnapshotID: "abc"})
		rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "disk.low", Message: "disk 91% full", Subject: "/srv"})
		return nil
	})
	h := newHarness(t, []runner.Spec{{Name: "nightly", Kind: "command", Schedule: mustSchedule(t, "0 2 * * *"), Job: job}}, runner.Options{})
	h.start()
	h.advanceTo(t0.Add(2*time.Hour + 30*time.Second))
	runs := h.waitRuns("a successful run", func(rs []runner.Run) bool { return count(rs, "nightly", runner.StatusSuccess) == 1 })
	r := runs[0]
	if r.Trigger != runner.TriggerSchedule || !r.ScheduledAt.Equal(t0.Add(2*time.Hour)) || !r.StartedAt.Equal(t0.Add(2*time.Hour)) || r.Attempt != 1 {
		t.Errorf("run = %+v", r)
	}
	if r.Summary.Files != 3 || r.Summary.SnapshotID != "abc" {
		t.Errorf("summary = %+v", r.Summary)
	}
	logs, _ := h.hist.Logs(context.Background(), r.ID)
	if len(logs) != 1 || logs[0].Message != "copied" || logs[0].Attrs != `files="3"` {
		t.Errorf("logs = %+v", logs)
	}
	fs, _ := h.hist.Findings(context.Background(), r.ID)
	if len(fs) != 1 || fs[0].Code != "disk.low" {
		t.Errorf("findings = %+v", fs)
	}
	// The next day's run is scheduled for 02:00 again.
	if next := h.nextSleep(); !next.Equal(t0.Add(2*time.Hour + time.Minute)) {
		t.Errorf("next wake-up = %v (sleeps are capped at a minute)", next)
	}
}

func TestOverlapIsRecordedAsSkipped(t *testing.T) {
	g := newGate()
	h := newHarness(t, []runner.Spec{{Name: "slow", Schedule: mustSchedule(t, "@every 1m"), Job: g}}, runner.Options{})
	h.start()
	h.advanceTo(t0.Add(time.Minute))
	g.waitStarted(t)
	h.advanceTo(t0.Add(2 * time.Minute))
	runs := h.waitRuns("a skipped run", func(rs []runner.Run) bool { return count(rs, "slow", runner.StatusSkipped) == 1 })
	skipped, _ := find(runs, "slow", runner.StatusSkipped)
	if !strings.HasPrefix(skipped.Error, "skipped: the previous run (id 1, started 2026-01-01T00:01:00Z) is still running") ||
		!skipped.ScheduledAt.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("skipped run = %+v", skipped)
	}
	close(g.release)
	h.waitRuns("the first run to succeed", func(rs []runner.Run) bool { return count(rs, "slow", runner.StatusSuccess) == 1 })
}

func TestManualRunWhileRunningIsSkipped(t *testing.T) {
	g := newGate()
	h := newHarness(t, []runner.Spec{{Name: "j", Job: g}}, runner.Options{})
	done := make(chan runner.Run)
	go func() {
		r, _ := h.r.RunNow(context.Background(), "j", runner.TriggerManual)
		done <- r
	}()
	g.waitStarted(t)
	second, err := h.r.RunNow(context.Background(), "j", runner.TriggerAPI)
	if err != nil || second.Status != runner.StatusSkipped || second.ID == 0 {
		t.Errorf("second = %+v, %v", second, err)
	}
	close(g.release)
	if first := <-done; first.Status != runner.StatusSuccess || first.Trigger != runner.TriggerManual {
		t.Errorf("first = %+v", first)
	}
	if _, err := h.r.RunNow(context.Background(), "nope", runner.TriggerManual); !errors.Is(err, runner.ErrUnknownJob) {
		t.Errorf("unknown job: %v", err)
	}
}

func TestConcurrencyGroups(t *testing.T) {
	for _, limit := range []int{1, 2} {
		t.Run(fmt.Sprint("limit ", limit), func(t *testing.T) {
			var running, peak atomic.Int32
			release := make(chan struct{})
			started := make(chan string, 3)
			mk := func(name string) runner.Spec {
				return runner.Spec{Name: name, ConcurrencyGroup: "vm", Schedule: mustSchedule(t, "0 1 * * *"), Job: runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
					n := running.Add(1)
					defer running.Add(-1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					started <- name
					<-release
					return nil
				})}
			}
			h := newHarness(t, []runner.Spec{mk("a"), mk("b"), mk("c")}, runner.Options{GroupLimits: map[string]int{"vm": limit}})
			h.start()
			h.advanceTo(t0.Add(time.Hour))
			for i := 0; i < limit; i++ {
				<-started
			}
			select {
			case name := <-started:
				t.Fatalf("%s started while the group was full", name)
			case <-time.After(50 * time.Millisecond):
			}
			close(release)
			h.waitRuns("three runs", func(rs []runner.Run) bool {
				return count(rs, "a", runner.StatusSuccess)+count(rs, "b", runner.StatusSuccess)+count(rs, "c", runner.StatusSuccess) == 3
			})
			if got := peak.Load(); got != int32(limit) {
				t.Errorf("peak concurrency %d, want %d", got, limit)
			}
		})
	}
}

func TestTimeoutCancelsTheJob(t *testing.T) {
	h := newHarness(t, []runner.Spec{{Name: "hang", Timeout: 10 * time.Minute, Job: newGate()}}, runner.Options{})
	done := make(chan runner.Run)
	go func() {
		r, _ := h.r.RunNow(context.Background(), "hang", runner.TriggerManual)
		done <- r
	}()
	if !h.clock.WaitForTimers(1, 5*time.Second) {
		t.Fatal("timeout timer not armed")
	}
	h.clock.Advance(10 * time.Minute)
	r := <-done
	if r.Status != runner.StatusFailed || r.Error != "timeout after 10m0s: context canceled" || r.Duration() != 10*time.Minute {
		t.Errorf("run = %+v", r)
	}
}

func TestRetriesWithBackoffOnRetryableErrorsOnly(t *testing.T) {
	var calls atomic.Int32
	flaky := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
		if n := calls.Add(1); n < 3 {
			return runner.Retryable(fmt.Errorf("upload: connection reset (try %d)", n))
		}
		return nil
	})
	h := newHarness(t, []runner.Spec{
		{Name: "flaky", Retries: 3, RetryBackoff: time.Minute, Job: flaky},
		{Name: "fatal", Retries: 3, RetryBackoff: time.Minute, Job: runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
			return errors.New("wrong password")
		})},
		{Name: "partial", Retries: 3, RetryBackoff: time.Minute, Job: runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
			return runner.Partial(runner.Retryable(errors.New("2 files unreadable")))
		})},
	}, runner.Options{})
	done := make(chan runner.Run)
	go func() {
		r, _ := h.r.RunNow(context.Background(), "flaky", runner.TriggerManual)
		done <- r
	}()
	// Rand is fixed at 0.5: waits are 3/4 of 1m, then of 2m.
	for _, want := range []time.Duration{45 * time.Second, 90 * time.Second} {
		if !h.clock.WaitForTimers(1, 5*time.Second) {
			t.Fatal("backoff timer not armed")
		}
		at, _ := h.clock.NextDeadline()
		if got := at.Sub(h.clock.Now()); got != want {
			t.Errorf("backoff %v, want %v", got, want)
		}
		h.clock.Advance(want)
	}
	r := <-done
	if r.Status != runner.StatusSuccess || r.Attempt != 3 || calls.Load() != 3 {
		t.Errorf("flaky run = %+v after %d calls", r, calls.Load())
	}
	if r, _ := h.r.RunNow(context.Background(), "fatal", runner.TriggerManual); r.Status != runner.StatusFailed || r.Attempt != 1 || r.Error != "wrong password" {
		t.Errorf("fatal run = %+v", r)
	}
	if r, _ := h.r.RunNow(context.Background(), "partial", runner.TriggerManual); r.Status != runner.StatusPartial || r.Attempt != 1 {
		t.Errorf("partial run = %+v", r)
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	for _, rnd := range []float64{0, 0.999999} {
		h := newHarness(t, nil, runner.Options{Rand: func() float64 { return rnd }})
		for attempt, base := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 8: time.Hour, 20: time.Hour} {
			got := runner.Backoff(h.r, time.Minute, attempt)
			if got < base/2 || got > base {
				t.Errorf("rand %v attempt %d: backoff %v outside [%v, %v]", rnd, attempt, got, base/2, base)
			}
		}
	}
}

func seedHistory(t *testing.T, h *runner.MemHistory, runs ...runner.Run) {
	t.Helper()
	for _, r := range runs {
		if _, err := h.Record(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCatchUpAfterDowntime(t *testing.T) {
	lastNight := t0.Add(-22 * time.Hour) // 2025-12-31 02:00
	tests := []struct {
		name    string
		policy  runner.CatchUp
		now     time.Time
		wantRun bool
		wantErr string
	}{
		{"once within max_lateness runs once", runner.CatchUpOnce, t0.Add(24*time.Hour + 3*time.Hour), true, ""},
		{"once beyond max_lateness is missed", runner.CatchUpOnce, t0.Add(24*time.Hour + 9*time.Hour), false,
			"missed 2 scheduled start(s) while vigil was not running; the last was due 7h0m0s ago (older than max_lateness 6h0m0s)"},
		{"skip is missed", runner.CatchUpSkip, t0.Add(24*time.Hour + 3*time.Hour), false,
			"missed 2 scheduled start(s) while vigil was not running; the last was due 1h0m0s ago (catch_up is skip)"},
		{"nothing missed", runner.CatchUpOnce, t0.Add(time.Hour), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran atomic.Int32
			job := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error { ran.Add(1); return nil })
			h := newHarness(t, []runner.Spec{{Name: "nightly", Schedule: mustSchedule(t, "0 2 * * *"), CatchUp: tt.policy, MaxLateness: 6 * time.Hour, Job: job}}, runner.Options{})
			seedHistory(t, h.hist, runner.Run{Job: "nightly", Trigger: runner.TriggerSchedule, ScheduledAt: lastNight, StartedAt: lastNight, FinishedAt: lastNight.Add(time.Minute), Status: runner.StatusSuccess})
			h.clock.Set(tt.now)
			h.start()
			h.nextSleep() // start-up (and catch-up dispatch) is done
			switch {
			case tt.wantRun:
				runs := h.waitRuns("a catch-up run", func(rs []runner.Run) bool { return count(rs, "nightly", runner.StatusSuccess) == 2 })
				r := runs[0]
				if r.Trigger != runner.TriggerCatchUp || !r.ScheduledAt.Equal(t0.Add(26*time.Hour)) || ran.Load() != 1 {
					t.Errorf("catch-up run = %+v (ran %d)", r, ran.Load())
				}
			case tt.wantErr != "":
				runs := h.waitRuns("a missed run", func(rs []runner.Run) bool { return count(rs, "nightly", runner.StatusMissed) == 1 })
				m, _ := find(runs, "nightly", runner.StatusMissed)
				if m.Error != tt.wantErr || !m.ScheduledAt.Equal(t0.Add(26*time.Hour)) || ran.Load() != 0 {
					t.Errorf("missed run = %+v (ran %d)", m, ran.Load())
				}
			default:
				runs, _ := h.hist.Runs(context.Background(), runner.RunFilter{})
				if len(runs) != 1 || ran.Load() != 0 {
					t.Errorf("runs = %+v", runs)
				}
			}
		})
	}
}

func TestSuspendedMachineAppliesPolicy(t *testing.T) {
	h := newHarness(t, []runner.Spec{{Name: "n", Schedule: mustSchedule(t, "0 2 * * *"), CatchUp: runner.CatchUpSkip, Job: runner.JobFunc(func(context.Context, runner.RunContext) error { return nil })}}, runner.Options{})
	h.start()
	h.nextSleep()
	// The machine sleeps from 00:00 to 05:00: the scheduler wakes late.
	h.clock.Set(t0.Add(5 * time.Hour))
	runs := h.waitRuns("a missed run", func(rs []runner.Run) bool { return count(rs, "n", runner.StatusMissed) == 1 })
	if runs[0].Error != "missed 1 scheduled start(s) while vigil was not running; the last was due 3h0m0s ago (catch_up is skip)" {
		t.Errorf("missed = %+v", runs[0])
	}
}

func TestShutdownCancelsRunningJobs(t *testing.T) {
	g := newGate()
	h := newHarness(t, []runner.Spec{{Name: "long", Schedule: mustSchedule(t, "@every 1h"), Job: g}}, runner.Options{})
	h.start()
	h.advanceTo(t0.Add(time.Hour))
	g.waitStarted(t)
	h.stop()
	runs, _ := h.hist.Runs(context.Background(), runner.RunFilter{})
	if len(runs) != 1 || runs[0].Status != runner.StatusCancelled || runs[0].Error != "cancelled: vigil is shutting down: context canceled" {
		t.Errorf("runs = %+v", runs)
	}
}

func TestShutdownGraceExpires(t *testing.T) {
	g := newGate()
	g.ignoreCancel = true
	h := newHarness(t, []runner.Spec{{Name: "stubborn", Schedule: mustSchedule(t, "@every 1h"), Job: g}}, runner.Options{ShutdownGrace: 30 * time.Second})
	h.start()
	h.advanceTo(t0.Add(time.Hour))
	g.waitStarted(t)
	close(h.stopped)
	h.cancel()
	h.cancel = nil
	if !h.clock.WaitForDeadline(h.clock.Now().Add(30*time.Second), 5*time.Second) {
		t.Fatal("grace timer not armed")
	}
	h.clock.Advance(30 * time.Second)
	if err := <-h.done; err != nil {
		t.Fatal(err)
	}
	runs, _ := h.hist.Runs(context.Background(), runner.RunFilter{})
	if len(runs) != 1 || runs[0].Status != runner.StatusCancelled || !strings.Contains(runs[0].Error, "did not finish cleaning up within 30s") {
		t.Errorf("runs = %+v", runs)
	}
	close(g.release) // the stuck job returns later; its record is not overwritten
	time.Sleep(20 * time.Millisecond)
	if r, _ := h.hist.Get(context.Background(), runs[0].ID); r.Status != runner.StatusCancelled {
		t.Errorf("record overwritten: %+v", r)
	}
}

func TestCrashLeftoversMarkedInterrupted(t *testing.T) {
	h := newHarness(t, []runner.Spec{{Name: "j", Job: newGate()}}, runner.Options{})
	seedHistory(t, h.hist, runner.Run{Job: "j", Trigger: runner.TriggerSchedule, StartedAt: t0.Add(-time.Hour), Status: runner.StatusRunning, PID: 999999})
	h.start()
	h.nextSleep()
	r, _ := h.hist.Get(context.Background(), 1)
	if r.Status != runner.StatusFailed || r.Error != runner.InterruptedError || !r.FinishedAt.Equal(t0) {
		t.Errorf("run = %+v", r)
	}
}

func TestPanicIsRecorded(t *testing.T) {
	h := newHarness(t, []runner.Spec{{Name: "p", Job: runner.JobFunc(func(context.Context, runner.RunContext) error { panic("boom") })}}, runner.Options{})
	r, err := h.r.RunNow(context.Background(), "p", runner.TriggerManual)
	if err != nil || r.Status != runner.StatusFailed || r.Error != "panic: boom" {
		t.Fatalf("run = %+v, %v", r, err)
	}
	logs, _ := h.hist.Logs(context.Background(), r.ID)
	if len(logs) == 0 || logs[0].Message != "job panicked" || !strings.Contains(logs[0].Attrs, "runtime/debug.Stack") {
		t.Errorf("logs = %+v", logs)
	}
}

// brokenHistory fails every call, like a corrupt or read-only database.
type brokenHistory struct{ runner.MemHistory }

var errBroken = errors.New("history.db: attempt to write a readonly database")

func (*brokenHistory) Start(context.Context, runner.Run) (int64, error) { return 0, errBroken }
func (*brokenHistory) StartBatch(context.Context, []runner.Run) ([]int64, error) {
	return nil, errBroken
}
func (*brokenHistory) Finish(context.Context, runner.Run) error          { return errBroken }
func (*brokenHistory) Record(context.Context, runner.Run) (int64, error) { return 0, errBroken }
func (*brokenHistory) LastScheduled(context.Context, string) (time.Time, bool, error) {
	return time.Time{}, false, errBroken
}
func (*brokenHistory) MarkInterrupted(context.Context, time.Time, func(runner.Run) bool) (int, error) {
	return 0, errBroken
}

func TestBrokenHistoryJobsStillRun(t *testing.T) {
	var ran atomic.Int32
	h := newHarness(t, []runner.Spec{{Name: "j", Schedule: mustSchedule(t, "@every 1h"), Job: runner.JobFunc(func(context.Context, runner.RunContext) error { ran.Add(1); return nil })}},
		runner.Options{History: &brokenHistory{}})
	r, err := h.r.RunNow(context.Background(), "j", runner.TriggerManual)
	if err != nil || r.Status != runner.StatusSuccess || ran.Load() != 1 {
		t.Fatalf("run = %+v, %v", r, err)
	}
	h.start()
	h.advanceTo(t0.Add(time.Hour))
	h.nextSleep()
	h.stop()
	if ran.Load() != 2 {
		t.Errorf("scheduled run did not happen: ran %d", ran.Load())
	}
	if h.r.HistoryErrors() == 0 || !strings.Contains(h.logs.String(), "HISTORY WRITE FAILED") {
		t.Errorf("failure not loud: %d errors, log:\n%s", h.r.HistoryErrors(), h.logs.String())
	}
}

func TestLogLinesCapped(t *testing.T) {
	h := newHarness(t, []runner.Spec{{Name: "chatty", Job: runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
		for i := range 250 {
			rc.Log().Info("line", "i", i)
		}
		return nil
	})}}, runner.Options{MaxLogLines: 120})
	r, _ := h.r.RunNow(context.Background(), "chatty", runner.TriggerManual)
	logs, _ := h.hist.Logs(context.Background(), r.ID)
	if len(logs) != 121 || logs[120].Message != "130 more log lines were not stored (limit 120 per run)" || logs[119].Seq != 120 {
		t.Errorf("%d lines, last %+v", len(logs), logs[len(logs)-1])
	}
}

func TestRepositoryOpenedOnceOnDemand(t *testing.T) {
	var opens atomic.Int32
	use := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
		repo, err := rc.Repository(ctx)
		if err != nil {
			return err
		}
		if repo.(string) != "repo-handle" {
			return fmt.Errorf("got %v", repo)
		}
		return nil
	})
	h := newHarness(t, []runner.Spec{{Name: "a", Job: use}, {Name: "b", Job: use}}, runner.Options{OpenRepository: func(context.Context) (any, error) {
		opens.Add(1)
		return "repo-handle", nil
	}})
	for _, name := range []string{"a", "b"} {
		if r, _ := h.r.RunNow(context.Background(), name, runner.TriggerManual); r.Status != runner.StatusSuccess {
			t.Errorf("%s: %+v", name, r)
		}
	}
	if opens.Load() != 1 {
		t.Errorf("opened %d times", opens.Load())
	}
	none := newHarness(t, []runner.Spec{{Name: "a", Job: use}}, runner.Options{})
	if r, _ := none.r.RunNow(context.Background(), "a", runner.TriggerManual); r.Error != "no repository configured" {
		t.Errorf("without repository: %+v", r)
	}
}
