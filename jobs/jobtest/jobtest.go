// Package jobtest holds helpers for testing job kinds against a real
// local repository and a real runner. It is imported only by tests.
package jobtest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// Password is the password of repositories made by NewRepo.
const Password = "jobtest"

// KDF is cheap on purpose: tests open many repositories.
var KDF = repo.KDFParams{N: 1024, R: 8, P: 1}

// NewRepo creates a repository in a temp dir and returns it with its
// directory (tests corrupt files there).
func NewRepo(t testing.TB) (*repo.Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	// Small packs so that a handful of files spreads over several packs.
	r, err := repo.Init(context.Background(), st, Password, repo.InitOptions{PackSize: 1 << 20}, repo.Options{KDF: KDF})
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

// Open opens the repository in dir afresh, so a test sees what a later
// process would see.
func Open(t testing.TB, dir string) *repo.Repository {
	t.Helper()
	st, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), st, Password, repo.Options{KDF: KDF})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Job builds a configs.Job with a parsed with: section.
func Job(t testing.TB, name, kind, with string, ret configs.Retention) configs.Job {
	t.Helper()
	w, err := configs.ParseWith(with)
	if err != nil {
		t.Fatal(err)
	}
	return configs.Job{Name: name, Kind: kind, With: w, Retention: ret, Enabled: true}
}

// Result is one finished run with what the history holds about it.
type Result struct {
	Run      runner.Run
	Logs     []runner.LogLine
	Findings []runner.Finding
}

// Messages returns every log line's message and attributes, one per line.
func (r Result) Messages() string {
	var s string
	for _, l := range r.Logs {
		s += l.Level + " " + l.Message + " " + l.Attrs + "\n"
	}
	return s
}

// Run runs job once through a real runner (manual trigger) with r as the
// repository and returns the recorded run.
func Run(t testing.TB, name, kind string, job runner.Job, r *repo.Repository) Result {
	t.Helper()
	h := runner.NewMemHistory()
	opts := runner.Options{History: h}
	if r != nil {
		opts.OpenRepository = func(context.Context) (any, error) { return r, nil }
	}
	rn, err := runner.New([]runner.Spec{{Name: name, Kind: kind, Job: job}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	run, err := rn.RunNow(context.Background(), name, runner.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	logs, err := h.Logs(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := h.Findings(ctx, run.ID)
	if err != nil {
		t.Fatal(err)
	}
	return Result{Run: run, Logs: logs, Findings: fs}
}
