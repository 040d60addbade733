package filebackup

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/jobtest"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func build(t *testing.T, name, with string, ret configs.Retention) runner.Job {
	t.Helper()
	j, err := New(jobtest.Job(t, name, "files", with, ret))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestBackupRecordsSnapshotAndFigures(t *testing.T) {
	r, dir := jobtest.NewRepo(t)
	src := t.TempDir()
	big := bytes.Repeat([]byte("library catalogue row\n"), 50000)
	writeFiles(t, src, map[string]string{
		"catalogue.csv": string(big), "notes/a.txt": "opening hours", "cache/x.tmp": "scratch",
	})
	job := build(t, "shares", "paths: ["+src+"]\nexcludes: ['*.tmp']\ntags: [nightly, staff]\nchunking: default\n", configs.Retention{})
	res := jobtest.Run(t, "shares", "files", job, r)
	if res.Run.Status != runner.StatusSuccess {
		t.Fatalf("status %s: %s\n%s", res.Run.Status, res.Run.Error, res.Messages())
	}
	s := res.Run.Summary
	if s.Files != 2 || s.BytesRead != int64(len(big))+13 || s.BytesNew < s.BytesRead || s.BytesStored <= 0 || s.SnapshotID == "" {
		t.Errorf("summary = %+v (want 2 files, %d bytes read, new >= read, stored > 0, snapshot id)", s, len(big)+13)
	}
	if s.BytesStored >= s.BytesNew {
		t.Errorf("repetitive data stored %d bytes for %d new: compression not applied?", s.BytesStored, s.BytesNew)
	}
	if !strings.Contains(res.Messages(), "retention: none configured") {
		t.Errorf("log does not say that no retention applies:\n%s", res.Messages())
	}

	// What a later process sees: one snapshot with the job's name and tags,
	// holding the files but not the excluded one.
	r2 := jobtest.Open(t, dir)
	ctx := context.Background()
	sns, err := r2.Snapshots(ctx, nil)
	if err != nil || len(sns) != 1 {
		t.Fatalf("snapshots = %d, %v", len(sns), err)
	}
	sn := sns[0]
	if sn.ID.String() != s.SnapshotID || sn.Job != "shares" || !sn.HasTag("nightly") || !sn.HasTag("staff") {
		t.Errorf("snapshot = %+v, summary id %s", sn, s.SnapshotID)
	}
	out := t.TempDir()
	if _, err := r2.Restore(ctx, sn, repo.RestoreOptions{Target: out, Path: src}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(out, "catalogue.csv")); err != nil || !bytes.Equal(got, big) {
		t.Errorf("restored catalogue.csv: %d bytes, %v", len(got), err)
	}
	if _, err := os.Stat(filepath.Join(out, "cache", "x.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("excluded file was backed up (stat: %v)", err)
	}
}

func TestUnreadablePathMakesRunPartialAndSkipsRetention(t *testing.T) {
	r, _ := jobtest.NewRepo(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"ok.txt": "fine"})
	gone := filepath.Join(t.TempDir(), "unmounted-share")
	job := build(t, "mixed", "paths: ["+src+", "+gone+"]\n", configs.Retention{KeepLast: 1})
	jobtest.Run(t, "mixed", "files", build(t, "mixed", "paths: ["+src+"]\n", configs.Retention{}), r)

	res := jobtest.Run(t, "mixed", "files", job, r)
	if res.Run.Status != runner.StatusPartial || !strings.Contains(res.Run.Error, "unreadable") {
		t.Fatalf("status %s, error %q; want partial", res.Run.Status, res.Run.Error)
	}
	if res.Run.Summary.SnapshotID == "" || res.Run.Summary.Files != 1 {
		t.Errorf("summary = %+v, want the partial snapshot with 1 file", res.Run.Summary)
	}
	found := false
	for _, f := range res.Findings {
		found = found || (f.Code == "files.unreadable" && f.Subject == gone && f.Severity == runner.SeverityWarning)
	}
	if !found {
		t.Errorf("findings %+v lack files.unreadable for %s", res.Findings, gone)
	}
	// keep_last 1 would have removed the complete earlier snapshot.
	sns, err := r.Snapshots(context.Background(), nil)
	if err != nil || len(sns) != 2 {
		t.Fatalf("snapshots = %d, %v; retention must not run after a partial backup", len(sns), err)
	}
	if !strings.Contains(res.Messages(), "retention skipped") {
		t.Errorf("log does not say retention was skipped:\n%s", res.Messages())
	}
}

func TestNothingReadableFails(t *testing.T) {
	r, _ := jobtest.NewRepo(t)
	job := build(t, "gone", "paths: [/nonexistent/vigil-test]\n", configs.Retention{})
	res := jobtest.Run(t, "gone", "files", job, r)
	if res.Run.Status != runner.StatusFailed || !strings.Contains(res.Run.Error, "none of the given paths") {
		t.Fatalf("status %s, error %q; want failed", res.Run.Status, res.Run.Error)
	}
}

