package prune

import (
	"context"
	"crypto/rand"
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

// backups stores n snapshots for job, each with fresh random content so
// that forgetting one leaves its pack unused.
func backups(t *testing.T, r *repo.Repository, job string, n int, tags ...string) {
	t.Helper()
	src := t.TempDir()
	for i := 0; i < n; i++ {
		data := make([]byte, 200<<10)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Backup(context.Background(), repo.BackupOptions{Paths: []string{src}, Job: job, Host: "lib1", Tags: tags}); err != nil {
			t.Fatal(err)
		}
	}
}

func perJob(t *testing.T, r *repo.Repository) map[string]int {
	t.Helper()
	sns, err := r.Snapshots(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range sns {
		out[s.Job]++
	}
	return out
}

func build(t *testing.T, with string, ret configs.Retention) runner.Job {
	t.Helper()
	j, err := New(jobtest.Job(t, "weekly-prune", "prune", with, ret))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestRetentionPerGroupThenPrune(t *testing.T) {
	r, dir := jobtest.NewRepo(t)
	backups(t, r, "shares", 3)
	backups(t, r, "catalogue", 2)
	backups(t, r, "catalogue", 1, "hold")
	res := jobtest.Run(t, "weekly-prune", "prune", build(t, "keep_tags: [hold]\n", configs.Retention{KeepLast: 1}), r)
	if res.Run.Status != runner.StatusSuccess {
		t.Fatalf("status %s: %s\n%s", res.Run.Status, res.Run.Error, res.Messages())
	}
	// shares keeps its newest; catalogue's newest is also the tagged one.
	if got := perJob(t, r); got["shares"] != 1 || got["catalogue"] != 1 {
		t.Errorf("snapshots per job = %v, want 1 each", got)
	}
	x := res.Run.Summary.Extra
	if x["snapshots_forgotten"] != 4 || x["packs_deleted"].(int) < 4 || x["bytes_freed"].(int64) < 4*200<<10 {
		t.Errorf("summary extra = %v: want 4 forgotten and their packs freed", x)
	}
	if msgs := res.Messages(); !strings.Contains(msgs, `reasons="last, tag hold"`) || strings.Count(msgs, "retention: remove") != 4 {
		t.Errorf("run log lacks the decisions:\n%s", msgs)
	}
	// The repository another process opens is consistent and complete.
	chk, err := jobtest.Open(t, dir).Check(context.Background(), repo.CheckOptions{ReadData: true})
	if err != nil || !chk.OK() {
		t.Fatalf("check after prune: %v %+v", err, chk)
	}
}

func TestNoRetentionOnlyPrunes(t *testing.T) {
	r, _ := jobtest.NewRepo(t)
	backups(t, r, "shares", 2)
	res := jobtest.Run(t, "weekly-prune", "prune", build(t, "", configs.Retention{}), r)
	if res.Run.Status != runner.StatusSuccess || perJob(t, r)["shares"] != 2 {
		t.Fatalf("status %s %s, snapshots %v", res.Run.Status, res.Run.Error, perJob(t, r))
	}
	if !strings.Contains(res.Messages(), "every snapshot is kept") {
		t.Errorf("log:\n%s", res.Messages())
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	r, dir := jobtest.NewRepo(t)
	backups(t, r, "shares", 3)
	before, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	res := jobtest.Run(t, "weekly-prune", "prune", build(t, "dry_run: true\n", configs.Retention{KeepLast: 1}), r)
	if res.Run.Status != runner.StatusSuccess {
		t.Fatalf("status %s %s", res.Run.Status, res.Run.Error)
	}
	after, _ := os.ReadDir(filepath.Join(dir, "snapshots"))
	if len(before) != 3 || len(after) != 3 || strings.Count(res.Messages(), "would remove") != 2 {
		t.Errorf("snapshots %d -> %d; log:\n%s", len(before), len(after), res.Messages())
	}
}

func TestLockedRepositoryWaitsThenFails(t *testing.T) {
	r, _ := jobtest.NewRepo(t)
	backups(t, r, "shares", 1)
	lock, err := r.Lock(context.Background(), false, "backup", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	res := jobtest.Run(t, "weekly-prune", "prune", build(t, "lock_wait: 1s\n", configs.Retention{}), r)
	if res.Run.Status != runner.StatusFailed || !strings.Contains(res.Run.Error, "locked") {
		t.Fatalf("status %s, error %q: want failed, locked", res.Run.Status, res.Run.Error)
	}
	if !strings.Contains(res.Messages(), "repository is locked; waiting") {
		t.Errorf("log:\n%s", res.Messages())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ with, want string }{
		{"group_by: [host, owner]\n", `with.group_by: entry 1: "owner" is not one of host, job, tags, paths`},
		{"repack_unused_percent: 0\n", "with.repack_unused_percent: must be between 1 and 100, got 0"},
		{"lock_wait: -5m\n", "with.lock_wait: must not be negative"},
		{"keep_last: 3\n", "with.keep_last"},
	} {
		_, err := New(jobtest.Job(t, "p", "prune", tc.with, configs.Retention{}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %q: error %v, want %q", tc.with, err, tc.want)
		}
	}
}

// TestRetentionDaysInConfiguredTimezone: keep_daily counts days in the
// config's timezone. 23:00 and 01:00 UTC are two days in UTC and one
// evening in New York; whatever the machine's zone, one of the two cases
// fails if retention ignores the config.
func TestRetentionDaysInConfiguredTimezone(t *testing.T) {
	first := time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)
	for tz, want := range map[string]int{"UTC": 2, "America/New_York": 1} {
		t.Run(tz, func(t *testing.T) {
			src := "timezone: " + tz + "\njobs:\n  - name: weekly-prune\n    kind: prune\n    retention: {keep_daily: 7}\n"
			cfg, err := configs.Parse("p.yaml", []byte(src), configs.Options{})
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
			r, err := repo.Init(context.Background(), st, jobtest.Password, repo.InitOptions{PackSize: 1 << 20},
				repo.Options{KDF: jobtest.KDF, Clock: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			backups(t, r, "shares", 1)
			now = first.Add(2 * time.Hour)
			backups(t, r, "shares", 1)
			res := jobtest.Run(t, "weekly-prune", "prune", job, r)
			if res.Run.Status != runner.StatusSuccess {
				t.Fatalf("status %s: %s\n%s", res.Run.Status, res.Run.Error, res.Messages())
			}
			if got := perJob(t, r)["shares"]; got != want {
				t.Errorf("kept %d snapshots, want %d (keep_daily in %s)\n%s", got, want, tz, res.Messages())
			}
		})
	}
}
