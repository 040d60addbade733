package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilops/vigil/jobs"
)

// writeConfig writes a runner config whose history lives in dir.
func writeConfig(t *testing.T, dir, jobs string) string {
	t.Helper()
	path := filepath.Join(dir, "vigil.yaml")
	src := fmt.Sprintf("history:\n  path: %s\ntimezone: UTC\njobs:\n%s", filepath.Join(dir, "history.db"), jobs)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunnerCLIConfigCheck(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	bad := writeConfig(t, dir, "  - name: a\n    kind: command\n    schedule: \"61 * * * *\"\n    retrys: 2\n    with: {argv: [/bin/true]}\n  - name: a\n    kind: tape\n")
	r := e.run("config", "check", bad)
	want := bad + `:7: jobs[0].schedule: invalid schedule "61 * * * *": end of range (61) above maximum (59): 61
` + bad + `:8: jobs[0].retrys: unknown field (did you mean "retries"?)
` + bad + `:10: jobs[1].name: duplicate job name "a" (first defined at line 5)
` + bad + `:11: jobs[1].kind: unknown kind "tape" (known: ` + strings.Join(jobs.Default().Kinds(), ", ") + `)
`
	if r.code != exitUsage || r.stdout != want {
		t.Errorf("exit %d\nstdout:\n%s\nwant:\n%s", r.code, r.stdout, want)
	}
	r = e.run("config", "check", "--json", bad)
	var out struct {
		Valid  bool
		Errors []struct {
			Line int
			Path string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out.Valid || len(out.Errors) != 4 || out.Errors[0].Line != 7 || out.Errors[0].Path != "jobs[0].schedule" {
		t.Errorf("json: %s (%v)", r.stdout, err)
	}

	good := writeConfig(t, dir, "  - name: nightly\n    kind: command\n    schedule: \"30 2 * * *\"\n    with: {argv: [/bin/true]}\n  - name: adhoc\n    kind: command\n    with: {argv: [/bin/true]}\n")
	r = e.must("config", "check", good)
	if !strings.Contains(r.stdout, "ok, 2 job(s)") || strings.Count(r.stdout, "02:30 UTC") != 3 || !strings.Contains(r.stdout, "adhoc (command) manual") {
		t.Errorf("stdout:\n%s", r.stdout)
	}
}

func TestRunnerCLIRunAndHistory(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, `  - name: hello
    kind: command
    with: {argv: [/bin/sh, -c, 'echo hello from the job']}
  - name: broken
    kind: command
    with: {argv: [/bin/sh, -c, 'echo no space left >&2; exit 4']}
  - name: some
    kind: command
    with: {argv: [/bin/sh, -c, 'exit 24'], partial_codes: [24]}
`)
	e.extra = []string{"VIGIL_CONFIG=" + cfg}
	r := e.must("run", "hello")
	if !strings.HasPrefix(r.stdout, "run 1 of hello: success") {
		t.Errorf("stdout: %s", r.stdout)
	}
	if r := e.run("run", "broken"); r.code != exitError || !strings.Contains(r.stdout, "error: command /bin/sh: exit status 4: no space left") {
		t.Errorf("broken: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if r := e.run("run", "some"); r.code != exitPartial {
		t.Errorf("partial: exit %d", r.code)
	}
	if r := e.run("run", "nope"); r.code != exitUsage || !strings.Contains(r.stderr, "unknown job") {
		t.Errorf("unknown job: exit %d %s", r.code, r.stderr)
	}
	r = e.must("runs", "--json", "--status", "success")
	var run struct {
		ID      int64
		Job     string
		Trigger string
		Status  string
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &run); err != nil || run.Job != "hello" || run.Trigger != "manual" {
		t.Errorf("runs --json: %s (%v)", r.stdout, err)
	}
	r = e.must("runs", "show", strconv.FormatInt(run.ID, 10))
	if !strings.Contains(r.stdout, "status:     success") || !strings.Contains(r.stdout, `hello from the job stream="stdout"`) {
		t.Errorf("runs show:\n%s", r.stdout)
	}
	r = e.must("jobs")
	if !strings.Contains(r.stdout, "broken") || !strings.Contains(r.stdout, "failed") {
		t.Errorf("jobs:\n%s", r.stdout)
	}
	if r := e.run("runs", "--status", "weird"); r.code != exitUsage {
		t.Errorf("bad status: exit %d", r.code)
	}
}

// TestRunnerCLICrashAndRestart kills the daemon with SIGKILL in the middle
// of a run: after a restart that run is failed (interrupted), the missed
// start is caught up by policy, and SIGTERM then cancels the catch-up run
// cleanly.
func TestRunnerCLICrashAndRestart(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	cfg := writeConfig(t, dir, fmt.Sprintf(`  - name: slow
    kind: command
    schedule: "@every 2s"
    catch_up: once
    max_lateness: 1h
    with: {argv: [/bin/sh, -c, 'echo $$ >> %s; exec sleep 60'], kill_grace: 1s}
`, pids))
	e.extra = []string{"VIGIL_CONFIG=" + cfg}
	t.Cleanup(func() { // the killed daemon's child outlives it
		b, _ := os.ReadFile(pids)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	waitFor := func(what string, cond func([]map[string]any) bool) []map[string]any {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			r := e.run("runs", "--json", "--limit", "20")
			var runs []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil {
					runs = append(runs, m)
				}
			}
			if cond(runs) {
				return runs
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v (%s)", what, runs, r.stderr)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	has := func(runs []map[string]any, key, val string) map[string]any {
		for _, r := range runs {
			if r[key] == val {
				return r
			}
		}
		return nil
	}

	d1 := e.cmd(context.Background(), "daemon")
	if err := d1.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor("a running run", func(rs []map[string]any) bool { return has(rs, "status", "running") != nil })
	// A second daemon on the same history refuses to start.
	if r := e.run("daemon"); r.code != exitLocked || !strings.Contains(r.stderr, "another vigil daemon is running") {
		t.Errorf("second daemon: exit %d %s", r.code, r.stderr)
	}
	d1.Process.Signal(syscall.SIGKILL)
	d1.Wait()
	time.Sleep(2500 * time.Millisecond) // at least one scheduled start passes while vigil is down

	d2 := e.cmd(context.Background(), "daemon")
	var stderr strings.Builder
	d2.Stderr = &stderr
	if err := d2.Start(); err != nil {
		t.Fatal(err)
	}
	runs := waitFor("the interrupted run and a catch-up run", func(rs []map[string]any) bool {
		return has(rs, "error", "interrupted: vigil stopped while the run was in progress") != nil && has(rs, "trigger", "catch-up") != nil
	})
	if r := has(runs, "error", "interrupted: vigil stopped while the run was in progress"); r["status"] != "failed" {
		t.Errorf("interrupted run: %+v", r)
	}
	d2.Process.Signal(syscall.SIGTERM)
	if err := d2.Wait(); err != nil {
		t.Errorf("daemon after SIGTERM: %v\n%s", err, stderr.String())
	}
	runs = waitFor("no running runs", func(rs []map[string]any) bool { return has(rs, "status", "running") == nil })
	if c := has(runs, "trigger", "catch-up"); c["status"] != "cancelled" {
		t.Errorf("catch-up run after SIGTERM: %+v\n%s", c, stderr.String())
	}
}
