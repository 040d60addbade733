package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vigilops/vigil/storage/blob"
)

// Lock timing. A lock is refreshed every LockRefresh; one whose heartbeat is
// older than LockStale is ignored and removed by the next locker, so a
// crashed or killed process never blocks tomorrow's run. On the same host a
// lock whose process is gone is stale at once.
var (
	LockRefresh = 5 * time.Minute
	LockStale   = 30 * time.Minute
)

// LockInfo is the content of a lock object ("locks/<id>").
type LockInfo struct {
	ID        ID        `json:"-"`
	Exclusive bool      `json:"exclusive"`
	Operation string    `json:"operation"`
	Created   time.Time `json:"created"`
	Heartbeat time.Time `json:"heartbeat"`
	Hostname  string    `json:"hostname"`
	Username  string    `json:"username,omitempty"`
	PID       int       `json:"pid"`

	// Stale is computed when listing, not stored.
	Stale       bool   `json:"-"`
	StaleReason string `json:"-"`
}

// LockedError reports who holds a conflicting lock.
type LockedError struct {
	Holder LockInfo
}

func (e *LockedError) Error() string {
	h := e.Holder
	kind := "shared"
	if h.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("repository is locked: %s lock by %s (pid %d on %s, %s) since %s, last heartbeat %s",
		kind, h.Operation, h.PID, h.Hostname, h.Username, h.Created.Format(time.RFC3339), h.Heartbeat.Format(time.RFC3339))
}

// ErrLocked is matched (errors.Is) by *LockedError.
var ErrLocked = errors.New("repository is locked")

// Is makes errors.Is(err, ErrLocked) work.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Lock is a held repository lock, refreshed in the background until Unlock.
type Lock struct {
	r      *Repository
	info   LockInfo
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	lost   error
	unlock sync.Once
}

var hostname = func() string { h, _ := os.Hostname(); return h }

// processAlive reports whether pid runs on this host (EPERM means it does,
// under another user).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Locks lists the repository's locks, marking stale ones.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	var out []LockInfo
	host := hostname()
	now := r.now()
	err := r.store.List(ctx, "locks/", func(i blob.Info) error {
		id, err := ParseID(strings.TrimPrefix(i.Name, "locks/"))
		if err != nil {
			return nil
		}
		var li LockInfo
		if err := r.loadJSON(ctx, i.Name, &li); err != nil {
			if errors.Is(err, blob.ErrNotFound) {
				return nil // released while listing
			}
			// Unreadable: judge by the object's age alone.
			li = LockInfo{Operation: "unreadable lock", Exclusive: true, Heartbeat: i.ModTime, Created: i.ModTime}
		}
		li.ID = id
		switch {
		case now.Sub(li.Heartbeat) > LockStale:
			li.Stale, li.StaleReason = true, fmt.Sprintf("no heartbeat for %s", now.Sub(li.Heartbeat).Round(time.Second))
		case li.Hostname == host && li.PID != 0 && !processAlive(li.PID):
			li.Stale, li.StaleReason = true, fmt.Sprintf("process %d is gone", li.PID)
		}
		out = append(out, li)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

func conflicts(a, b LockInfo) bool { return a.Exclusive || b.Exclusive }

// Lock takes a shared or exclusive lock. With wait > 0 it retries until the
// conflicting lock goes away or wait has passed.
func (r *Repository) Lock(ctx context.Context, exclusive bool, op string, wait time.Duration) (*Lock, error) {
	deadline := r.now().Add(wait)
	for {
		l, err := r.tryLock(ctx, exclusive, op)
		if err == nil {
			return l, nil
		}
		var le *LockedError
		if !errors.As(err, &le) || !r.now().Before(deadline) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second + time.Duration(NewRandomID()[0])*4*time.Millisecond):
		}
	}
}

func (r *Repository) tryLock(ctx context.Context, exclusive bool, op string) (*Lock, error) {
	if err := r.checkLocks(ctx, exclusive, ID{}); err != nil {
		return nil, err
	}
	username := ""
	if u, err := user.Current(); err == nil {
		username = u.Username
	}
	now := r.now().UTC()
	l := &Lock{r: r, stop: make(chan struct{}), done: make(chan struct{}), info: LockInfo{
		ID: NewRandomID(), Exclusive: exclusive, Operation: op, Created: now, Heartbeat: now,
		Hostname: hostname(), Username: username, PID: os.Getpid(),
	}}
	if err := r.saveJSON(ctx, l.name(), l.info); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	// Two lockers may have written at the same moment: look again and back
	// off if anyone conflicts. Both may back off; the retry loop settles it.
	if err := r.checkLocks(ctx, exclusive, l.info.ID); err != nil {
		_ = r.store.Delete(context.WithoutCancel(ctx), l.name())
		return nil, err
	}
	go l.refresh()
	return l, nil
}

// checkLocks returns a *LockedError for a live conflicting lock and removes
// stale locks on the way.
func (r *Repository) checkLocks(ctx context.Context, exclusive bool, self ID) error {
	locks, err := r.Locks(ctx)
	if err != nil {
		return err
	}
	for _, li := range locks {
		if li.ID == self {
			continue
		}
		if li.Stale {
			r.log.Info("removing stale lock", "lock", li.ID.Short(), "reason", li.StaleReason, "host", li.Hostname, "pid", li.PID)
			_ = r.store.Delete(ctx, "locks/"+li.ID.String())
			continue
		}
		if conflicts(li, LockInfo{Exclusive: exclusive}) {
			return &LockedError{Holder: li}
		}
	}
	return nil
}

// RemoveStaleLocks deletes stale locks (and, with all, every lock) and
// returns how many were removed.
func (r *Repository) RemoveStaleLocks(ctx context.Context, all bool) (int, error) {
	locks, err := r.Locks(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, li := range locks {
		if li.Stale || all {
			if err := r.store.Delete(ctx, "locks/"+li.ID.String()); err != nil {
				return n, fmt.Errorf("remove lock: %w", err)
			}
			n++
		}
	}
	return n, nil
}

func (l *Lock) name() string { return "locks/" + l.info.ID.String() }

func (l *Lock) refresh() {
	defer close(l.done)
	t := time.NewTicker(LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.info.Heartbeat = l.r.now().UTC()
			ctx, cancel := context.WithTimeout(context.Background(), LockRefresh)
			err := l.r.saveJSON(ctx, l.name(), l.info)
			cancel()
			if err != nil {
				l.r.log.Warn("lock refresh failed", "err", err)
				l.mu.Lock()
				l.lost = err
				l.mu.Unlock()
			}
		}
	}
}

// Info returns the lock's record.
func (l *Lock) Info() LockInfo { return l.info }

// Unlock stops the heartbeat and removes the lock object.
func (l *Lock) Unlock() error {
	var err error
	l.unlock.Do(func() {
		close(l.stop)
		<-l.done
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err = l.r.store.Delete(ctx, l.name())
	})
	return err
}
