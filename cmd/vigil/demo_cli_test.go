package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCLIDemo runs the built binary's demo twice in a temporary working
// directory: everything lands in ./vigil-demo/, the report comes from the
// history with both nights (the second incremental) and both restores, and
// the second run starts afresh. A directory of the same name that the demo
// did not make is left alone.
func TestCLIDemo(t *testing.T) {
	wd := t.TempDir()
	run := func() (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		c := exec.CommandContext(ctx, vigilBin, "demo")
		c.Dir = wd
		c.Env = append(os.Environ(), "VIGIL_KDF_N=1024", "TMPDIR="+filepath.Join(wd, "elsewhere"))
		var out, errb strings.Builder
		c.Stdout, c.Stderr = &out, &errb
		err := c.Run()
		return out.String(), errb.String(), err
	}
	if err := os.Mkdir(filepath.Join(wd, "elsewhere"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		out, stderr, err := run()
		if err != nil {
			t.Fatalf("demo run %d: %v\n%s\n%s", i, err, out, stderr)
		}
		for _, want := range []string{"run report (from the history)", "restore-disk  success", "restore-vm    success",
			"check --read-data", "vigil runs -c vigil-demo/vigil.yaml"} {
			if !strings.Contains(out, want) {
				t.Fatalf("run %d: report lacks %q:\n%s", i, want, out)
			}
		}
		// Night 1 reads every disk, night 2 a few percent of them.
		m := regexp.MustCompile(`(?m)^\s+(\d)\s+vms\s+vmbackup\s+success .*read ([\d.]+) % of`).FindAllStringSubmatch(out, -1)
		if len(m) != 2 || m[0][1] != "1" || m[0][2] != "100.0" || m[1][1] != "3" || m[1][2] == "100.0" {
			t.Fatalf("run %d: VM nights in the report: %q\n%s", i, m, out)
		}
		if strings.Contains(out, "   7  ") {
			t.Fatalf("run %d: the history was not started afresh:\n%s", i, out)
		}
	}
	for _, f := range []string{".vigil-demo", "history.db", "repo/config", "restore/disk-0.img", "vigil.yaml"} {
		if _, err := os.Stat(filepath.Join(wd, "vigil-demo", f)); err != nil {
			t.Errorf("vigil-demo/%s: %v", f, err)
		}
	}
	// Nothing outside ./vigil-demo/: the working directory holds only it
	// and the TMPDIR given to the process, which must be empty.
	entries, _ := os.ReadDir(wd)
	if len(entries) != 2 {
		t.Errorf("working directory holds %v", entries)
	}
	if left, _ := os.ReadDir(filepath.Join(wd, "elsewhere")); len(left) != 0 {
		t.Errorf("demo wrote to TMPDIR: %v", left)
	}
	if out, err := exec.Command(vigilBin, "runs", "-c", filepath.Join(wd, "vigil-demo", "vigil.yaml")).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "restore") {
		t.Fatalf("vigil runs on the demo's config: %v\n%s", err, out)
	}

	other := t.TempDir()
	if err := os.MkdirAll(filepath.Join(other, "vigil-demo", "mine"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := exec.Command(vigilBin, "demo")
	c.Dir = other
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "not made by vigil demo") {
		t.Fatalf("demo over a foreign vigil-demo directory: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(other, "vigil-demo", "mine")); err != nil {
		t.Fatal("the demo deleted a directory it did not make")
	}
}
