package loganalyze

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/history"
)

// env runs jobs through a real runner on a real SQLite history file, so
// findings, their details and the job state make the full round trip.
type env struct {
	t    *testing.T
	hist *history.DB
	now  time.Time
}

func newEnv(t *testing.T) *env {
	h, err := history.Open(context.Background(), filepath.Join(t.TempDir(), "history.db"), history.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &env{t: t, hist: h, now: time.Date(2026, 3, 2, 3, 0, 0, 0, time.UTC)}
}

func (e *env) build(with string) *Job {
	e.t.Helper()
	w, err := configs.ParseWith(with)
	if err != nil {
		e.t.Fatal(err)
	}
	j, err := New(configs.Job{Name: "logs", Kind: "loganalyze", With: w})
	if err != nil {
		e.t.Fatal(err)
	}
	job := j.(*Job)
	job.now = func() time.Time { return e.now }
	return job
}

// run runs j and returns the run, its findings (from the history) and its log.
func (e *env) run(j *Job) (runner.Run, []runner.Finding, string) {
	e.t.Helper()
	r, err := runner.New([]runner.Spec{{Name: "logs", Kind: "loganalyze", Job: j}}, runner.Options{History: e.hist})
	if err != nil {
		e.t.Fatal(err)
	}
	run, err := r.RunNow(context.Background(), "logs", runner.TriggerManual)
	if err != nil {
		e.t.Fatal(err)
	}
	fs, err := e.hist.Findings(context.Background(), run.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	logs, _ := e.hist.Logs(context.Background(), run.ID)
	var sb strings.Builder
	for _, l := range logs {
		fmt.Fprintf(&sb, "%s %s %s\n", l.Level, l.Message, l.Attrs)
	}
	if run.Status != runner.StatusSuccess {
		e.t.Fatalf("run %s: %s\n%s", run.Status, run.Error, sb.String())
	}
	return run, fs, sb.String()
}

func copyFixtures(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type want struct {
	code, subject string
	count         int64
	sev           runner.Severity
}

func summarize(fs []runner.Finding) []want {
	var out []want
	for _, f := range fs {
		out = append(out, want{f.Code, f.Subject, f.Count, f.Severity})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].code != out[j].code {
			return out[i].code < out[j].code
		}
		return out[i].subject < out[j].subject
	})
	return out
}

// TestFixturesExactFindings: real-format lines from sshd, sudo, login,
// faillock, the kernel, systemd (journalctl -o short-iso), RFC 5424,
// nginx combined and JSON lines give exactly these findings.
func TestFixturesExactFindings(t *testing.T) {
	dir := copyFixtures(t, "auth.log", "kern.log", "journal.log", "rfc5424.log", "access.log", "app.jsonl")
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`
since: 7d
sudo_users: [alice, bob]
inputs:
  - {paths: ["%[1]s/auth.log*", "%[1]s/kern.log", "%[1]s/journal.log", "%[1]s/rfc5424.log"], format: syslog}
  - {paths: ["%[1]s/access.log*"], format: combined}
  - {paths: ["%[1]s/app.jsonl"], format: json}
rules:
  - {code: app.db_timeout, pattern: 'timeout connecting to (?P<db>\S+)', group_by: db, threshold: 5, window: 10m, severity: error, message: database timeouts}
  - {code: app.login_failed, pattern: 'login failed'}
`, dir))
	run, fs, log := e.run(j)
	got := summarize(fs)
	exp := []want{
		{"account.lockout", "root", 3, runner.SeverityError},
		{"app.db_timeout", "db1", 6, runner.SeverityError},
		{"app.login_failed", "", 1, runner.SeverityWarning},
		{"http.5xx_rate", dir + "/access.log*", 10, runner.SeverityError},
		{"http.top_4xx", "/wp-login.php", 12, runner.SeverityInfo},
		{"kernel.fs_error", "dm-3", 1, runner.SeverityCritical},
		{"kernel.fs_error", "sda2", 1, runner.SeverityCritical},
		{"kernel.io_error", "sdb", 2, runner.SeverityError},
		{"kernel.io_error", "sdb1", 1, runner.SeverityError},
		{"kernel.oom_kill", "java", 2, runner.SeverityError},
		{"pam.auth_failure", "login/dave", 3, runner.SeverityWarning},
		{"pam.auth_failure", "login/eve", 3, runner.SeverityWarning},
		{"ssh.failed_password", "203.0.113.50", 5, runner.SeverityWarning},
		{"ssh.failed_password", "203.0.113.9", 8, runner.SeverityWarning},
		{"ssh.invalid_user", "192.0.2.44", 5, runner.SeverityWarning},
		{"sudo.auth_failure", "bob", 3, runner.SeverityWarning},
		{"sudo.unexpected_user", "carol", 1, runner.SeverityWarning},
		{"sudo.unexpected_user", "mallory", 1, runner.SeverityWarning},
		{"systemd.service_failed", "app.service", 1, runner.SeverityError},
		{"systemd.service_failed", "nginx.service", 2, runner.SeverityError},
		{"systemd.service_restart", "app.service", 4, runner.SeverityWarning},
		{"tls.cert_expiry", "certbot", 1, runner.SeverityWarning},
		{"tls.cert_expiry", "nginx", 1, runner.SeverityWarning},
	}
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		t.Errorf("findings:\n%s\nwant:\n%s\nlog:\n%s", fmtWants(got), fmtWants(exp), log)
	}
	byKey := map[string]runner.Finding{}
	for _, f := range fs {
		byKey[f.Code+" "+f.Subject] = f
	}
	ssh := byKey["ssh.failed_password 203.0.113.9"]
	if !strings.Contains(ssh.Message, "root×6") || !strings.Contains(ssh.Message, "admin×2") || len(ssh.Examples) != 3 ||
		!ssh.FirstSeen.Equal(time.Date(2026, 3, 1, 1, 2, 3, 0, time.UTC)) || !ssh.LastSeen.Equal(time.Date(2026, 3, 1, 1, 3, 8, 0, time.UTC)) {
		t.Errorf("ssh finding = %+v", ssh)
	}
	if f := byKey["app.login_failed "]; len(f.Examples) != 1 || strings.Contains(f.Examples[0], "hunter2") || strings.Contains(f.Examples[0], "eyJhbGci") {
		t.Errorf("secrets not masked: %q", f.Examples)
	}
	if f := byKey["http.5xx_rate "+dir+"/access.log*"]; strings.Contains(f.Examples[0], "abcd1234secret") || !strings.Contains(f.Message, "/api/orders×10") {
		t.Errorf("5xx finding = %+v", f)
	}
	if f := byKey["app.db_timeout db1"]; f.Extra["max_in_window"] != float64(6) {
		t.Errorf("window burst = %v", f.Extra)
	}
	x := run.Summary.Extra
	if num(x["lines"]) != 146 || num(x["parse_errors"]) != 3 || fmt.Sprint(x["top_sources"]) != "[{http 56} {sshd 32} {systemd 12} {kernel 10} {sudo 7}]" {
		t.Errorf("summary = %v", x)
	}
	if !strings.Contains(log, "lines not in the expected format") || !strings.Contains(log, "this line is not syslog at all") {
		t.Errorf("parse errors not sampled in the log:\n%s", log)
	}
}

