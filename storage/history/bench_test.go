package history

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
)

const benchRows = 1_000_000

var (
	benchOnce sync.Once
	benchPath string
	benchErr  error
)

// benchDB returns a history with a million runs of 50 jobs over about
// two years (one run every minute), built once per test binary.
func benchDB(b *testing.B) *DB {
	b.Helper()
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vigil-history-bench")
		if err != nil {
			benchErr = err
			return
		}
		benchPath = filepath.Join(dir, "history.db")
		h, err := Open(context.Background(), benchPath, Options{})
		if err != nil {
			benchErr = err
			return
		}
		defer h.Close()
		benchErr = h.inTx(context.Background(), "fill", func(tx *sql.Tx) error {
			st, err := tx.Prepare(insertRun)
			if err != nil {
				return err
			}
			defer st.Close()
			statuses := []runner.Status{runner.StatusSuccess, runner.StatusSuccess, runner.StatusSuccess, runner.StatusSuccess, runner.StatusSuccess,
				runner.StatusSuccess, runner.StatusPartial, runner.StatusFailed, runner.StatusSkipped, runner.StatusMissed}
			start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
			for i := 0; i < benchRows; i++ {
				at := start.Add(time.Duration(i) * time.Minute)
				st2 := statuses[i%len(statuses)]
				if _, err := st.Exec(fmt.Sprintf("job-%02d", i%50), "files", "schedule", at.UnixMilli(), at.UnixMilli(), at.Add(time.Minute).UnixMilli(), at.UnixMilli(),
					string(st2), 1, "", 1<<20, 1<<10, 1<<9, 100, "", "{}", 1); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	h, err := Open(context.Background(), benchPath, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

func BenchmarkHistory1M(b *testing.B) {
	h := benchDB(b)
	ctx := context.Background()
	end := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(benchRows * time.Minute)
	queries := map[string]func() error{
		"RunsLatest50": func() error { _, err := h.Runs(ctx, runner.RunFilter{Limit: 50}); return err },
		"RunsJob50":    func() error { _, err := h.Runs(ctx, runner.RunFilter{Job: "job-07", Limit: 50}); return err },
		"RunsFailed7d": func() error {
			_, err := h.Runs(ctx, runner.RunFilter{Status: runner.StatusFailed, Since: end.Add(-7 * 24 * time.Hour), Limit: 1000})
			return err
		},
		"RunsJobFailedSince": func() error {
			_, err := h.Runs(ctx, runner.RunFilter{Job: "job-07", Status: runner.StatusFailed, Since: end.Add(-30 * 24 * time.Hour), Limit: 100})
			return err
		},
		"LastRuns":      func() error { _, err := h.LastRuns(ctx); return err },
		"LastScheduled": func() error { _, _, err := h.LastScheduled(ctx, "job-07"); return err },
		"Get":           func() error { _, err := h.Get(ctx, 123456); return err },
	}
	for _, name := range []string{"RunsLatest50", "RunsJob50", "RunsFailed7d", "RunsJobFailedSince", "LastRuns", "LastScheduled", "Get"} {
		q := queries[name]
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := q(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchPath != "" {
		os.RemoveAll(filepath.Dir(benchPath))
	}
	os.Exit(code)
}
