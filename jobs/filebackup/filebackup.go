// Package filebackup is the "files" job kind: it backs up paths into the
// repository as one snapshot per run, then applies the job's retention to
// the job's own snapshots (forget only: freeing the data is the prune
// kind's work, under its exclusive lock, on its own schedule).
package filebackup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/internal/repojob"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// Params is the kind's with: section.
type Params struct {
	// Paths are the files and directories to back up (absolute).
	Paths []string `yaml:"paths"`
	// Excludes are filepath.Match patterns, matched against base names
	// and full paths ("*.tmp", "/home/*/.cache").
	Excludes []string `yaml:"excludes"`
	Tags     []string `yaml:"tags"`
	// Chunking is the repository chunk profile: auto (default), default or image.
	Chunking string `yaml:"chunking"`
	// Host overrides the host name recorded in the snapshot (default: this host).
	Host string `yaml:"host"`
	// LockWait is how long to wait for a conflicting repository lock
	// (a running prune) before failing; default 1h.
	LockWait configs.Duration `yaml:"lock_wait"`
}

// maxReported bounds the unreadable paths written to the log and findings:
// a permissions problem on a big tree would otherwise flood both.
const maxReported = 50

// New builds a files job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p := Params{Chunking: "auto", LockWait: configs.Duration(time.Hour)}
	if err := job.With.Decode(&p); err != nil {
		return nil, err
	}
	var errs configs.Errors
	w := job.With
	if len(p.Paths) == 0 {
		errs = append(errs, w.Errorf("paths", "is required: the files and directories to back up, e.g. [/srv/share]"))
	}
	for i, path := range p.Paths {
		if !filepath.IsAbs(path) {
			// The daemon's working directory is not something an admin
			// thinks about; relative paths would back up the wrong tree.
			errs = append(errs, w.Errorf("paths", "entry %d: %q must be an absolute path", i, path))
		}
	}
	for i, pat := range p.Excludes {
		if _, err := filepath.Match(pat, "x"); err != nil {
			errs = append(errs, w.Errorf("excludes", "entry %d: bad pattern %q: %v", i, pat, err))
		}
	}
	switch p.Chunking {
	case "auto", "default", "image":
	default:
		errs = append(errs, w.Errorf("chunking", "must be auto, default or image, got %q", p.Chunking))
	}
	if p.LockWait < 0 {
		errs = append(errs, w.Errorf("lock_wait", "must not be negative"))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &Job{p: p, retention: job.Retention, loc: cmp.Or(job.Location, time.Local)}, nil
}

// Job is one configured files job.
type Job struct {
	p         Params
	retention configs.Retention
	// loc is the zone retention's day/week/month buckets are cut in: the
	// config's timezone (time.Local if unset).
	loc *time.Location
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	if runner.IsDryRun(rc) {
		return j.plan(rc)
	}
	r, err := repojob.Repository(ctx, rc)
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	host := j.p.Host
	if host == "" {
		if host, err = os.Hostname(); err != nil {
			return fmt.Errorf("files: host name: %w", err)
		}
	}
	log := rc.Log()
	log.Info("backup starting", "paths", j.p.Paths, "excludes", len(j.p.Excludes), "host", host)
	res, err := r.Backup(ctx, repo.BackupOptions{
		Paths: j.p.Paths, Excludes: j.p.Excludes, Tags: j.p.Tags, Host: host, Job: rc.JobName(),
		Chunking: j.p.Chunking, LockWait: j.p.LockWait.D(),
		Progress: func(p repo.Progress) {
			rc.Progress(runner.Progress{Phase: "backup", Done: p.BytesDone, Total: p.BytesTotal, Unit: "bytes", Message: p.CurrentFile})
		},
	})
	if res != nil {
		j.reportUnreadable(rc, res.Errors)
	}
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, repo.ErrLocked) {
			// Another process (prune) held the repository past lock_wait;
			// a retry later may well find it free.
			return runner.Retryable(fmt.Errorf("files: %w", err))
		}
		return fmt.Errorf("files: %w", err)
	}
	sn := res.Snapshot
	sum := runner.Summary{SnapshotID: sn.ID.String(), Extra: map[string]any{"host": host}}
	if s := sn.Summary; s != nil {
		sum.BytesRead, sum.BytesNew, sum.BytesStored = s.BytesRead, s.BytesNew, s.BytesStored
		sum.Files = int64(s.FilesNew + s.FilesChanged + s.FilesUnchanged)
		sum.Extra["files_new"], sum.Extra["files_changed"], sum.Extra["files_unchanged"] = s.FilesNew, s.FilesChanged, s.FilesUnchanged
		sum.Extra["dirs"], sum.Extra["bytes_total"], sum.Extra["unreadable"] = s.Dirs, s.BytesTotal, s.Errors
	}
	rc.SetSummary(sum)
	log.Info("snapshot saved", "snapshot", sn.ID.Short(), "files", sum.Files, "bytes_read", sum.BytesRead,
		"bytes_new", sum.BytesNew, "bytes_stored", sum.BytesStored)

	if len(res.Errors) > 0 {
		// Retention is skipped on a partial run: counting a snapshot that
		// lacks files towards keep_last could push out the last complete one.
		log.Warn("retention skipped: the snapshot is partial")
		return runner.Partial(fmt.Errorf("files: snapshot %s saved without %d unreadable path(s), first: %v",
			sn.ID.Short(), len(res.Errors), res.Errors[0]))
	}
	if err := j.applyRetention(ctx, rc, r, host, &sum); err != nil {
		return fmt.Errorf("files: snapshot %s saved, but %w", sn.ID.Short(), err)
	}
	return nil
}

