package configs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// fakeKinds stands in for the jobs registry: "command" needs with.argv,
// "files" needs the repository.
type fakeKinds struct{}

func (fakeKinds) Kinds() []string                  { return []string{"command", "files"} }
func (fakeKinds) NeedsRepository(kind string) bool { return kind == "files" }
func (fakeKinds) CheckJob(j Job) error {
	var p struct {
		Argv  []string `yaml:"argv"`
		Token Secret   `yaml:"token"`
		Ratio float64  `yaml:"ratio"`
	}
	if err := j.With.Decode(&p); err != nil {
		return err
	}
	if j.Kind == "command" && len(p.Argv) == 0 {
		return j.With.Errorf("argv", "is required")
	}
	return nil
}

func testOptions(t *testing.T) Options {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("s3cret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REPO": "/srv/repo", "EMPTY": "", "PW": "env-secret"}
	return Options{
		Kinds: fakeKinds{},
		LookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
		ReadFile: func(name string) ([]byte, error) {
			b, err := os.ReadFile(strings.Replace(name, "/secrets/", dir+"/", 1))
			var pe *fs.PathError
			if errors.As(err, &pe) {
				pe.Path = name // report the path as written in the config
			}
			return b, err
		},
	}
}

const goodConfig = `# a small shop
repository:
  url: ${REPO}
  password_file: /secrets/pw
  chunking: {min_size: 256KiB, avg_size: 1MiB, max_size: 4MiB}
history:
  path: /var/lib/vigil/h.db
  keep: 90d
timezone: Europe/Berlin
defaults: &defs
  timeout: 2h
  retries: 2
  retry_backoff: 30s
  retention: {keep_daily: 7, keep_weekly: 4}
concurrency_groups: {vm: 1, net: 3}
jobs:
  - name: home
    kind: files
    schedule: "30 2 * * *"
    concurrency_group: vm
  - name: script
    kind: command
    schedule: "CRON_TZ=UTC @every 6h"
    retries: 0
    catch_up: skip
    enabled: false
    with:
      argv: [/usr/local/bin/report, --quiet]
      token: ${PW}
      ratio: 0.05
  - name: manual.only
    kind: command
    timeout: 1d12h
    with: {argv: [/bin/true]}
`

