package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"
)

// StateStore keeps small values per job across runs: cursors, the last
// rotation of a file, the last exported config's hash. Keys are free-form
// strings owned by the job kind; values are opaque bytes (kinds usually
// store JSON). storage/history implements it in the same SQLite file as
// the runs, so state and history are backed up and moved together.
//
// Put is an upsert and is durable when it returns; a job writes state
// only after the work it describes is done, so a crash repeats work
// instead of skipping it.
type StateStore interface {
	// GetState returns the value of (job, key); ok is false when absent.
	GetState(ctx context.Context, job, key string) (value []byte, ok bool, err error)
	// PutState creates or replaces (job, key).
	PutState(ctx context.Context, job, key string, value []byte) error
	// DeleteState removes (job, key); removing an absent key is not an error.
	DeleteState(ctx context.Context, job, key string) error
	// ListState returns every key of job that starts with prefix.
	ListState(ctx context.Context, job, prefix string) (map[string][]byte, error)
}

// JobState is a StateStore bound to the running job.
type JobState interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) (map[string][]byte, error)
}

// StatefulContext is implemented by the runner's RunContexts. It is a
// separate interface so that RunContext fakes written before it existed
// keep compiling; jobs reach it through StateOf and IsDryRun.
type StatefulContext interface {
	RunContext
	// State is the job's persistent key-value state.
	State() JobState
	// DryRun reports that the job must only say what it would do: no
	// file changes, no repository writes; state writes are not kept.
	DryRun() bool
}

// StateOf returns rc's persistent state. A RunContext without one (an
// old test fake) gets a store that lives only as long as the returned value.
func StateOf(rc RunContext) JobState {
	if s, ok := rc.(StatefulContext); ok {
		return s.State()
	}
	return &boundState{store: NewMemState(), job: rc.JobName()}
}

// IsDryRun reports whether rc asks for a dry run.
func IsDryRun(rc RunContext) bool {
	s, ok := rc.(StatefulContext)
	return ok && s.DryRun()
}

// stateTimeout bounds one state call: state lives in the history
// database, and a wedged database must not hang a job forever.
const stateTimeout = 30 * time.Second

// boundState binds a StateStore to a job name.
type boundState struct {
	store StateStore
	job   string
}

func (b *boundState) Get(ctx context.Context, key string) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	return b.store.GetState(ctx, b.job, key)
}

func (b *boundState) Put(ctx context.Context, key string, value []byte) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	return b.store.PutState(ctx, b.job, key, value)
}

func (b *boundState) Delete(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	return b.store.DeleteState(ctx, b.job, key)
}

func (b *boundState) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	return b.store.ListState(ctx, b.job, prefix)
}

// overlayState reads through to a store but keeps writes in memory: a dry
// run sees its own writes (a loop over files behaves as in a real run)
// and leaves the real state untouched.
type overlayState struct {
	base    JobState
	mu      sync.Mutex
	written map[string][]byte // nil value = deleted
}

func (o *overlayState) Get(ctx context.Context, key string) ([]byte, bool, error) {
	o.mu.Lock()
	v, ok := o.written[key]
	o.mu.Unlock()
	if ok {
		return v, v != nil, nil
	}
	return o.base.Get(ctx, key)
}

func (o *overlayState) Put(ctx context.Context, key string, value []byte) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.written[key] = append([]byte{}, value...)
	return nil
}

func (o *overlayState) Delete(ctx context.Context, key string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.written[key] = nil
	return nil
}

func (o *overlayState) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	out, err := o.base.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, v := range o.written {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out, nil
}

// MemState is an in-memory StateStore (tests, and the fallback when the
// history database is unavailable).
type MemState struct {
	mu sync.Mutex
	m  map[string]map[string][]byte
}

// NewMemState returns an empty MemState.
func NewMemState() *MemState { return &MemState{m: map[string]map[string][]byte{}} }

func (s *MemState) GetState(ctx context.Context, job, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[job][key]
	return append([]byte(nil), v...), ok, nil
}

func (s *MemState) PutState(ctx context.Context, job, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[job] == nil {
		s.m[job] = map[string][]byte{}
	}
	s.m[job][key] = append([]byte{}, value...)
	return nil
}

func (s *MemState) DeleteState(ctx context.Context, job, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m[job], key)
	return nil
}

func (s *MemState) ListState(ctx context.Context, job, prefix string) (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range s.m[job] {
		if strings.HasPrefix(k, prefix) {
			out[k] = append([]byte(nil), v...)
		}
	}
	return out, nil
}

var _ StateStore = (*MemState)(nil)

// stateStore picks the runner's state: Options.State, else the history if
// it keeps state too, else memory (state then lasts one process).
func (r *Runner) stateStore() StateStore {
	r.stateOnce.Do(func() {
		switch {
		case r.opts.State != nil:
			r.state = r.opts.State
		default:
			if s, ok := r.hist.(StateStore); ok {
				r.state = s
			} else {
				r.state = NewMemState()
			}
		}
	})
	return r.state
}

// DryRunResult is what a dry run reported.
type DryRunResult struct {
	Summary  Summary
	Findings []Finding
	Err      error
}

// DryRun runs a job once with IsDryRun true: nothing is recorded in the
// history, no job lock is taken, state writes are discarded and the
// repository is not opened. The job's log goes to log; the job is
// responsible for describing its plan there.
func (r *Runner) DryRun(ctx context.Context, name string, log *slog.Logger) (DryRunResult, error) {
	js, ok := r.jobs[name]
	if !ok {
		return DryRunResult{}, fmt.Errorf("dry run %q: %w", name, ErrUnknownJob)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dc := &dryRunContext{name: name, log: log.With("job", name, "dry_run", true),
		state: &overlayState{base: &boundState{store: r.stateStore(), job: name}, written: map[string][]byte{}}}
	err := func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return js.spec.Job.Run(ctx, dc)
	}()
	dc.mu.Lock()
	defer dc.mu.Unlock()
	return DryRunResult{Summary: dc.summary, Findings: dc.findings, Err: err}, nil
}

// ErrDryRun is returned by Repository during a dry run.
var ErrDryRun = errors.New("dry run: the repository is not opened")

type dryRunContext struct {
	name     string
	log      *slog.Logger
	state    *overlayState
	mu       sync.Mutex
	summary  Summary
	findings []Finding
}

func (d *dryRunContext) RunID() int64      { return 0 }
func (d *dryRunContext) JobName() string   { return d.name }
func (d *dryRunContext) Attempt() int      { return 1 }
func (d *dryRunContext) Log() *slog.Logger { return d.log }
func (d *dryRunContext) Progress(Progress) {}
func (d *dryRunContext) State() JobState   { return d.state }
func (d *dryRunContext) DryRun() bool      { return true }

func (d *dryRunContext) SetSummary(s Summary) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s.Extra = maps.Clone(s.Extra)
	d.summary = s
}

func (d *dryRunContext) AddFinding(f Finding) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.findings = append(d.findings, f)
}

func (d *dryRunContext) Repository(context.Context) (any, error) { return nil, ErrDryRun }

var _ StatefulContext = (*dryRunContext)(nil)
var _ StatefulContext = (*runContext)(nil)
