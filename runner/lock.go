package runner

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		owner, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w (pid %s)", path, ErrLocked, strings.TrimSpace(string(owner)))
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &FileLock{f: f}, nil
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

// DirLocker is a JobLocker keeping one lock file per job in Dir.
type DirLocker struct {
	Dir string
}

// TryLock implements JobLocker.
func (d DirLocker) TryLock(job string) (func(), error) {
	if err := os.MkdirAll(d.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("job lock: %w", err)
	}
	l, err := LockFile(filepath.Join(d.Dir, "job-"+job+".lock"))
	if err != nil {
		return nil, err
	}
	return func() { _ = l.Unlock() }, nil
}
