package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"
)

// activeRun is a run between begin and finalize.
type activeRun struct {
	js     *jobState
	unlock func() // releases the cross-process job lock

	mu        sync.Mutex
	run       Run
	findings  []Finding
	finalized bool
	logs      *logBuffer
}

func (a *activeRun) id() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.run.ID
}

// begin claims the job and creates its history row, for runs started one
// at a time (RunNow). When the job is already running (here or in another
// process) it records a skipped run instead and returns nil with that
// record. The cross-process lock is taken before the row is written, so a
// manual run that cannot start is recorded only as skipped.
func (r *Runner) begin(js *jobState, trigger Trigger, scheduled time.Time) (*activeRun, Run) {
	run := r.newRun(js, trigger, scheduled, r.clock.Now())
	ar, reason := r.claim(js, run)
	if ar == nil {
		return nil, r.skip(run, reason)
	}
	if r.opts.Locker != nil {
		unlock, err := r.opts.Locker.TryLock(js.spec.Name)
		if err != nil {
			r.release(ar)
			return nil, r.skip(run, lockSkipReason(err))
		}
		ar.unlock = unlock
	}
	r.hwrite("start run", func(hctx context.Context) error {
		id, err := r.hist.Start(hctx, run)
		run.ID = id
		return err
	})
	ar.run = run
	ar.logs = newLogBuffer(r, run.ID, r.opts.MaxLogLines)
	return ar, Run{}
}

func (r *Runner) newRun(js *jobState, trigger Trigger, scheduled, now time.Time) Run {
	return Run{Job: js.spec.Name, Kind: js.spec.Kind, Trigger: trigger, ScheduledAt: scheduled, StartedAt: now, Status: StatusRunning, Attempt: 1, PID: r.pid}
}

// claim marks the job as running in this process. If it already is, claim
// returns nil and the reason the new run is skipped.
func (r *Runner) claim(js *jobState, run Run) (*activeRun, string) {
	r.mu.Lock()
	if cur := js.current; cur != nil {
		r.mu.Unlock()
		cur.mu.Lock()
		prev := cur.run
		cur.mu.Unlock()
		return nil, fmt.Sprintf("skipped: the previous run (id %d, started %s) is still running", prev.ID, prev.StartedAt.Format(time.RFC3339))
	}
	ar := &activeRun{js: js, run: run}
	js.current = ar
	r.active[ar] = true
	r.mu.Unlock()
	return ar, ""
}

// lockStarted takes the cross-process job lock for a run whose row the
// scheduler has already written. If another process holds the job, the
// row becomes a skipped run and lockStarted returns false.
func (r *Runner) lockStarted(ar *activeRun) bool {
	if r.opts.Locker == nil {
		return true
	}
	unlock, err := r.opts.Locker.TryLock(ar.js.spec.Name)
	if err != nil {
		reason := lockSkipReason(err)
		r.log.Warn("run skipped", "job", ar.js.spec.Name, "trigger", ar.run.Trigger, "reason", reason)
		r.finalize(ar, StatusSkipped, reason)
		return false
	}
	ar.unlock = unlock
	return true
}

func lockSkipReason(err error) string {
	if errors.Is(err, ErrLocked) {
		return "skipped: the job is running in another vigil process"
	}
	return fmt.Sprintf("skipped: cannot take the job lock: %v", err)
}

func (r *Runner) skippedRun(run Run, reason string) Run {
	run.Status, run.Error, run.FinishedAt = StatusSkipped, reason, run.StartedAt
	r.log.Warn("run skipped", "job", run.Job, "trigger", run.Trigger, "reason", reason)
	return run
}

func (r *Runner) skip(run Run, reason string) Run {
	run = r.skippedRun(run, reason)
	r.hwrite("record skipped run", func(hctx context.Context) error {
		id, err := r.hist.Record(hctx, run)
		run.ID = id
		return err
	})
	return run
}

func (r *Runner) release(ar *activeRun) {
	r.mu.Lock()
	if ar.js.current == ar {
		ar.js.current = nil
	}
	delete(r.active, ar)
	r.mu.Unlock()
	if ar.unlock != nil {
		ar.unlock()
		ar.unlock = nil
	}
}

