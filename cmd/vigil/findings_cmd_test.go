package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFindingsAndDryRunCLI: a logrotate dry run changes nothing and
// records no run; a loganalyze run's findings are listed by `vigil
// findings` with the severity, job and code filters, as text and JSON.
func TestFindingsAndDryRunCLI(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	os.MkdirAll(logs, 0o755)
	for _, n := range []string{"auth.log", "kern.log"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "jobs", "loganalyze", "testdata", n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(logs, n), b, 0o644)
	}
	app := filepath.Join(dir, "app.log")
	os.WriteFile(app, []byte(strings.Repeat("Mar  1 10:00:00 host app[1]: hello\n", 100)), 0o640)
	cfg := writeConfig(t, dir, fmt.Sprintf(`  - name: logs
    kind: loganalyze
    with:
      since: 3650d
      inputs: [{paths: ["%s/*.log"]}]
  - name: rot
    kind: logrotate
    with: {paths: ["%s"], size: 1KiB}
`, logs, app))
	e.extra = []string{"VIGIL_CONFIG=" + cfg}

	r := e.must("run", "rot", "--dry-run")
	if !strings.Contains(r.stdout, `msg="plan: rotate"`) || !strings.Contains(r.stdout, "nothing changed") {
		t.Errorf("dry run stdout:\n%s", r.stdout)
	}
	if _, err := os.Stat(app + ".1"); err == nil {
		t.Error("the dry run rotated the file")
	}
	e.must("run", "logs")
	r = e.must("findings", "--severity", "critical")
	if strings.Count(r.stdout, "kernel.fs_error") != 2 || strings.Contains(r.stdout, "ssh.") {
		t.Errorf("critical findings:\n%s", r.stdout)
	}
	r = e.must("findings", "--json", "--code", "ssh.", "--job", "logs")
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		recs = append(recs, m)
	}
	if len(recs) != 2 || recs[0]["code"] != "ssh.failed_password" || recs[0]["count"] != float64(8) || recs[0]["run_id"] != float64(1) || recs[0]["job"] != "logs" {
		t.Errorf("json findings: %v", recs)
	}
	if r := e.must("findings", "--job", "rot"); !strings.Contains(r.stdout, "no findings") {
		t.Errorf("findings of rot: %s", r.stdout)
	}
	if r := e.run("findings", "--severity", "loud"); r.code != exitUsage {
		t.Errorf("bad severity: exit %d", r.code)
	}
	// The dry run recorded nothing: the only run is the analysis.
	if r := e.must("runs", "--json"); strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("runs after a dry run:\n%s", r.stdout)
	}
}
