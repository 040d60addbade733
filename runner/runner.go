package runner

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// CatchUp is the policy for scheduled starts that passed while vigil was
// not running (or the machine was suspended).
type CatchUp string

const (
	// CatchUpSkip records the missed start as a missed run and waits for
	// the next one.
	CatchUpSkip CatchUp = "skip"
	// CatchUpOnce runs the job once (however many starts were missed) if
	// the latest missed start is no older than MaxLateness; otherwise it is
	// recorded as missed.
	CatchUpOnce CatchUp = "once"
)

// Spec is one job as the runner sees it.
type Spec struct {
	Name string
	Kind string
	// Schedule is nil for jobs that only run when asked.
	Schedule Schedule
	// Disabled jobs are neither scheduled nor caught up; they can still be
	// run by hand.
	Disabled bool
	// Timeout bounds the whole run, retries and backoff included (the wait
	// for a concurrency group is not counted). 0 means no limit.
	Timeout time.Duration
	// Retries is how many times a run is retried after a Retryable error.
	Retries int
	// RetryBackoff is the first wait between attempts; it doubles per
	// attempt up to one hour, with jitter.
	RetryBackoff time.Duration
	// ConcurrencyGroup names a group of jobs that share a concurrency
	// limit (Options.GroupLimits, default 1).
	ConcurrencyGroup string
	CatchUp          CatchUp
	MaxLateness      time.Duration
	Job              Job
}

// JobLocker serialises runs of a job across processes, so that `vigil run`
// and the daemon never run the same job at once. TryLock returns an error
// wrapping ErrLocked when another process holds the job. A JobLocker may
// also have a Prepare(jobs []string) error method, which Run calls once
// before scheduling so that the first starts do not pay for setting up
// their locks (DirLocker creates its files there).
type JobLocker interface {
	TryLock(job string) (unlock func(), err error)
}

// Options configures a Runner. Only History is required.
type Options struct {
	History Recorder
	Clock   Clock        // default RealClock
	Logger  *slog.Logger // default discards
	// GroupLimits sets the concurrency of named groups; unlisted groups allow 1.
	GroupLimits map[string]int
	// OpenRepository opens the repository on a job's first
	// RunContext.Repository call; nil means none is configured.
	OpenRepository func(ctx context.Context) (any, error)
	// Locker guards each job across processes; nil guards only in-process.
	Locker JobLocker
	// OnProgress receives every progress report (the CLI prints them).
	OnProgress func(run Run, p Progress)
	// ShutdownGrace is how long running jobs get to clean up after
	// cancellation before they are recorded cancelled anyway (default 30s).
	ShutdownGrace time.Duration
	// LateTolerance is how late a scheduled start may begin and still count
	// as on time rather than as a catch-up (default 1m).
	LateTolerance time.Duration
	// MaxSleep caps each scheduler sleep so a suspended machine or a wall
	// clock change is noticed promptly (default 1m).
	MaxSleep time.Duration
	// MaxLogLines caps the log lines stored per run (default 5000).
	MaxLogLines int
	// Rand returns a number in [0,1) for retry jitter (default math/rand).
	Rand func() float64
	// State keeps jobs' persistent state (RunContext State). Default: the
	// History when it implements StateStore, else memory.
	State StateStore
}

// Runner schedules and runs jobs.
type Runner struct {
	opts   Options
	clock  Clock
	hist   Recorder
	log    *slog.Logger
	jobs   map[string]*jobState
	names  []string
	groups map[string]chan struct{}
	pid    int

	mu     sync.Mutex
	active map[*activeRun]bool
	wg     sync.WaitGroup

	repoMu sync.Mutex
	repo   any

	historyErrors atomic.Int64

	stateOnce sync.Once
	state     StateStore

	// onSleep, when set by tests, is told each time the scheduler goes to
	// sleep and until when.
	onSleep func(until time.Time)
}

type jobState struct {
	spec    Spec
	current *activeRun // guarded by Runner.mu
}

