package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
)

// TestStartBatchIDs: every id StartBatch returns is the row of the run at
// the same position, across the multi-row INSERT chunks.
func TestStartBatchIDs(t *testing.T) {
	h := openTemp(t)
	ctx := context.Background()
	if _, err := h.Start(ctx, runner.Run{Job: "before", Trigger: runner.TriggerManual, Status: runner.StatusRunning, StartedAt: t0}); err != nil {
		t.Fatal(err)
	}
	runs := make([]runner.Run, 2*batchRows+7)
	for i := range runs {
		runs[i] = runner.Run{Job: fmt.Sprintf("job-%04d", i), Kind: "command", Trigger: runner.TriggerSchedule,
			ScheduledAt: t0, StartedAt: t0, Status: runner.StatusRunning, Attempt: 1}
		if i%10 == 3 {
			runs[i].Status, runs[i].Error, runs[i].FinishedAt = runner.StatusSkipped, "skipped: still running", t0
		}
	}
	ids, err := h.StartBatch(ctx, runs)
	if err != nil || len(ids) != len(runs) {
		t.Fatalf("StartBatch: %d ids, %v", len(ids), err)
	}
	for i, id := range ids {
		got, err := h.Get(ctx, id)
		if err != nil || got.Job != runs[i].Job || got.Status != runs[i].Status || got.Error != runs[i].Error {
			t.Fatalf("run %d (id %d) = %+v, %v; want job %s %s", i, id, got, err, runs[i].Job, runs[i].Status)
		}
	}
}

// TestGroupedWritesFailAlone: writes queued while another commits share
// one transaction; one that fails is undone alone and the others commit.
func TestGroupedWritesFailAlone(t *testing.T) {
	h := openTemp(t)
	ctx := context.Background()
	id, err := h.Start(ctx, runner.Run{Job: "a", Trigger: runner.TriggerManual, Status: runner.StatusRunning, StartedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	// Hold the writer inside a transaction until the others are queued.
	holding, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- h.w.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			close(holding)
			<-release
			return nil
		})
	}()
	<-holding
	errs := make(chan error, 3)
	go func() {
		_, err := h.Record(ctx, runner.Run{Job: "b", Trigger: runner.TriggerManual, Status: runner.StatusSkipped, StartedAt: t0, FinishedAt: t0})
		errs <- err
	}()
	failing := errors.New("disk on fire")
	go func() {
		// Inserts a log line, then fails: the line must not stay.
		errs <- h.w.do(ctx, func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO run_logs (run_id, seq, at, level, message, attrs) VALUES (?, 1, 0, 'INFO', 'x', '')`, id); err != nil {
				return err
			}
			return failing
		})
	}()
	go func() {
		errs <- h.Finish(ctx, runner.Run{ID: id, Job: "a", Trigger: runner.TriggerManual, Status: runner.StatusSuccess, StartedAt: t0, FinishedAt: t0.Add(time.Second)})
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(h.w.ops) < 3 {
		if time.Now().After(deadline) {
			close(release)
			t.Fatalf("only %d writes queued", len(h.w.ops))
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	var failed int
	for range 3 {
		if err := <-errs; errors.Is(err, failing) {
			failed++
		} else if err != nil {
			t.Errorf("write in the group failed: %v", err)
		}
	}
	if failed != 1 {
		t.Errorf("%d writes reported the failure, want 1", failed)
	}
	if logs, err := h.Logs(ctx, id); err != nil || len(logs) != 0 {
		t.Errorf("the failed write's log line stayed: %+v, %v", logs, err)
	}
	if r, err := h.Get(ctx, id); err != nil || r.Status != runner.StatusSuccess {
		t.Errorf("finished run = %+v, %v", r, err)
	}
	if rs, err := h.Runs(ctx, runner.RunFilter{Job: "b"}); err != nil || len(rs) != 1 {
		t.Errorf("recorded run: %+v, %v", rs, err)
	}
	h.Close()
	if _, err := h.Start(ctx, runner.Run{Job: "late"}); !errors.Is(err, errClosed) {
		t.Errorf("write after Close: %v", err)
	}
}
