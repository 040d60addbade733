package command

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

func build(t *testing.T, with string) runner.Job {
	t.Helper()
	w, err := configs.ParseWith(with)
	if err != nil {
		t.Fatal(err)
	}
	j, err := New(configs.Job{Name: "t", Kind: "command", With: w})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// run executes a job through a real runner so logs and summary are recorded.
func run(t *testing.T, job runner.Job, timeout time.Duration) (runner.Run, []runner.LogLine) {
	t.Helper()
	h := runner.NewMemHistory()
	r, err := runner.New([]runner.Spec{{Name: "t", Kind: "command", Job: job, Timeout: timeout}}, runner.Options{History: h})
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.RunNow(context.Background(), "t", runner.TriggerManual)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := h.Logs(context.Background(), res.ID)
	return res, logs
}

func messages(logs []runner.LogLine) string {
	var out []string
	for _, l := range logs {
		out = append(out, l.Message)
	}
	return strings.Join(out, "|")
}

func TestOutputCapturedAndExitCodes(t *testing.T) {
	res, logs := run(t, build(t, `argv: [/bin/sh, -c, 'echo one; echo two >&2; printf tail']`), 0)
	if res.Status != runner.StatusSuccess || res.Summary.Extra["exit_code"] != 0 {
		t.Fatalf("run = %+v", res)
	}
	if got := messages(logs); !strings.Contains(got, "one") || !strings.Contains(got, "two") || !strings.HasSuffix(got, "tail") {
		t.Errorf("log = %s", got)
	}

	res, _ = run(t, build(t, `argv: [/bin/sh, -c, 'echo disk full >&2; exit 3']`), 0)
	if res.Status != runner.StatusFailed || res.Error != "command /bin/sh: exit status 3: disk full" {
		t.Errorf("failing run = %+v", res)
	}
	res, _ = run(t, build(t, "argv: [/bin/sh, -c, 'exit 24']\npartial_codes: [24]"), 0)
	if res.Status != runner.StatusPartial {
		t.Errorf("partial run = %+v", res)
	}
	res, _ = run(t, build(t, "argv: [/bin/sh, -c, 'exit 1']\nsuccess_codes: [0, 1]"), 0)
	if res.Status != runner.StatusSuccess {
		t.Errorf("exit 1 as success = %+v", res)
	}
	res, _ = run(t, build(t, `argv: [/nonexistent/tool]`), 0)
	if res.Status != runner.StatusFailed || !strings.Contains(res.Error, "no such file or directory") {
		t.Errorf("missing program = %+v", res)
	}
}

func TestRetryCodesAreRetryable(t *testing.T) {
	job := build(t, "argv: [/bin/sh, -c, 'exit 75']\nretry_codes: [75]")
	err := job.Run(context.Background(), nopRC{})
	if !runner.IsRetryable(err) {
		t.Errorf("err = %v, want retryable", err)
	}
}

func TestNoShellAndEnvAllowList(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	t.Setenv("VIGIL_TEST_ALLOWED", "yes")
	t.Setenv("VIGIL_TEST_SECRET", "hunter2")
	// env prints what it received: the allow-listed variable and EXTRA,
	// whose "$(...)" stays literal because no shell is involved.
	job := build(t, `
argv: [/usr/bin/env]
env_allow: [VIGIL_TEST_ALLOWED, NOT_SET_ANYWHERE]
env: {EXTRA: "$(touch `+marker+`)"}
`)
	res, logs := run(t, job, 0)
	if res.Status != runner.StatusSuccess {
		t.Fatalf("run = %+v", res)
	}
	got := messages(logs)
	if !strings.Contains(got, "VIGIL_TEST_ALLOWED=yes") || !strings.Contains(got, "EXTRA=$(touch") {
		t.Errorf("env = %s", got)
	}
	if strings.Contains(got, "hunter2") || strings.Contains(got, "PATH=") {
		t.Errorf("variables outside the allow-list leaked: %s", got)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Error("a shell expanded the argument")
	}
}

func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "survived")
	// The child of the shell would create the marker after 2s if it survived.
	job := build(t, "argv: [/bin/sh, -c, '(sleep 2; touch "+marker+") & sleep 60']\nkill_grace: 1s")
	start := time.Now()
	res, _ := run(t, job, 300*time.Millisecond)
	if res.Status != runner.StatusFailed || !strings.HasPrefix(res.Error, "timeout after 300ms: command /bin/sh: stopped") {
		t.Errorf("run = %+v", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v to stop", d)
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Error("a child of the command survived the timeout")
	}
}

func TestOutputCapped(t *testing.T) {
	res, logs := run(t, build(t, "argv: [/bin/sh, -c, 'i=0; while [ $i -lt 100 ]; do echo line-$i; i=$((i+1)); done']\nmax_output: 64"), 0)
	if res.Status != runner.StatusSuccess || res.Summary.Extra["output_truncated"] != true {
		t.Fatalf("run = %+v", res)
	}
	if last := logs[len(logs)-1]; last.Message != "command output truncated" || len(logs) > 12 {
		t.Errorf("%d lines, last %+v", len(logs), last)
	}
}

func TestConfigErrors(t *testing.T) {
	src := "jobs:\n  - name: c\n    kind: command\n    with:\n      argv: []\n      env_allow: [BAD-NAME]\n      retry_codes: [300]\n      shell: true\n"
	_, err := configs.Parse("c.yaml", []byte(src), configs.Options{Kinds: kinds{}})
	want := strings.Join([]string{
		`c.yaml:5: jobs[0].with.argv: is required: the program and its arguments, e.g. [/usr/local/bin/report, --daily]`,
		`c.yaml:6: jobs[0].with.env_allow: entry 0: invalid variable name "BAD-NAME"`,
		`c.yaml:7: jobs[0].with.retry_codes: exit code 300 is outside 0-255`,
	}, "\n")
	// Unknown fields stop the kind before its own checks.
	if err == nil || err.Error() != `c.yaml:8: jobs[0].with.shell: unknown field` {
		t.Errorf("err = %v", err)
	}
	src = strings.Replace(src, "      shell: true\n", "", 1)
	_, err = configs.Parse("c.yaml", []byte(src), configs.Options{Kinds: kinds{}})
	if err == nil || err.Error() != want {
		t.Errorf("err =\n%v\nwant\n%s", err, want)
	}
}

type kinds struct{}

func (kinds) Kinds() []string                  { return []string{"command"} }
func (kinds) NeedsRepository(kind string) bool { return false }
func (kinds) CheckJob(j configs.Job) error     { _, err := New(j); return err }

type nopRC struct{}

func (nopRC) RunID() int64                            { return 0 }
func (nopRC) JobName() string                         { return "t" }
func (nopRC) Attempt() int                            { return 1 }
func (nopRC) Log() *slog.Logger                       { return slog.New(slog.DiscardHandler) }
func (nopRC) Progress(runner.Progress)                {}
func (nopRC) SetSummary(runner.Summary)               {}
func (nopRC) AddFinding(runner.Finding)               {}
func (nopRC) Repository(context.Context) (any, error) { return nil, runner.ErrNoRepository }