// New checks specs and returns a Runner.
func New(specs []Spec, opts Options) (*Runner, error) {
	if opts.History == nil {
		return nil, errors.New("new runner: no history")
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 30 * time.Second
	}
	if opts.LateTolerance <= 0 {
		opts.LateTolerance = time.Minute
	}
	if opts.MaxSleep <= 0 {
		opts.MaxSleep = time.Minute
	}
	if opts.MaxLogLines <= 0 {
		opts.MaxLogLines = 5000
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	r := &Runner{
		opts: opts, clock: opts.Clock, hist: opts.History, log: opts.Logger.With("component", "runner"),
		jobs: map[string]*jobState{}, groups: map[string]chan struct{}{}, active: map[*activeRun]bool{}, pid: os.Getpid(),
	}
	for _, s := range specs {
		if s.Name == "" || s.Job == nil {
			return nil, fmt.Errorf("new runner: job %q has no name or no implementation", s.Name)
		}
		if _, dup := r.jobs[s.Name]; dup {
			return nil, fmt.Errorf("new runner: duplicate job %q", s.Name)
		}
		if s.CatchUp == "" {
			s.CatchUp = CatchUpOnce
		}
		r.jobs[s.Name] = &jobState{spec: s}
		r.names = append(r.names, s.Name)
		if g := s.ConcurrencyGroup; g != "" && r.groups[g] == nil {
			limit := opts.GroupLimits[g]
			if limit < 1 {
				limit = 1
			}
			r.groups[g] = make(chan struct{}, limit)
		}
	}
	sort.Strings(r.names)
	return r, nil
}

// Specs returns the jobs, sorted by name.
func (r *Runner) Specs() []Spec {
	out := make([]Spec, len(r.names))
	for i, n := range r.names {
		out[i] = r.jobs[n].spec
	}
	return out
}

// HistoryErrors counts history writes that failed; a non-zero value means
// some runs are not (fully) recorded.
func (r *Runner) HistoryErrors() int64 { return r.historyErrors.Load() }

// Run recovers from a previous crash (runs left "running" become failed),
// applies the catch-up policy to starts missed while vigil was down, then
// starts jobs on schedule until ctx is cancelled. On cancellation it
// cancels running jobs, gives them ShutdownGrace to finish and records them
// cancelled; it returns once every run is recorded.
func (r *Runner) Run(ctx context.Context) error {
	if p, ok := r.opts.Locker.(interface{ Prepare(jobs []string) error }); ok {
		if err := p.Prepare(r.names); err != nil {
			r.log.Warn("job lock files not prepared; the first starts will create them", "err", err)
		}
	}
	now := r.clock.Now()
	r.hwrite("mark interrupted runs", func(hctx context.Context) error {
		n, err := r.hist.MarkInterrupted(hctx, now, r.stillRunning)
		if n > 0 {
			r.log.Warn("runs interrupted by an earlier crash marked failed", "runs", n)
		}
		return err
	})
	// Jobs get their own context: shutdown cancels them with a cause,
	// after the scheduler has stopped.
	jobsCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(nil)

	q := &queue{}
	var due []dueStart
	for _, name := range r.names {
		js := r.jobs[name]
		if js.spec.Schedule == nil || js.spec.Disabled {
			continue
		}
		if d, ok := r.catchUp(js, now); ok {
			due = append(due, d)
		}
		if next := js.spec.Schedule.Next(now); !next.IsZero() {
			heap.Push(q, &entry{at: next, js: js})
		}
	}
	r.dispatch(jobsCtx, due)
	r.log.Info("scheduler started", "jobs", len(r.names), "scheduled", q.Len())
	for {
		sleep := r.opts.MaxSleep
		var until time.Time
		if q.Len() > 0 {
			until = (*q)[0].at
			if d := until.Sub(r.clock.Now()); d < sleep {
				sleep = d
			}
		}
		t := r.clock.NewTimer(sleep)
		if r.onSleep != nil {
			r.onSleep(r.clock.Now().Add(sleep))
		}
		select {
		case <-ctx.Done():
			t.Stop()
			r.shutdown(cancelJobs)
			return nil
		case <-t.C():
		}
		now := r.clock.Now()
		due = due[:0]
		for q.Len() > 0 && !(*q)[0].at.After(now) {
			e := heap.Pop(q).(*entry)
			due = append(due, r.classifyStart(e.js, e.at, now))
			next := e.js.spec.Schedule.Next(e.at)
			if !next.IsZero() && !next.After(now) {
				// Fell behind by more than one period (suspend, clock
				// jump): the start just dispatched stands for all of them.
				next = e.js.spec.Schedule.Next(now)
			}
			if !next.IsZero() {
				e.at = next
				heap.Push(q, e)
			}
		}
		r.dispatch(jobsCtx, due)
	}
}

// dueStart is a scheduled start the scheduler is about to dispatch: a run
// to start with trigger, or (missed set) a missed run to record.
type dueStart struct {
	js        *jobState
	scheduled time.Time
	trigger   Trigger
	missed    *Run
}

// classifyStart applies the lateness rules to a start that came due.
func (r *Runner) classifyStart(js *jobState, scheduled, now time.Time) dueStart {
	d := dueStart{js: js, scheduled: scheduled, trigger: TriggerSchedule}
	if late := now.Sub(scheduled); late > r.opts.LateTolerance {
		if js.spec.CatchUp == CatchUpSkip || late > js.spec.MaxLateness {
			m := r.missedRun(js, scheduled, 1, late)
			d.missed = &m
			return d
		}
		d.trigger = TriggerCatchUp
	}
	return d
}

// dispatch starts the runs of one tick. It claims each job in memory (an
// in-process overlap becomes a skipped run), inserts every row of the tick
// in one history write, and only then starts the jobs, each in its own
// goroutine, where the cross-process job lock is taken: the scheduler
// loop itself does no per-job file or database I/O.
func (r *Runner) dispatch(ctx context.Context, due []dueStart) {
	if len(due) == 0 {
		return
	}
	now := r.clock.Now()
	rows := make([]Run, 0, len(due))
	started := make([]*activeRun, 0, len(due))
	for _, d := range due {
		if d.missed != nil {
			rows = append(rows, *d.missed)
			continue
		}
		run := r.newRun(d.js, d.trigger, d.scheduled, now)
		ar, reason := r.claim(d.js, run)
		if ar == nil {
			rows = append(rows, r.skippedRun(run, reason))
			continue
		}
		rows = append(rows, run)
		started = append(started, ar)
	}
	var ids []int64
	r.hwrite("start runs", func(hctx context.Context) (err error) {
		ids, err = r.hist.StartBatch(hctx, rows)
		return err
	})
	k := 0
	for i := range rows {
		if rows[i].Status != StatusRunning {
			continue
		}
		ar := started[k]
		k++
		if i < len(ids) {
			ar.mu.Lock() // a RunNow may read it to name the run it skips
			ar.run.ID = ids[i]
			ar.mu.Unlock()
		}
		ar.logs = newLogBuffer(r, ar.run.ID, r.opts.MaxLogLines)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			if r.lockStarted(ar) {
				r.execute(ctx, ar.js, ar)
			}
		}()
	}
}

