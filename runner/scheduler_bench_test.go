package runner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/runner/runnertest"
	"github.com/vigilops/vigil/storage/history"
)

// The budget: 1,000 jobs "@every 1s" keep the p99 start latency
// under 100 ms and the process under 100 MiB RSS on 2 cores.
const benchJobs = 1000

// countingRecorder counts finished and skipped runs so the benchmark knows
// when a tick's runs are done and whether any start was lost to overlap.
type countingRecorder struct {
	runner.Recorder
	finished, skipped atomic.Int64
}

func (c *countingRecorder) Finish(ctx context.Context, run runner.Run) error {
	err := c.Recorder.Finish(ctx, run)
	c.finished.Add(1)
	return err
}

func (c *countingRecorder) StartBatch(ctx context.Context, runs []runner.Run) ([]int64, error) {
	for _, run := range runs {
		if run.Status == runner.StatusSkipped || run.Status == runner.StatusMissed {
			c.skipped.Add(1)
		}
	}
	return c.Recorder.StartBatch(ctx, runs)
}

func (c *countingRecorder) Record(ctx context.Context, run runner.Run) (int64, error) {
	if run.Status == runner.StatusSkipped || run.Status == runner.StatusMissed {
		c.skipped.Add(1)
	}
	return c.Recorder.Record(ctx, run)
}

// latencies collects per-start latencies without locks.
type latencies struct {
	d []time.Duration
	n atomic.Int64
}

func newLatencies(n int) *latencies { return &latencies{d: make([]time.Duration, n)} }

func (l *latencies) add(d time.Duration) {
	if i := l.n.Add(1) - 1; int(i) < len(l.d) {
		l.d[i] = d
	}
}

func (l *latencies) report(b *testing.B) (p50, p99, max time.Duration) {
	d := l.d[:min(int(l.n.Load()), len(l.d))]
	if len(d) == 0 {
		b.Fatal("no run started")
	}
	slices.Sort(d)
	p50, p99, max = d[len(d)/2], d[len(d)*99/100], d[len(d)-1]
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(max.Microseconds())/1000, "max-ms")
	return
}

// procStatusKiB reads a "VmRSS"/"VmHWM" line of /proc/self/status.
func procStatusKiB(b *testing.B, field string) float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatalf("read rss: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatalf("parse %s: %v", line, err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

func benchSpecs(b *testing.B, job runner.Job) []runner.Spec {
	sched, err := runner.ParseSchedule("@every 1s", time.UTC)
	if err != nil {
		b.Fatal(err)
	}
	specs := make([]runner.Spec, benchJobs)
	for i := range specs {
		specs[i] = runner.Spec{Name: fmt.Sprintf("job-%04d", i), Kind: "command", Schedule: sched, Job: job, CatchUp: runner.CatchUpSkip}
	}
	return specs
}

// BenchmarkScheduler1000FakeClock measures the scheduler's own cost: each
// iteration is one simulated second in which all 1,000 jobs come due at
// once. Latency is real time from the moment the clock reaches the due
// time to the job's Run call, so it counts dispatch, the history insert
// and goroutine start-up, and nothing else.
func BenchmarkScheduler1000FakeClock(b *testing.B) {
	start := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	clock := runnertest.NewFakeClock(start)
	lat := newLatencies(benchJobs * max(b.N, 1))
	var tick atomic.Int64 // real UnixNano when the current tick began
	job := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
		lat.add(time.Duration(time.Now().UnixNano() - tick.Load()))
		rc.Log().Info("tick")
		return nil
	})
	rec := &countingRecorder{Recorder: runner.NewMemHistory()}
	r, err := runner.New(benchSpecs(b, job), runner.Options{History: rec, Clock: clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		due := start.Add(time.Duration(i) * time.Second)
		if !clock.WaitForDeadline(due, 10*time.Second) {
			b.Fatalf("tick %d: scheduler never slept until %s", i, due)
		}
		tick.Store(time.Now().UnixNano())
		clock.Set(due)
		stuck := time.Now().Add(30 * time.Second)
		for rec.finished.Load()+rec.skipped.Load() < int64(i*benchJobs) {
			if time.Now().After(stuck) {
				b.Fatalf("tick %d: %d runs finished, %d skipped after 30s", i, rec.finished.Load(), rec.skipped.Load())
			}
			time.Sleep(100 * time.Microsecond)
		}
		// A run is released just after its Finish is recorded; give the
		// last ones that moment, or the next tick would see them running
		// and record a skip, which is not what this measures.
		b.StopTimer()
		time.Sleep(2 * time.Millisecond)
		b.StartTimer()
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	lat.report(b)
	b.ReportMetric(float64(rec.skipped.Load()), "skipped")
	b.ReportMetric(procStatusKiB(b, "VmHWM")/1024, "peak-rss-MiB")
}

// BenchmarkScheduler1000RealMinute is the scenario as the daemon
// runs it: real clock, SQLite history and per-job lock files kept open, 1,000 jobs
// "@every 1s" for a minute (VIGIL_SCHED_BENCH_SECONDS overrides the
// length). Latency is the job's start minus its scheduled time.
// Run it alone: go test ./runner -run '^$' -bench RealMinute -benchtime 1x
func BenchmarkScheduler1000RealMinute(b *testing.B) {
	seconds := 60
	if s := os.Getenv("VIGIL_SCHED_BENCH_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("VIGIL_SCHED_BENCH_SECONDS=%q: want a positive number", s)
		}
		seconds = n
	}
	for b.Loop() {
		dir := b.TempDir()
		h, err := history.Open(context.Background(), filepath.Join(dir, "history.db"), history.Options{})
		if err != nil {
			b.Fatal(err)
		}
		rssBefore := procStatusKiB(b, "VmRSS")
		lat := newLatencies(benchJobs * (seconds + 2))
		// The job reports progress at once; the runner hands the run's
		// record, scheduled time included, to OnProgress.
		job := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
			rc.Progress(runner.Progress{Phase: "start"})
			rc.Log().Info("tick")
			return nil
		})
		rec := &countingRecorder{Recorder: h}
		locker := runner.NewDirLocker(filepath.Join(dir, "locks"))
		r, err := runner.New(benchSpecs(b, job), runner.Options{History: rec,
			OnProgress: func(run runner.Run, _ runner.Progress) { lat.add(time.Since(run.ScheduledAt)) },
			Locker:     locker,
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+500*time.Millisecond)
		if err := r.Run(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StopTimer()
		lat.report(b)
		b.ReportMetric(float64(lat.n.Load())/float64(seconds), "starts/s")
		b.ReportMetric(float64(rec.skipped.Load()), "skipped")
		b.ReportMetric(float64(r.HistoryErrors()), "history-errors")
		b.ReportMetric(procStatusKiB(b, "VmHWM")/1024, "peak-rss-MiB")
		b.ReportMetric((procStatusKiB(b, "VmRSS")-rssBefore)/1024, "rss-growth-MiB")
		if err := errors.Join(h.Close(), locker.Close()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
