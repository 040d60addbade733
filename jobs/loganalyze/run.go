package loganalyze

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/vigilops/vigil/runner"
)

// run is one run's working set.
type run struct {
	j        *Job
	rc       runner.RunContext
	log      *slog.Logger
	state    runner.JobState
	now      time.Time
	parsers  []*parser
	an       *analyzer
	cursors  *cursors
	firstRun bool
	sinceCut time.Time
	ev       Event
	buf      []byte

	files, lines, bytes, parseErrors, nulLines, longLines, skippedOld int64
	samples                                                           []string
	notes                                                             int
}

// note records something odd about the input in the run log; it never
// fails the run.
func (r *run) note(msg string, args ...any) {
	r.notes++
	r.log.Warn(msg, args...)
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	r := &run{j: j, rc: rc, log: rc.Log(), state: runner.StateOf(rc), now: j.now()}
	for _, p := range j.parsers {
		r.parsers = append(r.parsers, p.clone(r.now))
	}
	r.an = newAnalyzer(&j.p, j.rules)
	r.loadCursors(ctx)
	if r.firstRun && j.p.Since > 0 {
		r.sinceCut = r.now.Add(-j.p.Since.D())
		r.log.Info("first run: reading events since", "since", r.sinceCut)
	}
	inputs := r.discover()
	for i, in := range inputs {
		rc.Progress(runner.Progress{Phase: "read", Done: int64(i), Total: int64(len(inputs)), Unit: "files", Message: in.path})
		if err := r.readFile(ctx, in); err != nil {
			// Cursors are not saved: the next run reads this data again
			// rather than skipping it.
			return fmt.Errorf("loganalyze: %w", err)
		}
	}
	if r.parseErrors > 0 {
		r.log.Warn("lines not in the expected format", "lines", r.parseErrors, "samples", r.samples)
	}
	if r.nulLines > 0 {
		r.note("lines with NUL bytes (a file truncated under a writer, or binary data)", "lines", r.nulLines)
	}
	if r.an.overflow > 0 {
		r.note("too many distinct subjects; the rest are counted as (other)", "events", r.an.overflow)
	}
	findings := r.an.result()
	prev := r.loadPrevious(ctx)
	current := map[string]map[string]int64{}
	for i := range findings {
		f := &findings[i]
		applyDelta(f, prev)
		if current[f.Code] == nil {
			current[f.Code] = map[string]int64{}
		}
		current[f.Code][f.Subject] = f.Count
		rc.AddFinding(*f)
	}
	r.setSummary(len(findings))
	if err := r.saveCursors(ctx); err != nil {
		return fmt.Errorf("loganalyze: %w", err)
	}
	if b, err := json.Marshal(current); err == nil {
		if err := r.state.Put(ctx, "previous", b); err != nil {
			r.log.Warn("cannot save counts for tomorrow's deltas", "err", err)
		}
	}
	return nil
}

func (r *run) loadPrevious(ctx context.Context) map[string]map[string]int64 {
	prev := map[string]map[string]int64{}
	b, ok, err := r.state.Get(ctx, "previous")
	if err != nil || !ok {
		return nil
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		r.log.Warn("previous counts corrupt; no deltas this run", "err", err)
		return nil
	}
	return prev
}

// applyDelta compares a finding with the previous run's: a subject not
// reported then is new; one at least twice as frequent (and by 5 or more)
// is rising.
func applyDelta(f *runner.Finding, prev map[string]map[string]int64) {
	if prev == nil {
		return // first run: nothing to compare with
	}
	if f.Extra == nil {
		f.Extra = map[string]any{}
	}
	before, ok := prev[f.Code][f.Subject]
	f.Extra["previous_count"] = before
	switch {
	case !ok:
		f.Extra["new"] = true
		f.Message += " [new since the last run]"
	case f.Count >= 2*before && f.Count-before >= 5:
		f.Extra["rising"] = true
		f.Message += fmt.Sprintf(" [rising: %d the run before]", before)
	}
}

func (r *run) setSummary(findings int) {
	progs := make(map[string]int64, len(r.an.programs))
	for k, v := range r.an.programs {
		progs[k] = *v
	}
	top := topN(progs, 5)
	r.rc.SetSummary(runner.Summary{BytesRead: r.bytes, Files: r.files, Extra: map[string]any{
		"lines": r.lines, "parse_errors": r.parseErrors, "nul_lines": r.nulLines, "long_lines": r.longLines,
		"skipped_before_since": r.skippedOld, "notes": r.notes, "findings": findings, "top_sources": top,
	}})
}
