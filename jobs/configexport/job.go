package configexport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// Kind is the job kind's name.
const Kind = "configexport"

// Tag marks the snapshots this kind writes; "run:<id>" ties one to its run.
const Tag = "configexport"

// maxFindingDiff bounds the diff kept per target in the run summary; the
// complete diff can always be recomputed from the repository.
const maxFindingDiff = 64 << 10

// source produces one target's raw export.
type source interface {
	// export writes the raw output to out. It returns when done or when
	// ctx ends (the target's timeout). Device text quoted in an error
	// (stderr, the last line seen) goes through red first.
	export(ctx context.Context, out *capture, log *slog.Logger, red *redactor) error
}

// ruleSource is a source with its own normalisation and redaction rules
// (ssh device profiles).
type ruleSource interface {
	rules() extraRules
}

type extraRules struct {
	volatile, redact []*regexp.Regexp
	pager            *regexp.Regexp
}

// target is a validated, compiled Target.
type target struct {
	Target
	timeout   time.Duration
	maxOutput int64
	volatile  []*regexp.Regexp
	pager     *regexp.Regexp
	redactor  *redactor
	src       source
}

func (t *target) normalizer() normalizer { return normalizer{volatile: t.volatile, pager: t.pager} }

// Job is one configured configexport job.
type Job struct {
	name         string
	p            Params
	storeSecrets bool
	targets      []*target
}

// New builds a job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	j, err := Load(job)
	if err != nil {
		return nil, err
	}
	return j, nil
}

// Load is New with the concrete type, for the CLI (targets, redaction).
func Load(job configs.Job) (*Job, error) {
	p := defaultParams()
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	targets, errs := p.validate(job.With)
	if len(errs) > 0 {
		return nil, errs
	}
	return &Job{name: job.Name, p: p, storeSecrets: !strings.EqualFold(p.StoreSecrets, "false"), targets: targets}, nil
}

// Targets lists the configured target names in config order.
func (j *Job) Targets() []string {
	out := make([]string, len(j.targets))
	for i, t := range j.targets {
		out[i] = t.Name
	}
	return out
}

// Source names the source kind of a target ("" if unknown).
func (j *Job) Source(name string) string {
	if t := j.target(name); t != nil {
		return t.SourceName()
	}
	return ""
}

// Redact hides secrets in text exported by the named target, with that
// target's rules (the built-in rules for an unknown target).
func (j *Job) Redact(name, text string) string {
	if t := j.target(name); t != nil {
		return t.redactor.Redact(text)
	}
	return defaultRedactor.Redact(text)
}

