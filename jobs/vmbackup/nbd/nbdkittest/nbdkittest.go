// Package nbdkittest starts a real nbdkit for tests on a unix socket in a
// temporary directory. Without nbdkit a test is skipped, except in CI
// (CI=true), where .ci/run installs it and its absence is a failure.
package nbdkittest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vigilops/vigil/jobs/vmbackup/nbd"
)

// Require returns nbdkit's path or ends the test: skipped locally, failed
// in CI.
func Require(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("nbdkit")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nbdkit is not installed; CI must install it (.ci/run installs the nbdkit package)")
		}
		t.Skip("nbdkit not installed (apt-get install nbdkit)")
	}
	return p
}

// Server is a running nbdkit.
type Server struct {
	Addr nbd.Address
	// Socket is the unix socket path, for nbd_url templates.
	Socket string
	cmd    *exec.Cmd
	stderr *lockedBuf
}

// Start runs `nbdkit -f -U SOCK ARGS...` (plugin, its parameters, filters)
// and waits for the socket. It is stopped when the test ends.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin := Require(t)
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "vigil-nbd-")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nbd.sock")
	cmd := exec.Command(bin, append([]string{"-f", "--exit-with-parent", "-U", sock}, args...)...)
	buf := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start nbdkit: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		os.RemoveAll(dir)
		if out := buf.String(); out != "" && t.Failed() {
			t.Logf("nbdkit output:\n%s", out)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("nbdkit %v exited: %s", args, buf.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbdkit did not create %s within 10 s: %s", sock, buf.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &Server{Addr: nbd.Address{Network: "unix", Addr: sock}, Socket: sock, cmd: cmd, stderr: buf}
}

// Output is what nbdkit printed so far.
func (s *Server) Output() string { return s.stderr.String() }

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