// plan describes a run without opening the repository; it reports the
// paths that a real run would find missing, the commonest surprise.
func (j *Job) plan(rc runner.RunContext) error {
	log := rc.Log()
	log.Info("would back up", "paths", j.p.Paths, "excludes", j.p.Excludes, "tags", j.p.Tags, "chunking", j.p.Chunking)
	missing := 0
	for _, p := range j.p.Paths {
		if _, err := os.Lstat(p); err != nil {
			missing++
			log.Warn("path cannot be read", "path", p, "err", err)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "files.unreadable", Message: err.Error(), Subject: p})
		}
	}
	if j.retention.IsZero() {
		log.Info("would keep every snapshot (no retention)")
	} else {
		log.Info("would then apply retention to this job's snapshots", "policy", fmt.Sprintf("%+v", repojob.Policy(j.retention)))
	}
	if missing == len(j.p.Paths) {
		return fmt.Errorf("files: %w", repo.ErrNothingToBackup)
	}
	return nil
}

func (j *Job) reportUnreadable(rc runner.RunContext, errs []repo.FileError) {
	for i, fe := range errs {
		if i == maxReported {
			rc.Log().Warn("more unreadable paths not listed", "count", len(errs)-maxReported)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "files.unreadable_more",
				Message: fmt.Sprintf("%d more unreadable paths (not listed)", len(errs)-maxReported)})
			return
		}
		rc.Log().Warn("unreadable path skipped", "path", fe.Path, "err", fe.Err)
		rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "files.unreadable",
			Message: fe.Err.Error(), Subject: fe.Path})
	}
}

// applyRetention forgets this job's own snapshots (same job name and host)
// that the retention does not keep.
func (j *Job) applyRetention(ctx context.Context, rc runner.RunContext, r *repo.Repository, host string, sum *runner.Summary) error {
	log := rc.Log()
	if j.retention.IsZero() {
		log.Info("retention: none configured, every snapshot is kept")
		return nil
	}
	all, err := r.Snapshots(ctx, func(id repo.ID, err error) {
		log.Warn("retention: unreadable snapshot ignored", "snapshot", id.Short(), "err", err)
	})
	if err != nil {
		return fmt.Errorf("retention: list snapshots: %w", err)
	}
	var own []*repo.Snapshot
	for _, s := range all {
		if s.Job == rc.JobName() && s.Hostname == host {
			own = append(own, s)
		}
	}
	groups := map[string][]*repo.Snapshot{"host=" + host + " job=" + rc.JobName(): own}
	res, err := repojob.Forget(ctx, r, log, groups, repojob.Policy(j.retention), j.loc, j.p.LockWait.D())
	sum.Extra["snapshots_kept"], sum.Extra["snapshots_forgotten"] = res.Kept, len(res.Removed)
	rc.SetSummary(*sum)
	if err != nil {
		if errors.Is(err, repo.ErrLocked) && ctx.Err() == nil {
			// The backup itself succeeded; the next run applies the same
			// policy, so a busy repository only delays retention.
			log.Warn("retention deferred to the next run: repository stayed locked", "err", err)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "files.retention_deferred",
				Message: "retention not applied: " + err.Error()})
			return nil
		}
		return fmt.Errorf("retention: %w", err)
	}
	log.Info("retention applied", "kept", res.Kept, "forgotten", len(res.Removed))
	return nil
}