// execute runs the job's attempts and finalises the run whatever happens.
func (r *Runner) execute(ctx context.Context, js *jobState, ar *activeRun) (final Run) {
	spec := js.spec
	rc := &runContext{r: r, ar: ar, log: slog.New(&teeHandler{
		daemon: r.log.With("job", spec.Name, "run", ar.run.ID).Handler(),
		buf:    ar.logs,
	})}
	defer func() {
		// A bug in the runner itself must still leave a final record.
		if p := recover(); p != nil {
			r.finalize(ar, StatusFailed, fmt.Sprintf("internal error: %v", p))
		}
		ar.mu.Lock()
		final = ar.run
		ar.mu.Unlock()
	}()

	if sem := r.groups[spec.ConcurrencyGroup]; sem != nil {
		select {
		case sem <- struct{}{}:
		default:
			rc.log.Info("waiting for concurrency group", "group", spec.ConcurrencyGroup)
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				status, msg := classify(ctx, ctx.Err(), spec.Timeout)
				r.finalize(ar, status, msg+" (while waiting for concurrency group "+spec.ConcurrencyGroup+")")
				return
			}
		}
		defer func() { <-sem }()
	}

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if spec.Timeout > 0 {
		t := r.clock.AfterFunc(spec.Timeout, func() { cancel(ErrTimeout) })
		defer t.Stop()
	}
	var err error
	for attempt := 1; ; attempt++ {
		ar.mu.Lock()
		ar.run.Attempt = attempt
		ar.mu.Unlock()
		err = r.callJob(runCtx, rc)
		if err == nil || runCtx.Err() != nil || IsPartial(err) || !IsRetryable(err) || attempt > spec.Retries {
			break
		}
		wait := r.backoff(spec.RetryBackoff, attempt)
		rc.log.Warn("attempt failed; retrying", "attempt", attempt, "of", spec.Retries+1, "wait", wait, "err", err)
		t := r.clock.NewTimer(wait)
		select {
		case <-t.C():
			continue
		case <-runCtx.Done():
			t.Stop()
		}
		break
	}
	status, msg := classify(runCtx, err, spec.Timeout)
	if msg != "" {
		rc.log.Error("run ended", "status", status, "err", msg)
	}
	r.finalize(ar, status, msg)
	return
}

