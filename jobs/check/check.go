// Package check is the "check" job kind: it verifies the repository's
// structure (index, packs present, every snapshot's trees and blobs
// indexed) and, with read_data or read_data_subset, downloads and
// verifies stored bytes. Damage becomes findings with severity error and
// a failed run, so the morning report shows it.
package check

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/internal/repojob"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// DefaultSchedule is Sunday 06:00, after the default prune.
const DefaultSchedule = "0 6 * * 0"

// Params is the kind's with: section.
type Params struct {
	// ReadData reads and verifies every pack (slow on big repositories).
	ReadData bool `yaml:"read_data"`
	// ReadDataSubset reads part of the packs: "N/M" (the N-th of M fixed
	// groups, so M runs with N = 1..M cover everything) or "P%" (a random
	// sample).
	ReadDataSubset string `yaml:"read_data_subset"`
	// LockWait is how long to wait for a running prune (default 2h).
	LockWait configs.Duration `yaml:"lock_wait"`
}

var (
	subsetGroup = regexp.MustCompile(`^([0-9]+)/([0-9]+)$`)
	subsetPct   = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)%$`)
)

// maxFindings bounds the findings of one run; the log keeps every error.
const maxFindings = 100

// New builds a check job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p := Params{LockWait: configs.Duration(2 * time.Hour)}
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	var errs configs.Errors
	w := job.With
	if s := p.ReadDataSubset; s != "" {
		if err := checkSubset(s); err != nil {
			errs = append(errs, w.Errorf("read_data_subset", "%v", err))
		}
		if p.ReadData {
			errs = append(errs, w.Errorf("read_data_subset", "set either read_data (everything) or read_data_subset, not both"))
		}
	}
	if p.LockWait < 0 {
		errs = append(errs, w.Errorf("lock_wait", "must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &Job{p: p}, nil
}

// checkSubset validates the subset syntax here so that `vigil config
// check` reports it, rather than the first weekly run.
func checkSubset(s string) error {
	if m := subsetGroup.FindStringSubmatch(s); m != nil {
		n, err1 := strconv.Atoi(m[1])
		total, err2 := strconv.Atoi(m[2])
		if err1 == nil && err2 == nil && n >= 1 && n <= total {
			return nil
		}
	}
	if m := subsetPct.FindStringSubmatch(s); m != nil {
		if pct, err := strconv.ParseFloat(m[1], 64); err == nil && pct > 0 && pct <= 100 {
			return nil
		}
	}
	return fmt.Errorf("want N/M with 1 <= N <= M (e.g. 1/7) or P%% with 0 < P <= 100 (e.g. 10%%), got %q", s)
}

// Job is one configured check job.
type Job struct {
	p Params
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	if runner.IsDryRun(rc) {
		rc.Log().Info("would check the repository structure", "read_data", j.p.ReadData, "read_data_subset", j.p.ReadDataSubset)
		return nil
	}
	r, err := repojob.Repository(ctx, rc)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	log := rc.Log()
	opts := repo.CheckOptions{
		ReadData: j.p.ReadData || j.p.ReadDataSubset != "",
		Subset:   j.p.ReadDataSubset,
		Progress: func(done, total int64) {
			rc.Progress(runner.Progress{Phase: "read data", Done: done, Total: total, Unit: "bytes"})
		},
	}
	log.Info("check starting", "read_data", opts.ReadData, "subset", opts.Subset)
	var res *repo.CheckResult
	err = repojob.WithLockWait(ctx, log, j.p.LockWait.D(), func() error {
		var err error
		res, err = r.Check(ctx, opts)
		return err
	})
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	rc.SetSummary(runner.Summary{BytesRead: res.BytesRead, Extra: map[string]any{
		"snapshots": res.Snapshots, "packs": res.Packs, "packs_read": res.PacksRead, "blobs": res.Blobs,
		"errors": len(res.Errors), "warnings": len(res.Warnings),
		"damaged_packs": len(res.DamagedPacks), "damaged_snapshots": len(res.DamagedSnapshots), "affected_snapshots": len(res.AffectedSnapshots),
	}})
	for _, w := range res.Warnings {
		log.Warn(w)
	}
	for _, e := range res.Errors {
		log.Error(e)
	}
	f := &findings{rc: rc}
	for _, id := range res.DamagedPacks {
		f.add(runner.SeverityError, "check.pack_damaged", "pack content does not match its index or its hashes", id)
	}
	for _, id := range res.DamagedIndexes {
		f.add(runner.SeverityError, "check.index_damaged", "index object cannot be read", id)
	}
	for _, id := range res.DamagedSnapshots {
		f.add(runner.SeverityError, "check.snapshot_damaged", "snapshot object cannot be read", id)
	}
	for _, id := range res.AffectedSnapshots {
		f.add(runner.SeverityError, "check.snapshot_affected", "snapshot refers to missing or damaged data: restoring it will fail in part", id)
	}
	if f.n == 0 {
		// Problems the structured lists do not cover (a pack missing from
		// storage, a blob past a pack's end) still need a finding each.
		for _, e := range res.Errors {
			f.add(runner.SeverityError, "check.error", e, "")
		}
	}
	if len(res.Warnings) > 0 {
		f.add(runner.SeverityWarning, "check.warnings", fmt.Sprintf("%d warning(s), e.g. %s", len(res.Warnings), res.Warnings[0]), "")
	}
	if !res.OK() {
		return fmt.Errorf("check: repository has %d error(s), first: %s", len(res.Errors), res.Errors[0])
	}
	log.Info("repository is healthy", "snapshots", res.Snapshots, "packs", res.Packs, "packs_read", res.PacksRead, "bytes_read", res.BytesRead)
	return nil
}

// findings adds findings up to maxFindings, then one that says how many
// more the log holds.
type findings struct {
	rc runner.RunContext
	n  int
}

func (f *findings) add(sev runner.Severity, code, msg, subject string) {
	f.n++
	switch {
	case f.n < maxFindings:
		f.rc.AddFinding(runner.Finding{Severity: sev, Code: code, Message: msg, Subject: subject})
	case f.n == maxFindings:
		f.rc.AddFinding(runner.Finding{Severity: runner.SeverityError, Code: "check.more",
			Message: "more problems than findings kept; the run log lists every error"})
	}
}