// num reads a summary figure, int64 in memory and float64 after JSON.
func num(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case int:
		return float64(x)
	case float64:
		return x
	}
	return -1
}

func fmtWants(ws []want) string {
	var sb strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&sb, "  %s %q %d %s\n", w.code, w.subject, w.count, w.sev)
	}
	return sb.String()
}

// TestCursorsAcrossRotations: three simulated days of a log rotated by
// rename, then compressed (a gzip copy under a new name and inode): every
// line is read exactly once.
func TestCursorsAcrossRotations(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "auth.log")
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`
since: 30d
max_subjects: 1000
inputs: [{paths: ["%s*"]}]
rules: [{code: test.seq, pattern: 'seq=(?P<id>\d+)', group_by: id, severity: info}]
`, live))
	seq := 0
	appendLines := func(path string, n int) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			fmt.Fprintf(f, "Mar  1 10:00:%02d host app[1]: event seq=%d %s\n", seq%60, seq, strings.Repeat("x", 40))
			seq++
		}
		f.Close()
	}
	seen := map[string]int{}
	collect := func(fs []runner.Finding) {
		for _, f := range fs {
			seen[f.Subject] += int(f.Count)
		}
	}
	gzipTo := func(src, dst string) {
		b, _ := os.ReadFile(src)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		os.WriteFile(dst, buf.Bytes(), 0o644)
		os.Remove(src)
	}
	// Day 1: 40 lines (more than the 1 KiB head).
	appendLines(live, 40)
	_, fs, _ := e.run(j)
	collect(fs)
	// Day 2: 5 more lines, then rotation, then 3 lines in the new file.
	appendLines(live, 5)
	os.Rename(live, live+".1")
	appendLines(live, 3)
	e.now = e.now.Add(24 * time.Hour)
	_, fs, _ = e.run(j)
	collect(fs)
	// Day 3: 2 more lines, then .1 compressed to .2.gz, rotation, 4 new lines.
	appendLines(live, 2)
	gzipTo(live+".1", live+".2.gz")
	os.Rename(live, live+".1")
	appendLines(live, 4)
	e.now = e.now.Add(24 * time.Hour)
	_, fs, log := e.run(j)
	collect(fs)
	// Day 4: nothing new at all.
	e.now = e.now.Add(24 * time.Hour)
	run, fs, _ := e.run(j)
	collect(fs)
	if seq != 54 || len(seen) != seq {
		t.Fatalf("saw %d distinct lines of %d\n%s", len(seen), seq, log)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("line seq=%s read %d times", id, n)
		}
	}
	if num(run.Summary.Extra["lines"]) != 0 {
		t.Errorf("a quiet day read %v lines", run.Summary.Extra["lines"])
	}
}

