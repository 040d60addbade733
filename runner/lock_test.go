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
// sharing a lock directory) never run the same job at once, whether the
// lock files are opened per lock or kept open between runs.
func TestJobLockAcrossRunners(t *testing.T) {
	for _, tc := range []struct {
		name   string
		locker func(dir string) runner.DirLocker
	}{
		{"opened per lock", func(dir string) runner.DirLocker { return runner.DirLocker{Dir: dir} }},
		{"kept open", runner.NewDirLocker},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "locks")
			// One locker per runner, as in two processes.
			l1, l2, l3 := tc.locker(dir), tc.locker(dir), tc.locker(dir)
			t.Cleanup(func() { l1.Close(); l2.Close(); l3.Close() })
			g := newGate()
			daemon := newHarness(t, []runner.Spec{{Name: "j", Job: g}}, runner.Options{Locker: l1})
			manual := newHarness(t, []runner.Spec{{Name: "j", Job: g}}, runner.Options{Locker: l2})
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
			// Released: the other runners may run it now, and the first
			// one again after them.
			g2 := newGate()
			close(g2.release)
			again := newHarness(t, []runner.Spec{{Name: "j", Job: g2}}, runner.Options{Locker: l3})
			if r, _ := again.r.RunNow(context.Background(), "j", runner.TriggerManual); r.Status != runner.StatusSuccess {
				t.Errorf("after release: %+v", r)
			}
			if r, _ := daemon.r.RunNow(context.Background(), "j", runner.TriggerManual); r.Status != runner.StatusSuccess {
				t.Errorf("first runner after release: %+v", r)
			}
		})
	}
}

// TestKeptOpenLockNoticesReplacedFile: a lock file removed while the
// daemon keeps it open must not leave the daemon locking the old, unlinked
// file while another process locks the new one.
func TestKeptOpenLockNoticesReplacedFile(t *testing.T) {
	dir := t.TempDir()
	held := runner.NewDirLocker(dir)
	defer held.Close()
	unlock, err := held.TryLock("j")
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	path := filepath.Join(dir, "job-j.lock")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	other, err := runner.LockFile(path) // another process, on the new file
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.TryLock("j"); !errors.Is(err, runner.ErrLocked) {
		t.Errorf("lock with the file replaced: %v, want ErrLocked", err)
	}
	other.Unlock()
	unlock, err = held.TryLock("j")
	if err != nil {
		t.Fatalf("lock after the other released: %v", err)
	}
	defer unlock()
	if pid, _ := os.ReadFile(path); string(pid) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("lock file holds %q", pid)
	}
}
