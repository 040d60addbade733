// Package runnertest holds test doubles for the runner: a fake clock that
// tests advance by hand.
package runnertest

import (
	"sort"
	"sync"
	"time"

	"github.com/vigilops/vigil/runner"
)

// FakeClock is a runner.Clock whose time moves only when Advance or Set is
// called. Timers that come due fire in deadline order.
type FakeClock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*fakeTimer
	changed chan struct{}
}

// NewFakeClock returns a clock stopped at now.
func NewFakeClock(now time.Time) *FakeClock {
	return &FakeClock{now: now, changed: make(chan struct{})}
}

func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

type fakeTimer struct {
	c        *FakeClock
	deadline time.Time
	ch       chan time.Time
	fn       func()
	done     bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	t.c.remove(t)
	return true
}

func (c *FakeClock) remove(t *fakeTimer) {
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			break
		}
	}
	c.signal()
}

func (c *FakeClock) signal() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *FakeClock) add(d time.Duration, fn func()) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, deadline: c.now.Add(d), ch: make(chan time.Time, 1), fn: fn}
	if d <= 0 { // like the real clock: due now, fires now
		t.done = true
		if fn != nil {
			go fn()
		} else {
			t.ch <- c.now
		}
		return t
	}
	c.timers = append(c.timers, t)
	c.signal()
	return t
}

func (c *FakeClock) NewTimer(d time.Duration) runner.Timer { return c.add(d, nil) }

func (c *FakeClock) AfterFunc(d time.Duration, f func()) runner.Timer { return c.add(d, f) }

// Advance moves time forward by d, firing due timers in order; time stops
// at each deadline so code woken by a timer sees the right Now.
func (c *FakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves time to t (never backwards), firing due timers in order.
func (c *FakeClock) Set(t time.Time) {
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].deadline.Before(c.timers[j].deadline) })
		if len(c.timers) == 0 || c.timers[0].deadline.After(t) {
			if t.After(c.now) {
				c.now = t
			}
			c.mu.Unlock()
			return
		}
		next := c.timers[0]
		c.timers = c.timers[1:]
		next.done = true
		if next.deadline.After(c.now) {
			c.now = next.deadline
		}
		now := c.now
		c.signal()
		c.mu.Unlock()
		if next.fn != nil {
			go next.fn()
		} else {
			next.ch <- now
		}
	}
}

// Timers returns how many timers are pending.
func (c *FakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitForTimers blocks until at least n timers are pending or the real
// timeout passes; it reports whether they are. Tests call it before
// Advance so that the code under test has armed the timer it sleeps on.
func (c *FakeClock) WaitForTimers(n int, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		ok, ch := len(c.timers) >= n, c.changed
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// WaitForDeadline blocks until a timer due at exactly at is pending or
// the real timeout passes; it reports whether one is.
func (c *FakeClock) WaitForDeadline(at time.Time, timeout time.Duration) bool {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		found, ch := false, c.changed
		for _, t := range c.timers {
			found = found || t.deadline.Equal(at)
		}
		c.mu.Unlock()
		if found {
			return true
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		}
	}
}

// NextDeadline returns the earliest pending timer deadline.
func (c *FakeClock) NextDeadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.timers) == 0 {
		return time.Time{}, false
	}
	min := c.timers[0].deadline
	for _, t := range c.timers[1:] {
		if t.deadline.Before(min) {
			min = t.deadline
		}
	}
	return min, true
}