// TestSinceOnFirstRunAndDeltas: the first run skips events before since;
// the next run compares with it (new offenders, rising counts).
func TestSinceOnFirstRunAndDeltas(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "auth.log")
	line := func(day, ip string, n int) string {
		var sb strings.Builder
		for i := range n {
			fmt.Fprintf(&sb, "Mar %s 01:00:%02d bastion sshd[1]: Failed password for root from %s port 22 ssh2\n", day, i, ip)
		}
		return sb.String()
	}
	os.WriteFile(path, []byte(line(" 1", "192.0.2.1", 50)+line(" 2", "192.0.2.1", 6)+line(" 2", "192.0.2.2", 5)), 0o644)
	e := newEnv(t) // now: Mar 2 03:00
	j := e.build(fmt.Sprintf(`{since: 12h, inputs: [{paths: [%s]}]}`, path))
	run, fs, _ := e.run(j)
	if got := summarize(fs); fmt.Sprint(got) != fmt.Sprint([]want{{"ssh.failed_password", "192.0.2.1", 6, "warning"}, {"ssh.failed_password", "192.0.2.2", 5, "warning"}}) {
		t.Errorf("first run: %v", got)
	}
	if num(run.Summary.Extra["skipped_before_since"]) != 50 {
		t.Errorf("summary = %v", run.Summary.Extra)
	}
	for _, f := range fs {
		if f.Extra["new"] != nil {
			t.Errorf("first run marks deltas: %+v", f)
		}
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(line(" 3", "192.0.2.1", 20) + line(" 3", "192.0.2.2", 5) + line(" 3", "192.0.2.3", 7))
	f.Close()
	e.now = e.now.Add(24 * time.Hour)
	_, fs, _ = e.run(j)
	msgs := map[string]runner.Finding{}
	for _, f := range fs {
		msgs[f.Subject] = f
	}
	if f := msgs["192.0.2.1"]; f.Extra["rising"] != true || f.Extra["previous_count"] != float64(6) || !strings.Contains(f.Message, "rising: 6") {
		t.Errorf("rising offender: %+v", f)
	}
	if f := msgs["192.0.2.2"]; f.Extra["rising"] != nil || f.Extra["new"] != nil {
		t.Errorf("steady offender: %+v", f)
	}
	if f := msgs["192.0.2.3"]; f.Extra["new"] != true || !strings.Contains(f.Message, "new since the last run") {
		t.Errorf("new offender: %+v", f)
	}
}

// TestBadInputs: each kind of damage is survived with a note in the run log.
func TestBadInputs(t *testing.T) {
	good := "Mar  1 10:00:00 host sshd[1]: Failed password for root from 192.0.2.9 port 22 ssh2\n"
	cases := []struct {
		name, file string
		content    func() []byte
		note       string
		lines      int64 // lines that reached the rules
		summaryKey string
	}{
		{"nul bytes", "nul.log", func() []byte {
			return []byte(good + strings.Repeat("\x00", 5000) + good + "bin\x00ary\n")
		}, "lines with NUL bytes", 2, "nul_lines"},
		{"long line", "long.log", func() []byte {
			return []byte(good + strings.Repeat("A", 3<<20) + "\n" + good)
		}, "lines over 1 MiB skipped", 2, "long_lines"},
		{"binary garbage", "garbage.log", func() []byte {
			b := make([]byte, 64<<10)
			for i := range b {
				b[i] = byte(i*7919 + i/13)
			}
			return append(append([]byte(good), b...), good...)
		}, "lines not in the expected format", 1, "parse_errors"},
		{"truncated gzip", "trunc.log.gz", func() []byte {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			for i := 0; i < 2000; i++ {
				fmt.Fprintf(zw, "Mar  1 10:00:00 host sshd[1]: Failed password for root from 192.0.2.7 port %d ssh2\n", 1024+i)
				if i%100 == 99 {
					zw.Flush() // sync points, as a logger flushing its gzip stream writes
				}
			}
			zw.Close()
			return buf.Bytes()[:buf.Len()-200]
		}, "truncated gzip file: read up to the damage", -1, ""},
		{"not gzip", "fake.log.gz", func() []byte { return []byte(good) }, "not a readable gzip file", 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, c.file), c.content(), 0o644)
			e := newEnv(t)
			j := e.build(fmt.Sprintf(`{since: 0, thresholds: {ssh.failed_password: 1}, inputs: [{paths: ["%s/*"]}]}`, dir))
			run, fs, log := e.run(j)
			if !strings.Contains(log, c.note) {
				t.Errorf("no note %q in:\n%s", c.note, log)
			}
			var events int64
			for _, f := range fs {
				events += f.Count
			}
			if c.lines >= 0 && events != c.lines {
				t.Errorf("%d events reached the rules, want %d", events, c.lines)
			}
			if c.lines < 0 && (events < 1500 || events >= 2000) {
				t.Errorf("%d events from a truncated gzip of 2000 lines", events)
			}
			if c.summaryKey != "" && num(run.Summary.Extra[c.summaryKey]) == 0 {
				t.Errorf("summary %s = 0: %v", c.summaryKey, run.Summary.Extra)
			}
		})
	}
}

