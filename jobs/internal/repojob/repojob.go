// Package repojob holds what the repository job kinds (files, prune,
// check) share: getting the repository from the run context, waiting out
// a conflicting lock, and applying a retention policy with its reasons in
// the run log. It is internal so the kinds keep not importing each other.
package repojob

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// Repository returns the run's repository as its concrete type.
func Repository(ctx context.Context, rc runner.RunContext) (*repo.Repository, error) {
	v, err := rc.Repository(ctx)
	if err != nil {
		return nil, err
	}
	r, ok := v.(*repo.Repository)
	if !ok {
		return nil, fmt.Errorf("repository: got %T, want *repo.Repository", v)
	}
	return r, nil
}

// Policy converts a job's retention config to a repository policy.
func Policy(r configs.Retention) repo.Policy {
	return repo.Policy{Last: r.KeepLast, Daily: r.KeepDaily, Weekly: r.KeepWeekly, Monthly: r.KeepMonthly, Yearly: r.KeepYearly}
}

// lockPoll is how often a lock-holding operation is retried while waiting.
var lockPoll = 5 * time.Second

// WithLockWait calls op until it does not fail with repo.ErrLocked or wait
// has passed. Operations that take their lock without waiting (prune,
// check) get the same patience as a backup this way: a weekly prune that
// meets a nightly backup should wait, not fail.
func WithLockWait(ctx context.Context, log *slog.Logger, wait time.Duration, op func() error) error {
	deadline := time.Now().Add(wait)
	logged := false
	for {
		err := op()
		if err == nil || !errors.Is(err, repo.ErrLocked) || !time.Now().Before(deadline) {
			return err
		}
		if !logged {
			log.Info("repository is locked; waiting", "err", err, "up_to", wait)
			logged = true
		}
		t := time.NewTimer(min(lockPoll, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// ForgetResult counts what Forget did.
type ForgetResult struct {
	Kept    int
	Removed []string // snapshot IDs
}

// Forget applies p to each group of snapshots, logs every decision with
// its reasons, and removes the snapshots no rule keeps under an exclusive
// lock (nothing may be restoring a snapshot while it is deleted). Data is
// left for prune.
func Forget(ctx context.Context, r *repo.Repository, log *slog.Logger, groups map[string][]*repo.Snapshot, p repo.Policy, loc *time.Location, lockWait time.Duration) (ForgetResult, error) {
	var res ForgetResult
	if p.Empty() {
		// repo refuses an empty policy too; saying so here keeps the log clear.
		return res, errors.New("forget: retention has no keep rule")
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var remove []*repo.Snapshot
	for _, k := range keys {
		for _, d := range repo.ApplyPolicy(groups[k], p, loc) {
			when := d.Time.In(loc).Format("2006-01-02 15:04")
			if d.Keep {
				res.Kept++
				log.Info("retention: keep", "group", k, "snapshot", d.Snapshot.ID.Short(), "time", when, "reasons", strings.Join(d.Reasons, ", "))
				continue
			}
			log.Info("retention: remove", "group", k, "snapshot", d.Snapshot.ID.Short(), "time", when, "reasons", "no keep rule matches")
			remove = append(remove, d.Snapshot)
		}
	}
	if len(remove) == 0 {
		return res, nil
	}
	lock, err := r.Lock(ctx, true, "forget", lockWait)
	if err != nil {
		return res, fmt.Errorf("forget: %w", err)
	}
	defer lock.Unlock()
	for _, s := range remove {
		if err := r.RemoveSnapshot(ctx, s.ID); err != nil {
			return res, fmt.Errorf("forget: %w", err)
		}
		res.Removed = append(res.Removed, s.ID.String())
	}
	return res, nil
}