// callJob calls the job, turning a panic into an error with its stack in
// the run log.
func (r *Runner) callJob(ctx context.Context, rc *runContext) (err error) {
	defer func() {
		if p := recover(); p != nil {
			rc.log.Error("job panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return rc.ar.js.spec.Job.Run(ctx, rc)
}

// classify maps a job's result to a status and error text.
func classify(ctx context.Context, err error, timeout time.Duration) (Status, string) {
	if err == nil {
		return StatusSuccess, ""
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrTimeout):
		return StatusFailed, fmt.Sprintf("timeout after %s: %v", timeout, err)
	case errors.Is(cause, ErrShutdown):
		return StatusCancelled, fmt.Sprintf("cancelled: %v: %v", ErrShutdown, err)
	case ctx.Err() != nil:
		return StatusCancelled, fmt.Sprintf("cancelled: %v", err)
	}
	if IsPartial(err) {
		return StatusPartial, err.Error()
	}
	return StatusFailed, err.Error()
}

// backoff returns the wait before attempt+1: RetryBackoff doubled per
// attempt, capped at an hour, with "equal jitter" (half fixed, half
// random) so that jobs failing together do not retry in lockstep.
func (r *Runner) backoff(base time.Duration, attempt int) time.Duration {
	if base <= 0 {
		base = time.Second
	}
	d := base
	for i := 1; i < attempt && d < time.Hour; i++ {
		d *= 2
	}
	d = min(d, max(time.Hour, base))
	return d/2 + time.Duration(r.opts.Rand()*float64(d/2))
}

// finalize writes the run's final record exactly once.
func (r *Runner) finalize(ar *activeRun, status Status, msg string) {
	ar.mu.Lock()
	if ar.finalized {
		ar.mu.Unlock()
		return
	}
	ar.finalized = true
	ar.run.Status, ar.run.Error, ar.run.FinishedAt = status, msg, r.clock.Now()
	run, findings := ar.run, ar.findings
	ar.mu.Unlock()

	ar.logs.close()
	if len(findings) > 0 && run.ID > 0 {
		r.hwrite("add findings", func(hctx context.Context) error { return r.hist.AddFindings(hctx, run.ID, findings) })
	}
	if run.ID > 0 {
		r.hwrite("finish run", func(hctx context.Context) error { return r.hist.Finish(hctx, run) })
	}
	level := slog.LevelInfo
	if status != StatusSuccess {
		level = slog.LevelWarn
	}
	r.log.Log(context.Background(), level, "run finished", "job", run.Job, "run", run.ID, "status", status,
		"attempts", run.Attempt, "duration", run.Duration().Round(time.Millisecond), "err", msg)
	r.release(ar)
}

// runContext implements RunContext.
type runContext struct {
	r   *Runner
	ar  *activeRun
	log *slog.Logger
}

func (c *runContext) RunID() int64      { return c.ar.id() }
func (c *runContext) JobName() string   { return c.ar.js.spec.Name }
func (c *runContext) Log() *slog.Logger { return c.log }

// State implements StatefulContext.
func (c *runContext) State() JobState {
	return &boundState{store: c.r.stateStore(), job: c.ar.js.spec.Name}
}

// DryRun implements StatefulContext; scheduled and manual runs are real.
func (c *runContext) DryRun() bool { return false }

func (c *runContext) Attempt() int {
	c.ar.mu.Lock()
	defer c.ar.mu.Unlock()
	return c.ar.run.Attempt
}

func (c *runContext) Progress(p Progress) {
	if c.r.opts.OnProgress == nil {
		return
	}
	c.ar.mu.Lock()
	run := c.ar.run
	c.ar.mu.Unlock()
	c.r.opts.OnProgress(run, p)
}

func (c *runContext) SetSummary(s Summary) {
	c.ar.mu.Lock()
	defer c.ar.mu.Unlock()
	c.ar.run.Summary = s
}

func (c *runContext) AddFinding(f Finding) {
	c.ar.mu.Lock()
	defer c.ar.mu.Unlock()
	c.ar.findings = append(c.ar.findings, f)
}

func (c *runContext) Repository(ctx context.Context) (any, error) {
	r := c.r
	if r.opts.OpenRepository == nil {
		return nil, ErrNoRepository
	}
	r.repoMu.Lock()
	defer r.repoMu.Unlock()
	if r.repo != nil {
		return r.repo, nil
	}
	repo, err := r.opts.OpenRepository(ctx)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	r.repo = repo
	return repo, nil
}

// logBuffer collects a run's log lines and writes them to the history in
// batches, keeping at most max lines.
type logBuffer struct {
	r       *Runner
	runID   int64
	max     int
	mu      sync.Mutex
	seq     int
	pending []LogLine
	dropped int
	closed  bool
}

const logBatch = 100

func newLogBuffer(r *Runner, runID int64, max int) *logBuffer {
	return &logBuffer{r: r, runID: runID, max: max}
}

func (b *logBuffer) add(l LogLine) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if b.seq >= b.max {
		b.dropped++
		b.mu.Unlock()
		return
	}
	b.seq++
	l.Seq = b.seq
	b.pending = append(b.pending, l)
	var batch []LogLine
	if len(b.pending) >= logBatch {
		batch, b.pending = b.pending, nil
	}
	b.mu.Unlock()
	b.write(batch)
}

func (b *logBuffer) write(lines []LogLine) {
	if len(lines) == 0 || b.runID == 0 {
		return
	}
	b.r.hwrite("append run log", func(hctx context.Context) error { return b.r.hist.AppendLogs(hctx, b.runID, lines) })
}

func (b *logBuffer) close() {
	b.mu.Lock()
	batch := b.pending
	b.pending = nil
	if b.dropped > 0 {
		batch = append(batch, LogLine{Seq: b.seq + 1, At: b.r.clock.Now(), Level: "WARN",
			Message: fmt.Sprintf("%d more log lines were not stored (limit %d per run)", b.dropped, b.max)})
	}
	b.closed = true
	b.mu.Unlock()
	b.write(batch)
}

// teeHandler sends records to the daemon's log and to the run's log.
type teeHandler struct {
	daemon slog.Handler
	buf    *logBuffer
	attrs  string // pre-formatted attrs from WithAttrs
	group  string
}

func (h *teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.daemon.Enabled(ctx, l)
}

func (h *teeHandler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelInfo {
		var sb strings.Builder
		sb.WriteString(h.attrs)
		rec.Attrs(func(a slog.Attr) bool {
			writeAttr(&sb, h.group, a)
			return true
		})
		h.buf.add(LogLine{At: rec.Time, Level: rec.Level.String(), Message: rec.Message, Attrs: strings.TrimSpace(sb.String())})
	}
	if h.daemon.Enabled(ctx, rec.Level) {
		return h.daemon.Handle(ctx, rec)
	}
	return nil
}

func writeAttr(sb *strings.Builder, group string, a slog.Attr) {
	a.Value = a.Value.Resolve() // LogValuer: secrets print redacted
	if a.Value.Kind() == slog.KindGroup {
		g := a.Key
		if group != "" {
			g = group + "." + a.Key
		}
		for _, sub := range a.Value.Group() {
			writeAttr(sb, g, sub)
		}
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	fmt.Fprintf(sb, " %s=%q", key, a.Value.String())
}

func (h *teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var sb strings.Builder
	sb.WriteString(h.attrs)
	for _, a := range as {
		writeAttr(&sb, h.group, a)
	}
	return &teeHandler{daemon: h.daemon.WithAttrs(as), buf: h.buf, attrs: sb.String(), group: h.group}
}

func (h *teeHandler) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &teeHandler{daemon: h.daemon.WithGroup(name), buf: h.buf, attrs: h.attrs, group: g}
}