// TestRotatedWhileReading: the file is renamed away and replaced after it
// was opened; the old content is finished through the descriptor, the new
// file is read by the next run, nothing twice.
func TestRotatedWhileReading(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	os.WriteFile(path, []byte(strings.Repeat("Mar  1 10:00:00 host app[1]: old seq=1\n", 1)+"Mar  1 10:00:00 host app[1]: old seq=2\n"), 0o644)
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`{since: 0, inputs: [{paths: [%s]}], rules: [{code: test.seq, pattern: 'seq=(?P<id>\d+)', group_by: id}]}`, path))
	testHookOpened = func(p string) {
		os.Rename(p, p+".1")
		os.WriteFile(p, []byte("Mar  1 10:00:01 host app[1]: new seq=3\n"), 0o644)
	}
	_, fs, log := e.run(j)
	testHookOpened = nil
	if !strings.Contains(log, "rotated while being read") {
		t.Errorf("no note:\n%s", log)
	}
	if got := summarize(fs); len(got) != 2 || got[0].subject != "1" || got[1].subject != "2" {
		t.Errorf("first run: %v", got)
	}
	_, fs, _ = e.run(j)
	if got := summarize(fs); len(got) != 1 || got[0].subject != "3" {
		t.Errorf("second run: %v", got)
	}
}

// TestFloatOptionsDecode: http_5xx_rate is a fraction in the config.
func TestFloatOptionsDecode(t *testing.T) {
	for with, want := range map[string]float64{
		`{inputs: [{paths: [/x]}], http_5xx_rate: 0.05}`: 0.05,
		`{inputs: [{paths: [/x]}], http_5xx_rate: 1}`:    1,
		`{inputs: [{paths: [/x]}]}`:                      0.01,
	} {
		w, err := configs.ParseWith(with)
		if err != nil {
			t.Fatal(err)
		}
		j, err := New(configs.Job{Name: "x", Kind: "loganalyze", With: w})
		if err != nil {
			t.Fatalf("%s: %v", with, err)
		}
		if got := j.(*Job).p.HTTP5xxRate; got != want {
			t.Errorf("%s: http_5xx_rate = %v, want %v", with, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ with, want string }{
		{`{}`, "inputs"},
		{`{inputs: [{paths: [rel.log]}]}`, "not absolute"},
		{`{inputs: [{paths: [/x], format: xml}]}`, "format"},
		{`{inputs: [{paths: [/x], format: regex}]}`, "pattern"},
		{`{inputs: [{paths: [/x], format: regex, pattern: '('}]}`, "pattern"},
		{`{inputs: [{paths: [/x]}], disable: [ssh.nope]}`, "unknown built-in rule"},
		{`{inputs: [{paths: [/x]}], rules: [{code: Bad, pattern: x}]}`, "code"},
		{`{inputs: [{paths: [/x]}], rules: [{code: ssh.failed_password, pattern: x}]}`, "built-in"},
		{`{inputs: [{paths: [/x]}], rules: [{code: a.b, pattern: x, severity: loud}]}`, "severity"},
		{`{inputs: [{paths: [/x], format: json, fields: {nope: x}}]}`, "unknown event field"},
		{`{inputs: [{paths: [/x]}], http_5xx_rate: 1.5}`, "http_5xx_rate: must be between 0 and 1"},
		{`{inputs: [{paths: [/x]}], http_5xx_rate: 5%}`, `http_5xx_rate: expected a number like 0.05, got "5%"`},
	} {
		w, _ := configs.ParseWith(c.with)
		_, err := New(configs.Job{Name: "x", Kind: "loganalyze", With: w})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.with, err, c.want)
		}
	}
}