// maxCatchUpScan bounds how many missed starts are counted for one job.
const maxCatchUpScan = 100000

// catchUp handles starts that passed while vigil was not running: it
// returns the start to dispatch (a catch-up run or a missed record), if any.
func (r *Runner) catchUp(js *jobState, now time.Time) (dueStart, bool) {
	var last time.Time
	var ok bool
	err := r.hread(func(hctx context.Context) (err error) {
		last, ok, err = r.hist.LastScheduled(hctx, js.spec.Name)
		return err
	})
	if err != nil || !ok {
		return dueStart{}, false // a new job owes nothing; a broken history was logged
	}
	latest, count := time.Time{}, 0
	for t := js.spec.Schedule.Next(last); !t.IsZero() && !t.After(now) && count < maxCatchUpScan; t = js.spec.Schedule.Next(t) {
		latest, count = t, count+1
	}
	if count == 0 {
		return dueStart{}, false
	}
	late := now.Sub(latest)
	if js.spec.CatchUp == CatchUpOnce && late <= js.spec.MaxLateness {
		r.log.Info("catching up a start missed while vigil was down", "job", js.spec.Name, "scheduled", latest, "missed", count)
		return dueStart{js: js, scheduled: latest, trigger: TriggerCatchUp}, true
	}
	m := r.missedRun(js, latest, count, late)
	return dueStart{js: js, scheduled: latest, missed: &m}, true
}

