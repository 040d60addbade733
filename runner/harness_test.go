package runner_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/runner/runnertest"
)

// harness runs a Runner on a fake clock. The scheduler reports each sleep
// (through the test hook), so the test knows it is idle before moving time.
type harness struct {
	t       *testing.T
	clock   *runnertest.FakeClock
	hist    *runner.MemHistory
	r       *runner.Runner
	logs    *syncBuffer
	sleeps  chan time.Time
	pending *time.Time
	stopped chan struct{}
	cancel  context.CancelFunc
	done    chan error
}

type syncBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, specs []runner.Spec, opts runner.Options) *harness {
	t.Helper()
	h := &harness{t: t, clock: runnertest.NewFakeClock(t0), logs: &syncBuffer{}, sleeps: make(chan time.Time), stopped: make(chan struct{})}
	if opts.History == nil {
		h.hist = runner.NewMemHistory()
		opts.History = h.hist
	}
	opts.Clock = h.clock
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Rand == nil {
		opts.Rand = func() float64 { return 0.5 }
	}
	r, err := runner.New(specs, opts)
	if err != nil {
		t.Fatal(err)
	}
	runner.SetSleepHook(r, func(until time.Time) {
		select {
		case h.sleeps <- until:
		case <-h.stopped:
		}
	})
	h.r = r
	t.Cleanup(func() {
		if h.cancel != nil {
			h.stop()
		}
	})
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.r.Run(ctx) }()
}

// stop cancels Run and waits for it to return.
func (h *harness) stop() {
	h.t.Helper()
	close(h.stopped)
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatal("Run did not return after cancel")
	}
}

func (h *harness) nextSleep() time.Time {
	h.t.Helper()
	if h.pending != nil {
		t := *h.pending
		h.pending = nil
		return t
	}
	select {
	case t := <-h.sleeps:
		return t
	case <-time.After(5 * time.Second):
		h.t.Fatal("scheduler did not go to sleep")
		return time.Time{}
	}
}

// advanceTo moves the fake clock to target, waking the scheduler at every
// point it asked to be woken on the way.
func (h *harness) advanceTo(target time.Time) {
	h.t.Helper()
	for {
		until := h.nextSleep()
		if until.After(target) {
			h.clock.Set(target)
			h.pending = &until
			return
		}
		h.clock.Set(until)
	}
}

// waitRuns waits (real time, bounded) until cond holds for the history.
func (h *harness) waitRuns(what string, cond func(runs []runner.Run) bool) []runner.Run {
	h.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		changed := h.hist.Changed()
		runs, err := h.hist.Runs(context.Background(), runner.RunFilter{Limit: 1000})
		if err != nil {
			h.t.Fatal(err)
		}
		if cond(runs) {
			return runs
		}
		select {
		case <-changed:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s; runs: %+v\nlog:\n%s", what, runs, h.logs.String())
		}
	}
}

func count(runs []runner.Run, job string, status runner.Status) int {
	n := 0
	for _, r := range runs {
		if r.Job == job && r.Status == status {
			n++
		}
	}
	return n
}

func find(runs []runner.Run, job string, status runner.Status) (runner.Run, bool) {
	for _, r := range runs {
		if r.Job == job && r.Status == status {
			return r, true
		}
	}
	return runner.Run{}, false
}

func mustSchedule(t *testing.T, spec string) runner.Schedule {
	t.Helper()
	s, err := runner.ParseSchedule(spec, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// gate is a job that signals when it starts and blocks until released or
// cancelled.
type gate struct {
	started      chan struct{}
	release      chan struct{}
	ignoreCancel bool
}

func newGate() *gate { return &gate{started: make(chan struct{}, 16), release: make(chan struct{})} }

func (g *gate) Run(ctx context.Context, rc runner.RunContext) error {
	g.started <- struct{}{}
	if g.ignoreCancel {
		<-g.release
		return nil
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-g.started:
	case <-time.After(5 * time.Second):
		t.Fatal("job did not start")
	}
}