func (j *Job) target(name string) *target {
	for _, t := range j.targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// result is one target's export.
type result struct {
	t        *target
	stored   []byte // what goes into the repository
	shown    string // redacted; set only when store_secrets is false
	rawBytes int64
	cut      int64 // bytes dropped by the output cap
	err      error
	took     time.Duration
}

// Change is a changed target as kept in the run summary (redacted).
type Change struct {
	Target      string `json:"target"`
	Added       int    `json:"added"`
	Removed     int    `json:"removed"`
	SecretsOnly bool   `json:"secrets_only,omitempty"`
	Diff        string `json:"diff,omitempty"`
	DiffCut     bool   `json:"diff_cut,omitempty"`
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	log := rc.Log()
	h, err := rc.Repository(ctx)
	if err != nil {
		return fmt.Errorf("config export: %w", err)
	}
	r, ok := h.(*repo.Repository)
	if !ok {
		return fmt.Errorf("config export: repository handle is %T, not *repo.Repository", h)
	}
	results := j.exportAll(ctx, rc)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("config export: %w", err)
	}
	rc.Progress(runner.Progress{Phase: "store", Done: int64(len(results)), Total: int64(len(results)), Unit: "targets"})
	b, err := r.NewBuilder(ctx, j.p.LockWait.D())
	if err != nil {
		return fmt.Errorf("config export: %w", err)
	}
	defer b.Close()
	hist, err := OpenHistory(ctx, r, b.Index(), rc.JobName())
	if err != nil {
		return fmt.Errorf("config export: %w", err)
	}

	var failed []string
	var changes []Change
	var paths []string
	var parent parentRef
	if last := hist.LastSnapshot(); last != nil {
		parent = parentRef{id: &last.ID}
	}
	// Decide per target first: when every target is unchanged and came
	// from the last snapshot, the whole /configs directory is reused and
	// the run writes no blob at all.
	type decision struct {
		res     *result
		prev    *Version
		changed bool
	}
	var decided []decision
	var prevDirs map[string]*repo.Node
	var prevConfigs *repo.Node
	if last := hist.LastSnapshot(); last != nil {
		if prevConfigs, prevDirs, err = hist.dirs(ctx, last); err != nil {
			log.Warn("last snapshot unreadable; storing everything anew", "err", err)
			prevConfigs, prevDirs = nil, nil
		}
	}
	stats := map[string]int{}
	var rawTotal int64
	allReusable := true
	for i := range results {
		res := &results[i]
		t := res.t
		if res.err != nil {
			failed = append(failed, t.Name)
			allReusable = false
			msg := t.redactor.Redact(res.err.Error())
			log.Error("export failed", "target", t.Name, "source", t.SourceName(), "err", msg)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityError, Code: "config.export_failed", Subject: t.Name,
				Message: fmt.Sprintf("%s: export failed: %s", t.Name, msg)})
			continue
		}
		rawTotal += res.rawBytes
		if res.cut > 0 {
			log.Warn("export cut at the output cap", "target", t.Name, "kept_bytes", t.maxOutput, "dropped_bytes", res.cut)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "config.output_cut", Subject: t.Name,
				Message: fmt.Sprintf("%s: export cut at %d bytes (%d more dropped); raise max_output", t.Name, t.maxOutput, res.cut)})
		}
		paths = append(paths, "config:"+t.Name)
		prev, err := hist.Latest(ctx, t.Name)
		var prevData []byte
		if err == nil && prev != nil {
			prevData, err = hist.Read(ctx, prev)
		}
		if err != nil {
			// An unreadable earlier version must not stop today's export.
			log.Warn("earlier export unreadable; storing as new", "target", t.Name, "err", err)
			prev = nil
		}
		d := decision{res: res, prev: prev, changed: prev == nil || prev.File != t.fileName() || !bytes.Equal(prevData, res.stored)}
		if d.changed || prevDirs[t.Name] == nil || prev.Snapshot != parent.ID() {
			allReusable = false
		}
		decided = append(decided, d)
		lines := bytes.Count(res.stored, []byte("\n"))
		switch {
		case prev == nil:
			stats["new"]++
			log.Info("first export", "target", t.Name, "lines", lines, "seconds", res.took.Seconds())
		case !d.changed:
			stats["unchanged"]++
			log.Info("unchanged", "target", t.Name, "lines", lines, "seconds", res.took.Seconds())
		default:
			stats["changed"]++
			shown := res.shown
			if shown == "" {
				shown = t.redactor.Redact(string(res.stored))
			}
			c := changeOf(t.Name, t.redactor.Redact(string(prevData)), shown, prev.Time)
			changes = append(changes, c)
			msg := fmt.Sprintf("%s: config changed, +%d −%d lines", t.Name, c.Added, c.Removed)
			if c.SecretsOnly {
				msg = fmt.Sprintf("%s: config changed, secrets only (values not shown)", t.Name)
			}
			log.Info("config changed", "target", t.Name, "added", c.Added, "removed", c.Removed, "secrets_only", c.SecretsOnly)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "config.changed", Subject: t.Name, Message: msg})
		}
	}
	if allReusable && prevConfigs != nil && len(decided) == len(prevDirs) {
		if err := b.AddNode("/configs", prevConfigs); err != nil {
			return fmt.Errorf("config export: %w", err)
		}
	} else {
		for _, d := range decided {
			t := d.res.t
			var err error
			switch {
			case d.changed:
				_, err = b.AddBytes(ctx, "/configs/"+t.Name+"/"+t.fileName(), d.res.stored, repo.FileMeta{Mode: 0o600, ModTime: time.Now()})
			case prevDirs[t.Name] != nil && d.prev.Snapshot == parent.ID():
				// Same bytes as last time: the directory is reused as it
				// is, so its tree is not written again.
				err = b.AddNode("/configs/"+t.Name, prevDirs[t.Name])
			default:
				err = b.AddNode("/configs/"+t.Name+"/"+d.prev.File, d.prev.Node)
			}
			if err != nil {
				return fmt.Errorf("config export: store %s: %w", t.Name, err)
			}
		}
	}

	summary := runner.Summary{BytesRead: rawTotal, Files: int64(len(paths)), Extra: map[string]any{
		"targets": len(results), "changed": stats["changed"], "unchanged": stats["unchanged"], "new": stats["new"], "failed": len(failed),
	}}
	if len(changes) > 0 {
		summary.Extra["changes"] = changes
	}
	if len(failed) > 0 {
		summary.Extra["failed_targets"] = failed
	}
	if len(paths) > 0 {
		sort.Strings(paths)
		tags := []string{Tag}
		if id := rc.RunID(); id > 0 {
			tags = append(tags, "run:"+strconv.FormatInt(id, 10))
		}
		sn, err := b.Commit(ctx, repo.SnapshotMeta{Paths: paths, Job: rc.JobName(), Tags: tags, Parent: parent.id})
		if err != nil {
			return fmt.Errorf("config export: %w", err)
		}
		summary.SnapshotID = sn.ID.String()
		if sn.Summary != nil {
			summary.BytesNew, summary.BytesStored = sn.Summary.BytesNew, sn.Summary.BytesStored
		}
	}
	rc.SetSummary(summary)
	switch {
	case len(failed) == 0:
		return nil
	case len(failed) == len(results):
		return fmt.Errorf("config export: every target failed: %s", strings.Join(failed, ", "))
	}
	return runner.Partial(fmt.Errorf("config export: %d of %d targets failed: %s", len(failed), len(results), strings.Join(failed, ", ")))
}