// missedRun logs a missed start and returns its record.
func (r *Runner) missedRun(js *jobState, scheduled time.Time, count int, late time.Duration) Run {
	reason := "catch_up is skip"
	if js.spec.CatchUp == CatchUpOnce {
		reason = fmt.Sprintf("older than max_lateness %s", js.spec.MaxLateness)
	}
	n := fmt.Sprint(count)
	if count >= maxCatchUpScan {
		n = "at least " + n
	}
	msg := fmt.Sprintf("missed %s scheduled start(s) while vigil was not running; the last was due %s ago (%s)", n, late.Round(time.Second), reason)
	r.log.Warn("scheduled start missed", "job", js.spec.Name, "scheduled", scheduled, "reason", msg)
	now := r.clock.Now()
	return Run{Job: js.spec.Name, Kind: js.spec.Kind, Trigger: TriggerSchedule, ScheduledAt: scheduled, FinishedAt: now, Status: StatusMissed, Error: msg, PID: r.pid}
}

// RunNow runs a job in the caller's goroutine and returns its final
// record. If the job is already running it returns the recorded skipped
// run. Cancelling ctx cancels the job (recorded cancelled).
func (r *Runner) RunNow(ctx context.Context, name string, trigger Trigger) (Run, error) {
	js, ok := r.jobs[name]
	if !ok {
		return Run{}, fmt.Errorf("run %q: %w", name, ErrUnknownJob)
	}
	ar, skipped := r.begin(js, trigger, time.Time{})
	if ar == nil {
		return skipped, nil
	}
	return r.execute(ctx, js, ar), nil
}

// stillRunning tells MarkInterrupted whether another process (a `vigil
// run`) still holds the job; without a Locker nothing else can run it.
func (r *Runner) stillRunning(run Run) bool {
	if r.opts.Locker == nil || run.PID == r.pid {
		return false
	}
	unlock, err := r.opts.Locker.TryLock(run.Job)
	if err != nil {
		return errors.Is(err, ErrLocked)
	}
	unlock()
	return false
}

// shutdown cancels running jobs and waits up to ShutdownGrace for them.
func (r *Runner) shutdown(cancelJobs context.CancelCauseFunc) {
	r.mu.Lock()
	n := len(r.active)
	r.mu.Unlock()
	r.log.Info("shutting down", "running", n, "grace", r.opts.ShutdownGrace)
	cancelJobs(ErrShutdown)
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	t := r.clock.NewTimer(r.opts.ShutdownGrace)
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C():
	}
	r.mu.Lock()
	stuck := make([]*activeRun, 0, len(r.active))
	for ar := range r.active {
		stuck = append(stuck, ar)
	}
	r.mu.Unlock()
	for _, ar := range stuck {
		r.log.Error("job did not stop within the shutdown grace period", "job", ar.js.spec.Name, "run", ar.id())
		r.finalize(ar, StatusCancelled, fmt.Sprintf("cancelled: vigil stopped and the job did not finish cleaning up within %s", r.opts.ShutdownGrace))
	}
}

// hwrite runs a history write with a detached, bounded context; failures
// are counted and logged loudly but never stop a job.
func (r *Runner) hwrite(op string, fn func(ctx context.Context) error) {
	if err := r.hread(fn); err != nil {
		r.log.Error("HISTORY WRITE FAILED: runs are not being recorded", "op", op, "err", err)
	}
}

func (r *Runner) hread(fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := fn(ctx)
	if err != nil {
		r.historyErrors.Add(1)
	}
	return err
}

// queue is a min-heap of next start times.
type entry struct {
	at time.Time
	js *jobState
}

type queue []*entry

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].at.Equal(q[j].at) {
		return q[i].js.spec.Name < q[j].js.spec.Name
	}
	return q[i].at.Before(q[j].at)
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*entry)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}
