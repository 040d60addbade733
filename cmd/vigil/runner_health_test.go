package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunnerCLIHealth: health fails without a daemon, passes while one
// runs on the config's history, and fails again once it stopped.
func TestRunnerCLIHealth(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "  - name: idle\n    kind: command\n    with: {argv: [/bin/true]}\n")
	e.extra = []string{"VIGIL_CONFIG=" + cfg}
	if r := e.run("health"); r.code != exitError || !strings.Contains(r.stderr, "no vigil daemon is running") {
		t.Fatalf("health without daemon: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	d := e.cmd(context.Background(), "daemon")
	var dlog strings.Builder
	d.Stderr = &dlog
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Process.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := e.run("health")
		if r.code == 0 {
			if !strings.Contains(r.stdout, "healthy: daemon (pid ") {
				t.Errorf("stdout: %s", r.stdout)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never passed: exit %d %s", r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	d.Process.Signal(syscall.SIGTERM)
	// A health check that took the daemon's lock would have made it exit
	// 11 at start-up ("another vigil daemon is running").
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon: %v\n%s", err, dlog.String())
	}
	if r := e.run("health"); r.code == 0 {
		t.Errorf("health passed after the daemon stopped: %s", r.stdout)
	}
}
