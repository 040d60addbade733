package history

import (
	"context"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
)

type stateHistory interface {
	runner.History
	runner.StateStore
	runner.FindingLister
}

// TestStateAndFindingsContract checks job state and the findings query
// on SQLite and on the in-memory fallback.
func TestStateAndFindingsContract(t *testing.T) {
	for name, open := range map[string]func(t *testing.T) stateHistory{
		"sqlite": func(t *testing.T) stateHistory { return openTemp(t) },
		"memory": func(t *testing.T) stateHistory { return runner.NewMemHistory() },
	} {
		t.Run(name, func(t *testing.T) {
			h := open(t)
			stateContract(t, h)
			findingsContract(t, h)
		})
	}
}

func stateContract(t *testing.T, h stateHistory) {
	ctx := context.Background()
	if _, ok, err := h.GetState(ctx, "rot", "file:/var/log/a"); ok || err != nil {
		t.Fatalf("absent key: ok=%v err=%v", ok, err)
	}
	// Keys are paths: % and _ must not act as wildcards.
	for k, v := range map[string]string{"file:/var/log/a": "1", "file:/var/log/a_b%": "2", "file;x": "3", "cursor:/x": "4", "": "empty key"} {
		if err := h.PutState(ctx, "rot", k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.PutState(ctx, "other", "file:/var/log/a", []byte("other job")); err != nil {
		t.Fatal(err)
	}
	if err := h.PutState(ctx, "rot", "file:/var/log/a", []byte("1b")); err != nil {
		t.Fatal(err)
	}
	v, ok, err := h.GetState(ctx, "rot", "file:/var/log/a")
	if err != nil || !ok || string(v) != "1b" {
		t.Fatalf("Get after overwrite = %q %v %v", v, ok, err)
	}
	got, err := h.ListState(ctx, "rot", "file:")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"file:/var/log/a": []byte("1b"), "file:/var/log/a_b%": []byte("2")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List(file:) = %q, want %q", got, want)
	}
	all, _ := h.ListState(ctx, "rot", "")
	if len(all) != 5 {
		t.Errorf("List(all) has %d keys, want 5: %q", len(all), all)
	}
	if err := h.DeleteState(ctx, "rot", "file:/var/log/a"); err != nil {
		t.Fatal(err)
	}
	if err := h.DeleteState(ctx, "rot", "never-there"); err != nil {
		t.Errorf("deleting an absent key: %v", err)
	}
	if _, ok, _ := h.GetState(ctx, "rot", "file:/var/log/a"); ok {
		t.Error("key still there after Delete")
	}
	if v, ok, _ := h.GetState(ctx, "other", "file:/var/log/a"); !ok || string(v) != "other job" {
		t.Errorf("other job's state = %q %v", v, ok)
	}
	// An empty value is a value.
	if err := h.PutState(ctx, "rot", "e", nil); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := h.GetState(ctx, "rot", "e"); !ok || len(v) != 0 {
		t.Errorf("empty value = %q %v", v, ok)
	}
}

func findingsContract(t *testing.T, h stateHistory) {
	ctx := context.Background()
	base := time.Date(2026, 4, 1, 2, 0, 0, 0, time.UTC)
	add := func(job string, at time.Time, fs ...runner.Finding) int64 {
		id, err := h.Start(ctx, runner.Run{Job: job, Trigger: runner.TriggerSchedule, ScheduledAt: at, StartedAt: at, Status: runner.StatusRunning, Attempt: 1})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddFindings(ctx, id, fs); err != nil {
			t.Fatal(err)
		}
		return id
	}
	rich := runner.Finding{Severity: runner.SeverityWarning, Code: "ssh.failed_password", Message: "12 failed passwords", Subject: "203.0.113.9",
		Count: 12, FirstSeen: base.Add(-3 * time.Hour), LastSeen: base.Add(-time.Hour), Examples: []string{"sshd[1]: Failed password for root from 203.0.113.9"},
		Extra: map[string]any{"previous_count": float64(3), "new": false}}
	old := add("logs", base.Add(-48*time.Hour), runner.Finding{Severity: runner.SeverityError, Code: "kernel.io_error", Message: "old"})
	r1 := add("logs", base, rich, runner.Finding{Severity: runner.SeverityInfo, Code: "http.top_4xx", Message: "top paths"})
	r2 := add("backup", base.Add(time.Hour), runner.Finding{Severity: runner.SeverityCritical, Code: "files.unreadable", Message: "x"})

	all, err := h.ListFindings(ctx, runner.FindingFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 4 || all[0].RunID != r2 || all[1].RunID != r1 || all[3].RunID != old {
		t.Fatalf("all findings = %+v", all)
	}
	if all[0].Job != "backup" || !all[0].At.Equal(base.Add(time.Hour)) {
		t.Errorf("record = %+v", all[0])
	}
	if got := all[1].Finding; !reflect.DeepEqual(got, rich) {
		t.Errorf("rich finding round trip:\n got %+v\nwant %+v", got, rich)
	}
	for _, c := range []struct {
		name string
		f    runner.FindingFilter
		want []string
	}{
		{"since", runner.FindingFilter{Since: base.Add(-time.Hour)}, []string{"files.unreadable", "ssh.failed_password", "http.top_4xx"}},
		{"job", runner.FindingFilter{Job: "logs"}, []string{"ssh.failed_password", "http.top_4xx", "kernel.io_error"}},
		{"severity", runner.FindingFilter{MinSeverity: runner.SeverityWarning, Job: "logs"}, []string{"ssh.failed_password", "kernel.io_error"}},
		{"error+", runner.FindingFilter{MinSeverity: runner.SeverityError}, []string{"files.unreadable", "kernel.io_error"}},
		{"code prefix", runner.FindingFilter{Code: "ssh."}, []string{"ssh.failed_password"}},
		{"code exact", runner.FindingFilter{Code: "http.top_4xx"}, []string{"http.top_4xx"}},
		{"limit", runner.FindingFilter{Limit: 1}, []string{"files.unreadable"}},
	} {
		got, err := h.ListFindings(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var codes []string
		for _, g := range got {
			codes = append(codes, g.Code)
		}
		if !reflect.DeepEqual(codes, c.want) {
			t.Errorf("%s: codes = %v, want %v", c.name, codes, c.want)
		}
	}
	// Findings of a single run come back with their details too.
	fs, _ := h.Findings(ctx, r1)
	if len(fs) != 2 || fs[0].Count != 12 || len(fs[0].Examples) != 1 || fs[0].Extra["previous_count"] != float64(3) {
		t.Errorf("Findings(r1) = %+v", fs)
	}
}

// TestStateSurvivesReopen: state is persistent, which is its whole point.
func TestStateSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.db")
	h, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.PutState(ctx, "j", "k", []byte{0, 1, 2, 0xff}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	ro, err := Open(ctx, path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if v, ok, err := ro.GetState(ctx, "j", "k"); err != nil || !ok || !reflect.DeepEqual(v, []byte{0, 1, 2, 0xff}) {
		t.Errorf("after reopen: %v %v %v", v, ok, err)
	}
}