func TestRetentionForgetsOnlyOwnSnapshotsWithReasons(t *testing.T) {
	r, _ := jobtest.NewRepo(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"a": "1"})
	// Another job's snapshot in the same repository must survive.
	jobtest.Run(t, "other", "files", build(t, "other", "paths: ["+src+"]\n", configs.Retention{}), r)
	job := build(t, "docs", "paths: ["+src+"]\n", configs.Retention{KeepLast: 2})
	var last jobtest.Result
	for i := 0; i < 3; i++ {
		last = jobtest.Run(t, "docs", "files", job, r)
		if last.Run.Status != runner.StatusSuccess {
			t.Fatalf("run %d: %s %s", i, last.Run.Status, last.Run.Error)
		}
	}
	sns, err := r.Snapshots(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, s := range sns {
		count[s.Job]++
	}
	if count["docs"] != 2 || count["other"] != 1 {
		t.Fatalf("snapshots per job = %v, want docs 2, other 1", count)
	}
	if x := last.Run.Summary.Extra; x["snapshots_forgotten"] != 1 || x["snapshots_kept"] != 2 {
		t.Errorf("summary extra = %v", x)
	}
	msgs := last.Messages()
	if strings.Count(msgs, "retention: keep") != 2 || !strings.Contains(msgs, `reasons="last"`) || strings.Count(msgs, "retention: remove") != 1 {
		t.Errorf("run log lacks the retention decisions:\n%s", msgs)
	}
}

func TestRetentionDeferredWhileRepositoryBusy(t *testing.T) {
	r, _ := jobtest.NewRepo(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"a": "1"})
	job := build(t, "busy", "paths: ["+src+"]\nlock_wait: 1s\n", configs.Retention{KeepLast: 1})
	jobtest.Run(t, "busy", "files", job, r)
	// A shared lock, as another job's backup holds: the backup proceeds,
	// the exclusive forget cannot.
	lock, err := r.Lock(context.Background(), false, "backup", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	res := jobtest.Run(t, "busy", "files", job, r)
	if res.Run.Status != runner.StatusSuccess {
		t.Fatalf("status %s %s; a busy repository only defers retention", res.Run.Status, res.Run.Error)
	}
	if len(res.Findings) != 1 || res.Findings[0].Code != "files.retention_deferred" {
		t.Errorf("findings = %+v", res.Findings)
	}
	if sns, _ := r.Snapshots(context.Background(), nil); len(sns) != 2 {
		t.Errorf("snapshots = %d, want 2 (nothing forgotten)", len(sns))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ with, want string }{
		{"excludes: ['*.tmp']\n", "with.paths: is required"},
		{"paths: [relative/dir]\n", `with.paths: entry 0: "relative/dir" must be an absolute path`},
		{"paths: [/srv]\nexcludes: ['[']\n", `with.excludes: entry 0: bad pattern "["`},
		{"paths: [/srv]\nchunking: fast\n", `with.chunking: must be auto, default or image, got "fast"`},
		{"paths: [/srv]\nlock_wait: -1s\n", "with.lock_wait: must not be negative"},
		{"paths: [/srv]\nexclude: ['*.tmp']\n", `with.exclude`},
	} {
		_, err := New(jobtest.Job(t, "x", "files", tc.with, configs.Retention{}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %q: error %v, want %q", tc.with, err, tc.want)
		}
	}
}

func TestRunnerDryRunTouchesNoRepository(t *testing.T) {
	src := t.TempDir()
	gone := filepath.Join(src, "not-there")
	job := build(t, "plan", "paths: ["+src+", "+gone+"]\n", configs.Retention{KeepDaily: 7})
	rn, err := runner.New([]runner.Spec{{Name: "plan", Kind: "files", Job: job}}, runner.Options{
		History: runner.NewMemHistory(),
		OpenRepository: func(context.Context) (any, error) {
			t.Error("dry run opened the repository")
			return nil, errors.New("no")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	res, err := rn.DryRun(context.Background(), "plan", slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil || res.Err != nil {
		t.Fatalf("dry run: %v %v", err, res.Err)
	}
	if len(res.Findings) != 1 || res.Findings[0].Subject != gone || !strings.Contains(log.String(), "would then apply retention") {
		t.Errorf("findings %+v, log:\n%s", res.Findings, log.String())
	}
}

// TestRetentionDaysInConfiguredTimezone: keep_daily counts days in the
// config's timezone. Backups at 23:00 and 01:00 UTC are two days in UTC
// and one evening in New York; whatever the machine's zone, one of the two
// cases fails if retention ignores the config.
func TestRetentionDaysInConfiguredTimezone(t *testing.T) {
	first := time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)
	for tz, want := range map[string]int{"UTC": 2, "America/New_York": 1} {
		t.Run(tz, func(t *testing.T) {
			src := t.TempDir()
			writeFiles(t, src, map[string]string{"a": "1"})
			yml := "timezone: " + tz + "\njobs:\n  - name: docs\n    kind: files\n    retention: {keep_daily: 7}\n    with: {paths: [" + src + "]}\n"
			cfg, err := configs.Parse("f.yaml", []byte(yml), configs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			job, err := New(cfg.Jobs[0])
			if err != nil {
				t.Fatal(err)
			}
			now := first
			st, err := local.Open(filepath.Join(t.TempDir(), "repo"), true)
			if err != nil {
				t.Fatal(err)
			}
			r, err := repo.Init(context.Background(), st, jobtest.Password, repo.InitOptions{},
				repo.Options{KDF: jobtest.KDF, Clock: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			var last jobtest.Result
			for _, at := range []time.Time{first, first.Add(2 * time.Hour)} {
				now = at
				if last = jobtest.Run(t, "docs", "files", job, r); last.Run.Status != runner.StatusSuccess {
					t.Fatalf("run at %s: %s %s", at, last.Run.Status, last.Run.Error)
				}
			}
			if x := last.Run.Summary.Extra; x["snapshots_kept"] != want {
				t.Errorf("kept %v snapshots, want %d (keep_daily in %s)\n%s", x["snapshots_kept"], want, tz, last.Messages())
			}
		})
	}
}
