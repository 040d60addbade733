package runner_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilops/vigil/runner"
)

func TestLockFileIsExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db.lock")
	l, err := runner.LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = runner.LockFile(path)
	if !errors.Is(err, runner.ErrLocked) || !strings.Contains(err.Error(), "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("second lock: %v", err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := runner.LockFile(path)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

// TestJobLockAcrossRunners: a `vigil run` and the daemon (two runners
// sharing a lock directory) never run the same job at once.
func TestJobLockAcrossRunners(t *testing.T) {
	locker := runner.DirLocker{Dir: filepath.Join(t.TempDir(), "locks")}
	g := newGate()
	daemon := newHarness(t, []runner.Spec{{Name: "j", Job: g}}, runner.Options{Locker: locker})
	manual := newHarness(t, []runner.Spec{{Name: "j", Job: g}}, runner.Options{Locker: locker})
	done := make(chan runner.Run)
	go func() {
		r, _ := daemon.r.RunNow(context.Background(), "j", runner.TriggerSchedule)
		done <- r
	}()
	g.waitStarted(t)
	r, err := manual.r.RunNow(context.Background(), "j", runner.TriggerManual)
	if err != nil || r.Status != runner.StatusSkipped || r.Error != "skipped: the job is running in another vigil process" {
		t.Errorf("manual run = %+v, %v", r, err)
	}
	close(g.release)
	if r := <-done; r.Status != runner.StatusSuccess {
		t.Errorf("daemon run = %+v", r)
	}
	// Released: the other runner may run it now.
	g2 := newGate()
	close(g2.release)
	again := newHarness(t, []runner.Spec{{Name: "j", Job: g2}}, runner.Options{Locker: locker})
	if r, _ := again.r.RunNow(context.Background(), "j", runner.TriggerManual); r.Status != runner.StatusSuccess {
		t.Errorf("after release: %+v", r)
	}
}