// parentRef is the job's previous snapshot, if any.
type parentRef struct{ id *repo.ID }

// ID is the previous snapshot's ID (the zero ID when there is none).
func (p parentRef) ID() repo.ID {
	if p.id == nil {
		return repo.ID{}
	}
	return *p.id
}

// changeOf diffs two redacted versions for the run summary.
func changeOf(name, before, after string, since time.Time) Change {
	edits := DiffLines(SplitLines(before), SplitLines(after))
	c := Change{Target: name}
	c.Added, c.Removed = Counts(edits)
	if c.Added == 0 && c.Removed == 0 {
		// The stored bytes differ but the shown text does not: only a
		// redacted value changed (a rotated password hash, a new PSK).
		c.SecretsOnly = true
		return c
	}
	d := Unified(name+" "+since.UTC().Format(time.RFC3339), name+" now", edits, 3)
	if len(d) > maxFindingDiff {
		cut := strings.LastIndexByte(d[:maxFindingDiff], '\n')
		d, c.DiffCut = d[:cut+1], true
	}
	c.Diff = d
	return c
}

// exportAll runs every target, at most Concurrency at once, each under its
// own timeout. Results come back in config order.
func (j *Job) exportAll(ctx context.Context, rc runner.RunContext) []result {
	results := make([]result, len(j.targets))
	sem := make(chan struct{}, j.p.Concurrency)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for i, t := range j.targets {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = result{t: t, err: ctx.Err()}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = j.exportOne(ctx, t, rc.Log().With("target", t.Name))
			mu.Lock()
			done++
			rc.Progress(runner.Progress{Phase: "export", Done: int64(done), Total: int64(len(j.targets)), Unit: "targets", Message: t.Name})
			mu.Unlock()
		}()
	}
	wg.Wait()
	return results
}

func (j *Job) exportOne(ctx context.Context, t *target, log *slog.Logger) (res result) {
	res.t = t
	start := time.Now()
	defer func() {
		res.took = time.Since(start)
		if p := recover(); p != nil {
			res.err = fmt.Errorf("export %s: internal error: %v", t.Name, p)
		}
	}()
	tctx, cancel := context.WithTimeoutCause(ctx, t.timeout, errTargetTimeout)
	defer cancel()
	out := newCapture(t.maxOutput)
	err := t.src.export(tctx, out, log, t.redactor)
	if err != nil {
		if context.Cause(tctx) == errTargetTimeout {
			err = fmt.Errorf("timed out after %s: %w", t.timeout, err)
		}
		res.err = err
		return res
	}
	raw := out.Bytes()
	res.rawBytes, res.cut = int64(len(raw))+out.Dropped(), out.Dropped()
	if res.cut > 0 {
		// Keep whole lines only: a half line would show as a change.
		raw = raw[:bytes.LastIndexByte(raw, '\n')+1]
	}
	norm := t.normalizer().normalize(raw)
	if len(norm) == 0 {
		res.err = errors.New("export is empty after normalisation")
		return res
	}
	res.stored = norm
	// Redacted here only when that is what is stored; otherwise only a
	// change is redacted (below), since redacting every unchanged export
	// took most of a nightly run's CPU.
	if !j.storeSecrets {
		res.shown = t.redactor.Redact(string(norm))
		res.stored = []byte(res.shown)
	}
	return res
}

var errTargetTimeout = errors.New("target timeout")
