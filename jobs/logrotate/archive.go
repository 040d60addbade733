package logrotate

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// backuper is the part of *repo.Repository archiving needs.
type backuper interface {
	Backup(ctx context.Context, opts repo.BackupOptions) (*repo.BackupResult, error)
}

// marker records that a rotated file's content is in the repository. It
// is keyed by device and inode so that renames (counter shifts) keep it,
// and checked against size and mtime so that a reused inode does not.
type marker struct {
	Size     int64  `json:"size"`
	MTime    int64  `json:"mtime_ns"`
	Path     string `json:"path"`
	Snapshot string `json:"snapshot"`
}

func markerKey(c rotated) string { return fmt.Sprintf("archived:%d:%d", c.dev, c.ino) }

// archive stores every rotated copy not yet archived as one snapshot and
// returns the marker keys of the copies the repository now holds.
func (r *run) archive(ctx context.Context, files []string) map[string]bool {
	have := map[string]bool{}
	markers, err := r.state.List(ctx, "archived:")
	if err != nil {
		r.problem("", "logrotate.state_failed", fmt.Errorf("archive: read markers: %w", err))
	}
	var todo []rotated
	for _, f := range files {
		list, err := r.list(f)
		if err != nil {
			r.problem(f, "logrotate.archive_failed", err)
			continue
		}
		for _, c := range list {
			var m marker
			if b, ok := markers[markerKey(c)]; ok && json.Unmarshal(b, &m) == nil && m.Size == c.size && m.MTime == c.mtime.UnixNano() {
				have[markerKey(c)] = true
				continue
			}
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return have
	}
	if r.dry {
		for _, c := range todo {
			r.log.Info("plan: archive", "path", c.path)
		}
		return have
	}
	paths := make([]string, len(todo))
	for i, c := range todo {
		paths[i] = c.path
	}
	h, err := r.rc.Repository(ctx)
	if err != nil {
		r.problem("", "logrotate.archive_failed", fmt.Errorf("archive %d rotated file(s): %w", len(todo), err))
		return have
	}
	b, ok := h.(backuper)
	if !ok {
		r.problem("", "logrotate.archive_failed", fmt.Errorf("archive: repository handle %T cannot back up", h))
		return have
	}
	res, err := b.Backup(ctx, repo.BackupOptions{Paths: paths, Tags: append([]string{"logrotate"}, r.p.Tags...), Job: r.rc.JobName()})
	if err != nil {
		r.problem("", "logrotate.archive_failed", fmt.Errorf("archive %d rotated file(s): %w", len(todo), err))
		return have
	}
	failed := map[string]bool{}
	for _, fe := range res.Errors {
		failed[fe.Path] = true
		r.problem(fe.Path, "logrotate.archive_failed", fmt.Errorf("archive %s: %w", fe.Path, fe.Err))
	}
	snap := ""
	if res.Snapshot != nil {
		snap = res.Snapshot.ID.String()
		r.stats.snapshot = snap
	}
	for _, c := range todo {
		if failed[c.path] {
			continue
		}
		b, _ := json.Marshal(marker{Size: c.size, MTime: c.mtime.UnixNano(), Path: c.path, Snapshot: snap})
		if err := r.state.Put(ctx, markerKey(c), b); err != nil {
			// Not recorded means not deletable: retention waits for next run.
			r.problem(c.path, "logrotate.state_failed", fmt.Errorf("archive: record %s: %w", c.path, err))
			continue
		}
		have[markerKey(c)] = true
		r.stats.archived++
	}
	r.log.Info("archived rotated files", "files", r.stats.archived, "snapshot", snap)
	return have
}

// forgetMarkers drops markers of files that no longer exist.
func (r *run) forgetMarkers(ctx context.Context, files []string) {
	markers, err := r.state.List(ctx, "archived:")
	if err != nil {
		return
	}
	live := map[string]bool{}
	for _, f := range files {
		list, _ := r.list(f)
		for _, c := range list {
			live[markerKey(c)] = true
		}
	}
	for k := range markers {
		if strings.HasPrefix(k, "archived:") && !live[k] {
			_ = r.state.Delete(ctx, k)
		}
	}
}

var _ runner.Job = (*Job)(nil)
