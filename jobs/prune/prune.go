// Package prune is the "prune" job kind: it applies the job's retention to
// every snapshot group of the repository (by host and job, by default),
// then deletes the data no remaining snapshot references. It runs weekly
// by default because prune takes an exclusive lock and rewrites packs.
package prune

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/internal/repojob"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// DefaultSchedule is Sunday 04:00: weekly, and away from midnight when
// nightly backups (which hold shared locks) usually start.
const DefaultSchedule = "0 4 * * 0"

// Params is the kind's with: section.
type Params struct {
	// GroupBy lists the snapshot fields retention is applied per group of:
	// host, job, tags, paths (default [host, job]).
	GroupBy []string `yaml:"group_by"`
	// KeepTags keeps snapshots carrying any of these tags whatever the
	// retention says (a legal hold, a pre-upgrade snapshot).
	KeepTags []string `yaml:"keep_tags"`
	// RepackUnusedPercent: packs at least this unused are repacked
	// (default 30), as a whole percentage.
	RepackUnusedPercent int `yaml:"repack_unused_percent"`
	// LockWait is how long to wait for running backups to release the
	// repository before giving up (default 2h).
	LockWait configs.Duration `yaml:"lock_wait"`
	// DryRun logs what would be forgotten and pruned, changing nothing.
	DryRun bool `yaml:"dry_run"`
}

// New builds a prune job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p := Params{GroupBy: []string{"host", "job"}, RepackUnusedPercent: 30, LockWait: configs.Duration(2 * time.Hour)}
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	var errs configs.Errors
	w := job.With
	for i, g := range p.GroupBy {
		switch g {
		case "host", "job", "tags", "paths":
		default:
			errs = append(errs, w.Errorf("group_by", "entry %d: %q is not one of host, job, tags, paths", i, g))
		}
	}
	if p.RepackUnusedPercent < 1 || p.RepackUnusedPercent > 100 {
		errs = append(errs, w.Errorf("repack_unused_percent", "must be between 1 and 100, got %d", p.RepackUnusedPercent))
	}
	if p.LockWait < 0 {
		errs = append(errs, w.Errorf("lock_wait", "must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	pol := repojob.Policy(job.Retention)
	pol.Tags = p.KeepTags
	return &Job{p: p, policy: pol, loc: cmp.Or(job.Location, time.Local)}, nil
}

// Job is one configured prune job.
type Job struct {
	p      Params
	policy repo.Policy
	// loc is the config's timezone (time.Local if unset): retention's days and
	// weeks are the admin's, not the server's.
	loc *time.Location
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	if runner.IsDryRun(rc) {
		// The runner's dry run does not open the repository; say what the
		// plan is. (with: dry_run does open it and lists the decisions.)
		rc.Log().Info("would apply retention per group, then prune", "group_by", j.p.GroupBy,
			"policy", fmt.Sprintf("%+v", j.policy), "repack_unused_percent", j.p.RepackUnusedPercent)
		return nil
	}
	r, err := repojob.Repository(ctx, rc)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	log := rc.Log()
	sum := runner.Summary{Extra: map[string]any{"dry_run": j.p.DryRun}}
	defer func() { rc.SetSummary(sum) }()

	if j.policy.Last+j.policy.Daily+j.policy.Weekly+j.policy.Monthly+j.policy.Yearly == 0 {
		// Tags alone would remove every untagged snapshot: refuse that
		// reading of a config that most likely just forgot its retention.
		log.Info("retention: none configured, every snapshot is kept; pruning unreferenced data only")
	} else {
		rc.Progress(runner.Progress{Phase: "forget"})
		var unreadable int
		sns, err := r.Snapshots(ctx, func(id repo.ID, err error) {
			unreadable++
			log.Warn("unreadable snapshot left alone", "snapshot", id.Short(), "err", err)
		})
		if err != nil {
			return fmt.Errorf("prune: list snapshots: %w", err)
		}
		groups, err := repo.GroupSnapshots(sns, j.p.GroupBy)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		if unreadable > 0 {
			rc.AddFinding(runner.Finding{Severity: runner.SeverityError, Code: "prune.snapshot_unreadable",
				Message: fmt.Sprintf("%d snapshot(s) could not be read; run a check job", unreadable)})
		}
		if j.p.DryRun {
			// Only the decisions are logged; nothing is removed.
			kept, removed := dryRun(log, groups, j.policy, j.loc)
			sum.Extra["snapshots_kept"], sum.Extra["snapshots_forgotten"] = kept, removed
		} else {
			res, err := repojob.Forget(ctx, r, log, groups, j.policy, j.loc, j.p.LockWait.D())
			sum.Extra["snapshots_kept"], sum.Extra["snapshots_forgotten"] = res.Kept, len(res.Removed)
			if err != nil {
				return fmt.Errorf("prune: %w", err)
			}
			log.Info("retention applied", "groups", len(groups), "kept", res.Kept, "forgotten", len(res.Removed))
		}
	}

	rc.Progress(runner.Progress{Phase: "prune"})
	var res *repo.PruneResult
	err = repojob.WithLockWait(ctx, log, j.p.LockWait.D(), func() error {
		var err error
		res, err = r.Prune(ctx, repo.PruneOptions{RepackUnused: float64(j.p.RepackUnusedPercent) / 100, DryRun: j.p.DryRun})
		return err
	})
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	sum.Extra["packs_deleted"], sum.Extra["packs_repacked"], sum.Extra["packs_written"] = res.PacksDeleted, res.PacksRepacked, res.PacksWritten
	sum.Extra["stray_packs_deleted"], sum.Extra["bytes_freed"], sum.Extra["bytes_repacked"] = res.StrayPacks, res.BytesFreed, res.BytesRepacked
	sum.Extra["blobs_used"], sum.Extra["blobs_unused"] = res.BlobsUsed, res.BlobsUnused
	log.Info("prune finished", "packs_deleted", res.PacksDeleted, "packs_repacked", res.PacksRepacked,
		"bytes_freed", res.BytesFreed, "stray_packs", res.StrayPacks)
	return nil
}

func dryRun(log *slog.Logger, groups map[string][]*repo.Snapshot, p repo.Policy, loc *time.Location) (kept, removed int) {
	for _, k := range slices.Sorted(maps.Keys(groups)) {
		for _, d := range repo.ApplyPolicy(groups[k], p, loc) {
			if d.Keep {
				kept++
				continue
			}
			removed++
			log.Info("dry run: would remove", "group", k, "snapshot", d.Snapshot.ID.Short())
		}
	}
	return kept, removed
}
