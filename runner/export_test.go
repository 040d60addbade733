package runner

import "time"

// SetSleepHook lets tests observe the scheduler going to sleep.
func SetSleepHook(r *Runner, f func(until time.Time)) { r.onSleep = f }

// Backoff exposes the retry wait computation.
func Backoff(r *Runner, base time.Duration, attempt int) time.Duration {
	return r.backoff(base, attempt)
}
