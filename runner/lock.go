package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// FileLock is an exclusive flock(2) on a file. The kernel drops it when
// the process dies, so a crash never leaves a lock that needs a human.
type FileLock struct {
	f *os.File
}

// LockFile takes an exclusive lock on path without waiting, creating the
// file if needed, and writes the owner's pid into it. If another process
// holds it the error wraps ErrLocked and names that process.
func LockFile(path string) (*FileLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := flockOwned(f, path); err != nil {
		f.Close()
		return nil, err
	}
	return &FileLock{f: f}, nil
}

// flockOwned takes an exclusive flock on the open file without waiting
// and writes this process's pid into it.
func flockOwned(f *os.File, path string) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			owner := make([]byte, 32)
			n, _ := f.ReadAt(owner, 0)
			return fmt.Errorf("lock %s: %w (pid %s)", path, ErrLocked, strings.TrimSpace(string(owner[:n])))
		}
		return fmt.Errorf("lock %s: %w", path, err)
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if _, err := f.WriteAt(pid, 0); err == nil {
		_ = f.Truncate(int64(len(pid)))
	}
	return nil
}

// Unlock releases the lock. The file stays: removing it would race with
// a process that has just opened it.
func (l *FileLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor drops the flock
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock: %w", err)
	}
	return nil
}

// DirLocker is a JobLocker keeping one lock file per job in Dir. The zero
// value with Dir set opens the file for every lock; NewDirLocker keeps the
// files open between runs, which the daemon needs: opening and closing
// 1,000 files a second cost it more than everything else a start does.
type DirLocker struct {
	Dir  string
	held *heldFiles
}

// heldFiles are the lock files a DirLocker keeps open, by job, while
// they are not locked.
type heldFiles struct {
	mu    sync.Mutex
	files map[string]*os.File
}

// NewDirLocker returns a DirLocker that keeps its lock files open (one
// descriptor per job that has run). Close releases them.
func NewDirLocker(dir string) DirLocker {
	return DirLocker{Dir: dir, held: &heldFiles{files: map[string]*os.File{}}}
}

// TryLock implements JobLocker.
func (d DirLocker) TryLock(job string) (func(), error) {
	path := filepath.Join(d.Dir, "job-"+job+".lock")
	if d.held == nil {
		if err := os.MkdirAll(d.Dir, 0o750); err != nil {
			return nil, fmt.Errorf("job lock: %w", err)
		}
		l, err := LockFile(path)
		if err != nil {
			return nil, err
		}
		return func() { _ = l.Unlock() }, nil
	}
	f, err := d.held.take(d.Dir, path, job)
	if err != nil {
		return nil, err
	}
	if err := flockOwned(f, path); err != nil {
		d.held.put(job, f)
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		d.held.put(job, f)
	}, nil
}

// take returns the job's open lock file, opening it if there is none or
// if the path no longer names the file held open (removed or replaced):
// a lock on an unlinked file would exclude nobody.
func (h *heldFiles) take(dir, path, job string) (*os.File, error) {
	h.mu.Lock()
	f := h.files[job]
	delete(h.files, job)
	h.mu.Unlock()
	if f != nil {
		if same(f, path) {
			return f, nil
		}
		f.Close()
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("job lock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

func same(f *os.File, path string) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	pi, err := os.Stat(path)
	return err == nil && os.SameFile(fi, pi)
}

func (h *heldFiles) put(job string, f *os.File) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.files != nil && h.files[job] == nil {
		h.files[job] = f
		return
	}
	f.Close()
}

// Prepare opens (creating if needed) the lock files of jobs ahead of
// their first runs: creating a file costs about a millisecond on a busy
// disk, which a thousand jobs would otherwise pay in their first start.
// Only a DirLocker from NewDirLocker keeps them; others do nothing.
func (d DirLocker) Prepare(jobs []string) error {
	if d.held == nil {
		return nil
	}
	for _, job := range jobs {
		f, err := d.held.take(d.Dir, filepath.Join(d.Dir, "job-"+job+".lock"), job)
		if err != nil {
			return fmt.Errorf("prepare job locks: %w", err)
		}
		d.held.put(job, f)
	}
	return nil
}

// Close closes the lock files kept open between runs; locks held by
// running jobs stay until they are released.
func (d DirLocker) Close() error {
	if d.held == nil {
		return nil
	}
	d.held.mu.Lock()
	files := d.held.files
	d.held.files = nil
	d.held.mu.Unlock()
	var errs []error
	for _, f := range files {
		errs = append(errs, f.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close job locks: %w", err)
	}
	return nil
}
