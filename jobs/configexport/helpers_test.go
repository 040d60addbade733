package configexport

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

func newRepo(t *testing.T) *repo.Repository { return newRepoB(t) }

func newRepoB(t testing.TB) *repo.Repository {
	t.Helper()
	st, err := local.Open(filepath.Join(t.TempDir(), "repo"), true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), st, "pw", repo.InitOptions{PackSize: 1 << 20},
		repo.Options{KDF: repo.KDFParams{N: 1 << 10, R: 8, P: 1}, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func build(t testing.TB, with string) *Job {
	t.Helper()
	w, err := configs.ParseWith(with)
	if err != nil {
		t.Fatal(err)
	}
	j, err := Load(configs.Job{Name: "configs", Kind: Kind, With: w})
	if err != nil {
		t.Fatalf("build job: %v", err)
	}
	return j
}

// harness runs a job through a real runner against one repository and
// one history, night after night.
type harness struct {
	t    testing.TB
	r    *repo.Repository
	hist *runner.MemHistory
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, r: newRepo(t), hist: runner.NewMemHistory()}
}

// outcome is everything a run left behind that an admin could read.
type outcome struct {
	run      runner.Run
	findings []runner.Finding
	logs     []runner.LogLine
}

// text is everything shown: error, summary JSON, findings and log lines.
func (o outcome) text(t *testing.T) string {
	b, err := json.Marshal(o.run)
	if err != nil {
		t.Fatal(err)
	}
	parts := []string{string(b)}
	for _, f := range o.findings {
		parts = append(parts, f.Message, f.Subject)
	}
	for _, l := range o.logs {
		parts = append(parts, l.Message, l.Attrs)
	}
	return strings.Join(parts, "\n")
}

func (o outcome) finding(code, subject string) *runner.Finding {
	for _, f := range o.findings {
		if f.Code == code && f.Subject == subject {
			return &f
		}
	}
	return nil
}

func (o outcome) changes(t *testing.T) []Change {
	raw, ok := o.run.Summary.Extra["changes"]
	if !ok {
		return nil
	}
	b, _ := json.Marshal(raw)
	var cs []Change
	if err := json.Unmarshal(b, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func (h *harness) run(j *Job) outcome {
	h.t.Helper()
	rn, err := runner.New([]runner.Spec{{Name: "configs", Kind: Kind, Job: j, Timeout: 2 * time.Minute}}, runner.Options{
		History:        h.hist,
		OpenRepository: func(context.Context) (any, error) { return h.r, nil },
	})
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := rn.RunNow(context.Background(), "configs", runner.TriggerManual)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx := context.Background()
	fs, _ := h.hist.Findings(ctx, res.ID)
	logs, _ := h.hist.Logs(ctx, res.ID)
	return outcome{run: res, findings: fs, logs: logs}
}

// stored returns what the repository holds for target in the job's
// latest snapshot.
func (h *harness) stored(target string) string {
	h.t.Helper()
	ctx := context.Background()
	idx, err := h.r.LoadIndex(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	defer idx.Close()
	hist, err := OpenHistory(ctx, h.r, idx, "configs")
	if err != nil {
		h.t.Fatal(err)
	}
	v, err := hist.Latest(ctx, target)
	if err != nil || v == nil {
		h.t.Fatalf("latest %s: %v %v", target, v, err)
	}
	b, err := hist.Read(ctx, v)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func parseWith(s string) (configs.With, error) { return configs.ParseWith(s) }

func configJob(w configs.With) configs.Job { return configs.Job{Name: "configs", Kind: Kind, With: w} }
