package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
)

var t0 = time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)

func openTemp(t *testing.T) *DB {
	t.Helper()
	h, err := Open(context.Background(), filepath.Join(t.TempDir(), "history.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestContract runs the same behaviour checks against SQLite and the
// in-memory fallback, so the daemon behaves the same on either.
func TestContract(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) runner.History{
		"sqlite": func(t *testing.T) runner.History { return openTemp(t) },
		"memory": func(t *testing.T) runner.History { return runner.NewMemHistory() },
	} {
		t.Run(name, func(t *testing.T) { contract(t, open(t)) })
	}
}

func contract(t *testing.T, h runner.History) {
	ctx := context.Background()
	id, err := h.Start(ctx, runner.Run{Job: "nightly", Kind: "files", Trigger: runner.TriggerSchedule, ScheduledAt: t0, StartedAt: t0, Status: runner.StatusRunning, Attempt: 1, PID: 42})
	if err != nil || id == 0 {
		t.Fatalf("Start = %d, %v", id, err)
	}
	final := runner.Run{ID: id, Job: "nightly", Kind: "files", Trigger: runner.TriggerSchedule, ScheduledAt: t0, StartedAt: t0, FinishedAt: t0.Add(90 * time.Second),
		Status: runner.StatusPartial, Attempt: 2, Error: "2 files unreadable", PID: 42,
		Summary: runner.Summary{BytesRead: 1000, BytesNew: 200, BytesStored: 120, Files: 10, SnapshotID: "ab12", Extra: map[string]any{"skipped_files": float64(2)}}}
	if err := h.Finish(ctx, final); err != nil {
		t.Fatal(err)
	}
	if err := h.AppendLogs(ctx, id, []runner.LogLine{{Seq: 1, At: t0, Level: "INFO", Message: "start"}, {Seq: 2, At: t0.Add(time.Second), Level: "WARN", Message: "unreadable", Attrs: `path="/x"`}}); err != nil {
		t.Fatal(err)
	}
	if err := h.AddFindings(ctx, id, []runner.Finding{{Severity: runner.SeverityWarning, Code: "files.unreadable", Message: "2 files unreadable", Subject: "/x"}}); err != nil {
		t.Fatal(err)
	}
	got, err := h.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", final) {
		t.Errorf("Get =\n%+v\nwant\n%+v", got, final)
	}
	if _, err := h.Get(ctx, 999); !errors.Is(err, runner.ErrNotFound) {
		t.Errorf("Get(999) = %v", err)
	}
	logs, _ := h.Logs(ctx, id)
	if len(logs) != 2 || logs[1].Message != "unreadable" || logs[1].Attrs != `path="/x"` || !logs[1].At.Equal(t0.Add(time.Second)) {
		t.Errorf("Logs = %+v", logs)
	}
	fs, _ := h.Findings(ctx, id)
	if len(fs) != 1 || fs[0].Code != "files.unreadable" || fs[0].Severity != runner.SeverityWarning {
		t.Errorf("Findings = %+v", fs)
	}

	// A skipped and a missed run, a manual run, and a run of another job.
	day := 24 * time.Hour
	mustRecord(t, h, runner.Run{Job: "nightly", Trigger: runner.TriggerSchedule, ScheduledAt: t0.Add(day), StartedAt: t0.Add(day), FinishedAt: t0.Add(day), Status: runner.StatusSkipped, Error: "skipped: still running"})
	mustRecord(t, h, runner.Run{Job: "nightly", Trigger: runner.TriggerSchedule, ScheduledAt: t0.Add(2 * day), FinishedAt: t0.Add(2*day + time.Hour), Status: runner.StatusMissed, Error: "missed"})
	mustRecord(t, h, runner.Run{Job: "nightly", Trigger: runner.TriggerManual, StartedAt: t0.Add(3 * day), FinishedAt: t0.Add(3 * day), Status: runner.StatusSuccess})
	running := mustRecord(t, h, runner.Run{Job: "logs", Trigger: runner.TriggerSchedule, ScheduledAt: t0.Add(3 * day), StartedAt: t0.Add(3 * day), Status: runner.StatusRunning, PID: 7})

	last, ok, err := h.LastScheduled(ctx, "nightly")
	if err != nil || !ok || !last.Equal(t0.Add(2*day)) {
		t.Errorf("LastScheduled = %v %v %v (manual runs do not count)", last, ok, err)
	}
	if _, ok, _ := h.LastScheduled(ctx, "new-job"); ok {
		t.Error("LastScheduled of a new job reported a run")
	}
	for _, tc := range []struct {
		f    runner.RunFilter
		want []runner.Status
	}{
		{runner.RunFilter{Job: "nightly"}, []runner.Status{runner.StatusSuccess, runner.StatusMissed, runner.StatusSkipped, runner.StatusPartial}},
		{runner.RunFilter{Job: "nightly", Limit: 2}, []runner.Status{runner.StatusSuccess, runner.StatusMissed}},
		{runner.RunFilter{Status: runner.StatusMissed}, []runner.Status{runner.StatusMissed}},
		{runner.RunFilter{Since: t0.Add(2 * day)}, []runner.Status{runner.StatusRunning, runner.StatusSuccess, runner.StatusMissed}},
	} {
		runs, err := h.Runs(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var got []runner.Status
		for _, r := range runs {
			got = append(got, r.Status)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Runs(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	lastRuns, _ := h.LastRuns(ctx)
	if len(lastRuns) != 2 || lastRuns["logs"].ID != running || lastRuns["nightly"].Trigger != runner.TriggerManual {
		t.Errorf("LastRuns = %+v", lastRuns)
	}

	// Crash recovery leaves runs of live processes alone.
	n, err := h.MarkInterrupted(ctx, t0.Add(4*day), func(r runner.Run) bool { return r.PID == 8 })
	if err != nil || n != 1 {
		t.Fatalf("MarkInterrupted = %d, %v", n, err)
	}
	r, _ := h.Get(ctx, running)
	if r.Status != runner.StatusFailed || r.Error != runner.InterruptedError || !r.FinishedAt.Equal(t0.Add(4*day)) {
		t.Errorf("interrupted run = %+v", r)
	}

	// Prune drops old finished runs with their logs and findings.
	pruned, err := h.Prune(ctx, t0.Add(day+time.Minute))
	if err != nil || pruned != 2 {
		t.Errorf("Prune = %d, %v", pruned, err)
	}
	if logs, _ := h.Logs(ctx, id); len(logs) != 0 {
		t.Errorf("logs of a pruned run survive: %+v", logs)
	}
	if fs, _ := h.Findings(ctx, id); len(fs) != 0 {
		t.Errorf("findings of a pruned run survive: %+v", fs)
	}
}

func mustRecord(t *testing.T, h runner.History, r runner.Run) int64 {
	t.Helper()
	id, err := h.Record(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestOpenSetsWALAndMigrates(t *testing.T) {
	h := openTemp(t)
	var mode string
	if err := h.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v", mode, err)
	}
	migs, _ := migrations()
	if v, _ := h.version(context.Background()); v != len(migs) || v < 3 {
		t.Errorf("version %d, %d migrations", v, len(migs))
	}
	var fk int
	if err := h.db.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Errorf("foreign_keys = %d, %v", fk, err)
	}
	// Reopening an up-to-date database changes nothing.
	h.Close()
	h2, err := Open(context.Background(), h.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	h2.Close()
}

// TestMigrateFromPreviousSchema: a database written by the version-1
// schema keeps its runs and gains findings when opened.
func TestMigrateFromPreviousSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL")
	if err != nil {
		t.Fatal(err)
	}
	old := &DB{db: db, path: path}
	migs, _ := migrations()
	if err := old.migrate(ctx, migs, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO runs (job, trigger, scheduled_at, started_at, finished_at, at, status) VALUES ('old', 'schedule', 1, 1, 2, 1, 'success')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	h, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if migs, _ := migrations(); func() int { v, _ := h.version(ctx); return v }() != len(migs) {
		t.Errorf("version after migration is not %d", len(migs))
	}
	r, err := h.Get(ctx, 1)
	if err != nil || r.Job != "old" || r.Status != runner.StatusSuccess {
		t.Errorf("old run = %+v, %v", r, err)
	}
	if err := h.AddFindings(ctx, 1, []runner.Finding{{Severity: runner.SeverityInfo, Code: "c", Message: "m"}}); err != nil {
		t.Errorf("findings after migration: %v", err)
	}
	if last, ok, err := h.LastScheduled(ctx, "old"); err != nil || !ok || last.UnixMilli() != 1 {
		t.Errorf("LastScheduled = %v %v %v", last, ok, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	h := openTemp(t)
	if _, err := h.db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	h.Close()
	_, err := Open(context.Background(), h.path, Options{})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("schema version 99 is newer than this vigil (%d)", func() int { m, _ := migrations(); return len(m) }())) {
		t.Errorf("err = %v", err)
	}
}

// TestConcurrentReadersWhileWriting: the CLI reads (own connections, as a
// separate process would) while the daemon writes; nobody sees "database
// is locked".
func TestConcurrentReadersWhileWriting(t *testing.T) {
	ctx := context.Background()
	w := openTemp(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	stop := make(chan struct{})
	for i := 0; i < 3; i++ {
		rd, err := Open(ctx, w.path, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for reads := 0; ; reads++ {
				select {
				case <-stop:
					if reads == 0 {
						errs <- errors.New("reader never read")
					}
					return
				default:
				}
				if _, err := rd.Runs(ctx, runner.RunFilter{Job: "j", Limit: 50}); err != nil {
					errs <- err
					return
				}
				if _, err := rd.LastRuns(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 300; i++ {
		at := t0.Add(time.Duration(i) * time.Minute)
		id, err := w.Start(ctx, runner.Run{Job: "j", Trigger: runner.TriggerSchedule, ScheduledAt: at, StartedAt: at, Status: runner.StatusRunning})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AppendLogs(ctx, id, []runner.LogLine{{Seq: 1, At: at, Level: "INFO", Message: "x"}}); err != nil {
			t.Fatal(err)
		}
		if err := w.Finish(ctx, runner.Run{ID: id, Job: "j", FinishedAt: at.Add(time.Second), Status: runner.StatusSuccess, Attempt: 1}); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if runs, _ := w.Runs(ctx, runner.RunFilter{Status: runner.StatusSuccess, Limit: 1000}); len(runs) != 300 {
		t.Errorf("%d runs", len(runs))
	}
}

func TestCorruptFileFailsAtOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	if err := os.WriteFile(path, []byte(strings.Repeat("this is not a database ", 400)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), path, Options{})
	if err == nil || !strings.Contains(err.Error(), "open history "+path) || !strings.Contains(err.Error(), "file is not a database") {
		t.Errorf("err = %v", err)
	}
}

// TestUnwritableHistoryJobsStillRun: with a history that cannot be written
// (read-only database), a job still runs and succeeds, and the runner says
// loudly that nothing was recorded.
func TestUnwritableHistoryJobsStillRun(t *testing.T) {
	ctx := context.Background()
	path := openTemp(t).path
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		// Without root, the permission alone makes Open fail, before any job runs.
		if _, err := Open(ctx, path, Options{}); err == nil || !strings.Contains(err.Error(), "readonly database") {
			t.Errorf("Open of a read-only file = %v", err)
		}
	}
	// A read-only handle stands for a database that turned unwritable
	// after start-up (disk full, remounted read-only): every write fails.
	ro, err := Open(ctx, path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var log strings.Builder
	var ran bool
	r, err := runner.New([]runner.Spec{{Name: "j", Job: runner.JobFunc(func(context.Context, runner.RunContext) error { ran = true; return nil })}},
		runner.Options{History: ro, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	run, err := r.RunNow(ctx, "j", runner.TriggerManual)
	if err != nil || run.Status != runner.StatusSuccess || !ran {
		t.Fatalf("run = %+v, %v", run, err)
	}
	if r.HistoryErrors() == 0 || !strings.Contains(log.String(), "HISTORY WRITE FAILED") || !strings.Contains(log.String(), "readonly database") {
		t.Errorf("not loud enough: %d errors, log:\n%s", r.HistoryErrors(), log.String())
	}
}