func TestLoadGood(t *testing.T) {
	c, err := Parse("good.yaml", []byte(goodConfig), testOptions(t))
	if err != nil {
		t.Fatalf("unexpected errors:\n%v", err)
	}
	if c.Repository.URL != "/srv/repo" || c.Repository.Password.Reveal() != "s3cret-value" || c.Repository.PasswordFile != "/secrets/pw" {
		t.Errorf("repository = %+v (password %q)", c.Repository, c.Repository.Password.Reveal())
	}
	if c.Repository.Chunking != (Chunking{256 << 10, 1 << 20, 4 << 20}) {
		t.Errorf("chunking = %+v", c.Repository.Chunking)
	}
	if c.History.Keep.D() != 90*24*time.Hour || c.History.MaxLogLines != 5000 {
		t.Errorf("history = %+v", c.History)
	}
	home, _ := c.Job("home")
	if home.Timeout.D() != 2*time.Hour || home.Retries != 2 || home.RetryBackoff.D() != 30*time.Second ||
		home.CatchUp != CatchUpOnce || !home.Enabled || home.Retention.KeepDaily != 7 || home.ConcurrencyGroup != "vm" {
		t.Errorf("home did not get the defaults: %+v", home)
	}
	if home.Location == nil || home.Location.String() != "Europe/Berlin" {
		t.Errorf("home's location = %v, want the config's timezone", home.Location)
	}
	script, _ := c.Job("script")
	if script.Retries != 0 || script.CatchUp != CatchUpSkip || script.Enabled {
		t.Errorf("script overrides lost: %+v", script)
	}
	var with struct {
		Argv  []string `yaml:"argv"`
		Token Secret   `yaml:"token"`
		Ratio float64  `yaml:"ratio"`
	}
	if err := script.With.Decode(&with); err != nil {
		t.Fatal(err)
	}
	if strings.Join(with.Argv, " ") != "/usr/local/bin/report --quiet" || with.Token.Reveal() != "env-secret" || with.Ratio != 0.05 {
		t.Errorf("with = %+v", with)
	}
	manual, _ := c.Job("manual.only")
	if manual.Timeout.D() != 36*time.Hour || manual.Schedule != "" {
		t.Errorf("manual = %+v", manual)
	}
	if got := c.Line("jobs[1].with"); got != 27 {
		t.Errorf("Line(jobs[1].with) = %d, want 27", got)
	}
	if got := script.With.Errorf("argv", "x").Error(); got != "good.yaml:28: jobs[1].with.argv: x" {
		t.Errorf("With.Errorf = %q", got)
	}
	if c.ConcurrencyGroups["net"] != 3 {
		t.Errorf("concurrency groups = %v", c.ConcurrencyGroups)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	c, err := Parse("good.yaml", []byte(goodConfig), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "repo", c.Repository, "pw", c.Repository.Password)
	js, err := json.Marshal(c.Repository)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprintf("%v %+v %#v %s", c.Repository, c.Repository, c.Repository, c.Repository.Password), logged.String(), string(js)} {
		if strings.Contains(out, "s3cret") {
			t.Errorf("secret leaked: %s", out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("no redaction marker in %s", out)
		}
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"A": "x", "E": ""}
	look := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for in, want := range map[string]string{
		"plain": "plain", "${A}": "x", "a${A}b": "axb", "$$": "$", "$${A}": "${A}", "$A": "$A",
		"${E:-d}": "d", "${UNSET:-d}": "d", "${A:-d}": "x", "${E}": "", "cost $5": "cost $5", "end$": "end$",
	} {
		got, err := expandEnv(in, look)
		if err != nil || got != want {
			t.Errorf("expandEnv(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"${UNSET}": "environment variable UNSET is not set",
		"${A":      "unterminated ${ in value",
		"${1A}":    `invalid environment variable name "1A"`,
	} {
		if _, err := expandEnv(in, look); err == nil || err.Error() != want {
			t.Errorf("expandEnv(%q) error = %v, want %q", in, err, want)
		}
	}
}

func TestParseDurationAndSize(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "90s": 90 * time.Second, "7d": 7 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "1d12h": 36 * time.Hour, "1.5h": 90 * time.Minute, "-5m": -5 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got.D() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "5", "d", "5x", "1e9s", "--5s", "5 s"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
	for in, want := range map[string]ByteSize{"4096": 4096, "512KiB": 512 << 10, "8MiB": 8 << 20, "1GB": 1e9, "10B": 10} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseByteSize("9999999TiB"); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("overflow not reported: %v", err)
	}
}

func TestMergeKeysAndAliases(t *testing.T) {
	src := `
base: &base
  kind: command
  timeout: 1h
  with: {argv: [/bin/true]}
jobs:
  - <<: *base
    name: a
  - <<: *base
    name: b
    timeout: 2h
`
	// "base" is not a config section, so it is reported; the jobs still decode.
	c, err := Parse("m.yaml", []byte(src), testOptions(t))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Error() != `m.yaml:2: base: unknown field` {
		t.Fatalf("errors = %v", err)
	}
	a, _ := c.Job("a")
	b, _ := c.Job("b")
	if a.Kind != "command" || a.Timeout.D() != time.Hour || b.Timeout.D() != 2*time.Hour {
		t.Errorf("merge keys: a=%+v b=%+v", a, b)
	}
}

func TestErrorsSortedAndComplete(t *testing.T) {
	src := "jobs:\n  - name: x\n    kind: nope\n    timeout: -1s\n    retries: 500\n  - name: x\n    kind: command\n    with: {argv: [a]}\n"
	_, err := Parse("s.yaml", []byte(src), testOptions(t))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %T %v", err, err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Error())
	}
	want := []string{
		`s.yaml:3: jobs[0].kind: unknown kind "nope" (known: command, files)`,
		`s.yaml:4: jobs[0].timeout: must be positive`,
		`s.yaml:5: jobs[0].retries: must be between 0 and 100`,
		`s.yaml:6: jobs[1].name: duplicate job name "x" (first defined at line 2)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !sort.SliceIsSorted(es, func(i, j int) bool { return es[i].Line < es[j].Line }) {
		t.Error("errors not sorted by line")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), Options{})
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "load config: ") {
		t.Errorf("err = %v", err)
	}
}
