package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestConfigsCLI runs a configexport job over three nights through the
// binary and reads the history back with every configs subcommand, text
// and --json, checking that no secret is ever printed unless asked for.
func TestConfigsCLI(t *testing.T) {
	e := newEnv(t)
	e.must("init")
	dir := t.TempDir()
	sw := filepath.Join(dir, "sw.cfg")
	const secret = "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"
	write := func(text string) {
		if err := os.WriteFile(sw, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	v1 := "hostname core\npassword manager user-name \"admin\" sha1 \"" + secret + "\"\nvlan 10\n   name \"staff\"\n   exit\n"
	write(v1)
	cfg := writeConfig(t, dir, fmt.Sprintf(`  - name: switches
    kind: configexport
    with:
      targets:
        - name: switch-core-2
          command: {argv: [/bin/cat, %q]}
        - name: gone
          command: {argv: [/bin/cat, %q]}
`, sw, filepath.Join(dir, "missing")))
	src, _ := os.ReadFile(cfg)
	src = append([]byte(fmt.Sprintf("repository:\n  url: %s\n  password_file: %s\n", e.repo, e.pwFile)), src...)
	if err := os.WriteFile(cfg, src, 0o600); err != nil {
		t.Fatal(err)
	}
	e.extra = []string{"VIGIL_CONFIG=" + cfg}

	// Night 1 and 2 (unchanged); night 3 adds two lines and changes one.
	if r := e.run("run", "switches"); r.code != exitPartial {
		t.Fatalf("night 1: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	e.run("run", "switches")
	write(strings.Replace(v1, "   name \"staff\"\n", "   name \"staff-lan\"\n   untagged 1-20\nvlan 20\n", 1))
	r := e.run("run", "switches")
	if r.code != exitPartial {
		t.Fatalf("night 3: exit %d %s %s", r.code, r.stdout, r.stderr)
	}
	var outputs []string

	r = e.must("configs")
	outputs = append(outputs, r.stdout)
	if !strings.Contains(r.stdout, "switches  switch-core-2  command") || !regexpMatch(`gone\s+command\s+never`, r.stdout) {
		t.Errorf("configs:\n%s", r.stdout)
	}
	r = e.must("configs", "--json")
	outputs = append(outputs, r.stdout)
	var row struct {
		Target     string
		Changes    int
		Versions   int
		LastChange struct {
			RunID int64 `json:"run_id"`
		} `json:"last_change"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &row); err != nil || row.Target != "switch-core-2" || row.Versions != 3 || row.Changes != 2 || row.LastChange.RunID != 3 {
		t.Errorf("configs --json: %s (%v)", r.stdout, err)
	}

	r = e.must("configs", "history", "switch-core-2")
	outputs = append(outputs, r.stdout)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "+5 −0") || !strings.Contains(lines[2], "+3 −1") {
		t.Errorf("history:\n%s", r.stdout)
	}
	r = e.must("configs", "history", "switch-core-2", "--all", "--json")
	outputs = append(outputs, r.stdout)
	if strings.Count(r.stdout, "\n") != 3 || strings.Count(r.stdout, `"changed":false`) != 1 {
		t.Errorf("history --all --json:\n%s", r.stdout)
	}

	r = e.must("configs", "diff", "switch-core-2")
	outputs = append(outputs, r.stdout)
	for _, want := range []string{"-   name \"staff\"\n", "+   name \"staff-lan\"\n", "+   untagged 1-20\n", "+vlan 20\n", "@@ -1,5 +1,7 @@"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("diff lacks %q:\n%s", want, r.stdout)
		}
	}
	r = e.must("configs", "diff", "switch-core-2", "--from", "1", "--to", "2")
	if !strings.Contains(r.stdout, "no shown changes") {
		t.Errorf("diff 1..2: %s", r.stdout)
	}
	r = e.must("configs", "diff", "switch-core-2", "--from", "1", "--json")
	outputs = append(outputs, r.stdout)
	var d struct{ Added, Removed int }
	if err := json.Unmarshal([]byte(r.stdout), &d); err != nil || d.Added != 3 || d.Removed != 1 {
		t.Errorf("diff --json: %s", r.stdout)
	}

	r = e.must("configs", "show", "switch-core-2", "--at", "1")
	outputs = append(outputs, r.stdout)
	if !strings.Contains(r.stdout, `sha1 "<redacted>"`) || !strings.Contains(r.stdout, "   name \"staff\"\n") {
		t.Errorf("show --at 1:\n%s", r.stdout)
	}
	r = e.must("configs", "show", "switch-core-2", "--json")
	outputs = append(outputs, r.stdout)
	for _, o := range outputs {
		if strings.Contains(o, secret) {
			t.Errorf("output shows the secret:\n%s", o)
		}
	}
	// Asked for: the stored copy is complete, for pasting back.
	if r := e.must("configs", "show", "switch-core-2", "--secrets", "--at", "1"); r.stdout != v1 {
		t.Errorf("show --secrets:\n%q", r.stdout)
	}

	// Errors: unknown target and a run that did not export it.
	if r := e.run("configs", "diff", "nope"); r.code != exitUsage {
		t.Errorf("unknown target: exit %d %s", r.code, r.stderr)
	}
	if r := e.run("configs", "show", "gone"); r.code != exitError || !strings.Contains(r.stderr, "no exports stored yet") {
		t.Errorf("never exported: exit %d %s", r.code, r.stderr)
	}
}

func regexpMatch(expr, s string) bool { return regexp.MustCompile(expr).MatchString(s) }
