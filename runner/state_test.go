package runner_test

import (
	"context"
	"errors"
	"testing"

	"github.com/vigilops/vigil/runner"
)

// TestStateAcrossRunsAndDryRun: state written by one run is read by the
// next; a dry run sees it, sees its own writes, and keeps none of them,
// records no run and opens no repository.
func TestStateAcrossRunsAndDryRun(t *testing.T) {
	ctx := context.Background()
	hist := runner.NewMemHistory()
	var seen []string
	var dry []bool
	job := runner.JobFunc(func(ctx context.Context, rc runner.RunContext) error {
		st := runner.StateOf(rc)
		v, _, err := st.Get(ctx, "n")
		if err != nil {
			return err
		}
		seen = append(seen, string(v))
		dry = append(dry, runner.IsDryRun(rc))
		if err := st.Put(ctx, "n", append(v, 'x')); err != nil {
			return err
		}
		if got, _, _ := st.Get(ctx, "n"); string(got) != string(v)+"x" {
			t.Errorf("a run does not see its own write: %q", got)
		}
		if runner.IsDryRun(rc) {
			if _, err := rc.Repository(ctx); !errors.Is(err, runner.ErrDryRun) {
				t.Errorf("Repository in a dry run = %v", err)
			}
			rc.AddFinding(runner.Finding{Code: "dry.plan"})
		}
		return nil
	})
	r, err := runner.New([]runner.Spec{{Name: "j", Job: job}, {Name: "other", Job: job}}, runner.Options{History: hist,
		OpenRepository: func(context.Context) (any, error) { t.Error("repository opened"); return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if run, err := r.RunNow(ctx, "j", runner.TriggerManual); err != nil || run.Status != runner.StatusSuccess {
			t.Fatalf("run = %+v %v", run, err)
		}
	}
	res, err := r.DryRun(ctx, "j", nil)
	if err != nil || res.Err != nil || len(res.Findings) != 1 {
		t.Fatalf("dry run = %+v %v", res, err)
	}
	if _, err := r.DryRun(ctx, "nope", nil); !errors.Is(err, runner.ErrUnknownJob) {
		t.Errorf("dry run of an unknown job = %v", err)
	}
	if run, _ := r.RunNow(ctx, "j", runner.TriggerManual); run.Status != runner.StatusSuccess {
		t.Fatal(run)
	}
	// Another job has its own namespace.
	if _, err := r.RunNow(ctx, "other", runner.TriggerManual); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "x", "xx", "xx", ""}
	if len(seen) != len(want) {
		t.Fatalf("seen = %q", seen)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("run %d saw %q, want %q (all: %q)", i, seen[i], want[i], seen)
		}
	}
	if dry[0] || !dry[2] || dry[3] {
		t.Errorf("dry flags = %v", dry)
	}
	runs, _ := hist.Runs(ctx, runner.RunFilter{})
	if len(runs) != 4 {
		t.Errorf("%d runs recorded, want 4 (the dry run is not recorded)", len(runs))
	}
	if v, _, _ := hist.GetState(ctx, "j", "n"); string(v) != "xxx" {
		t.Errorf("stored state = %q", v)
	}
}

// TestStateOfAFake: a RunContext fake written without State still works.
func TestStateOfAFake(t *testing.T) {
	st := runner.StateOf(fakeRC{})
	ctx := context.Background()
	if err := st.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := st.Get(ctx, "k"); !ok || string(v) != "v" {
		t.Errorf("Get = %q %v", v, ok)
	}
	if runner.IsDryRun(fakeRC{}) {
		t.Error("fake is a dry run")
	}
}

type fakeRC struct{ runner.RunContext }

func (fakeRC) JobName() string { return "fake" }
