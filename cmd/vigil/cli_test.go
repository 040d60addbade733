package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

var vigilBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vigil-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests also run the binary as an unprivileged user
	vigilBin = filepath.Join(dir, "vigil")
	out, err := exec.Command("go", "build", "-o", vigilBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build vigil: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// env is a repository and password for CLI runs.
type env struct {
	t       *testing.T
	repo    string
	pwFile  string
	cache   string
	extra   []string
	creds   *syscall.Credential
	timeout time.Duration
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, repo: filepath.Join(dir, "repo"), pwFile: pw, cache: filepath.Join(dir, "cache")}
}

func (e *env) cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, vigilBin, args...)
	c.Env = append(os.Environ(), "VIGIL_REPOSITORY="+e.repo, "VIGIL_PASSWORD_FILE="+e.pwFile, "VIGIL_KDF_N=1024", "VIGIL_PASSWORD=")
	c.Env = append(c.Env, "XDG_CACHE_HOME="+e.cache)
	c.Env = append(c.Env, e.extra...)
	if e.creds != nil {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: e.creds}
	}
	return c
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	to := e.timeout
	if to == 0 {
		to = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), to)
	defer cancel()
	c := e.cmd(ctx, args...)
	var so, se bytes.Buffer
	c.Stdout, c.Stderr = &so, &se
	err := c.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run vigil %v: %v", args, err)
	}
	return result{so.String(), se.String(), code}
}

func (e *env) must(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("vigil %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// summary returns the last JSON line with message_type "summary".
func summary(t *testing.T, out string) map[string]any {
	t.Helper()
	var last map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message_type"] == "summary" {
			last = m
		}
	}
	if last == nil {
		t.Fatalf("no summary line in %q", out)
	}
	return last
}

// corpus generates the shared bench corpus at a small size.
func corpus(t *testing.T) string {
	t.Helper()
	gen, err := filepath.Abs("../../../shared/bench/gen")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(gen, "main.go")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("corpus generator missing at %s", gen)
		}
		t.Skipf("corpus generator not beside the checkout (%s); set up ../shared to run this test", gen)
	}
	out := filepath.Join(t.TempDir(), "corpus")
	c := exec.Command("go", "run", ".", "-out", out, "-seed", "1", "-size", "16M", "-logs-mb", "4", "-files", "120")
	c.Dir = gen
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("generate corpus: %v\n%s", err, b)
	}
	return out
}

func sameTree(t *testing.T, a, b string) {
	t.Helper()
	if err := compareTrees(a, b); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.Walk(b, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	m := 0
	filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			m++
		}
		return nil
	})
	if n != m {
		t.Fatalf("restored %d files, source has %d", n, m)
	}
}

func TestCLICorpusRoundTrip(t *testing.T) {
	src := corpus(t)
	e := newEnv(t)
	e.must("init")
	imgs := []string{"vm-a.img", "vm-a-next.img", "vm-b.img"}
	var stored []float64
	for _, img := range imgs {
		r := e.must("backup", "--json", "--job", "vm", "--tag", img, filepath.Join(src, img))
		s := summary(t, r.stdout)
		stored = append(stored, s["bytes_stored"].(float64))
	}
	// The next night changes 2 % of 64 KiB blocks: far less than the first
	// night is stored again (about 7 % at 2 GiB; on this 16 MiB corpus the
	// trees and the few rewritten chunks weigh more, about 19 %). vm-b shares
	// its template with vm-a.
	if stored[1] > 0.3*stored[0] {
		t.Errorf("next night stored %.0f bytes, first %.0f: dedup across snapshots too weak", stored[1], stored[0])
	}
	if stored[2] > 0.85*stored[0] {
		t.Errorf("clone stored %.0f bytes, first %.0f: dedup across files too weak", stored[2], stored[0])
	}
	r := e.must("backup", "--json", "--job", "logs", filepath.Join(src, "logs-day1"))
	day1 := summary(t, r.stdout)
	r = e.must("backup", "--json", "--job", "logs", filepath.Join(src, "logs-day2"))
	_ = day1

	// Every snapshot restores byte-exact.
	r = e.must("snapshots", "--json")
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("snapshots --json line %q: %v", line, err)
		}
		ids = append(ids, m["id"].(string))
	}
	if len(ids) != 5 {
		t.Fatalf("%d snapshots, want 5", len(ids))
	}
	for i, img := range imgs {
		target := t.TempDir()
		e.must("restore", ids[i][:10]+":"+filepath.Join(src, img), "--target", target)
		a, _ := os.ReadFile(filepath.Join(src, img))
		b, err := os.ReadFile(filepath.Join(target, img))
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("%s not restored byte-exact (%v)", img, err)
		}
	}
	target := t.TempDir()
	e.must("restore", "latest", "--target", target)
	sameTree(t, filepath.Join(src, "logs-day2"), repo.TargetPath(target, filepath.Join(src, "logs-day2")))

	e.must("check", "--read-data")
	r = e.must("ls", "latest", filepath.Join(src, "logs-day2"))
	if !strings.Contains(r.stdout, "logs-day2/") {
		t.Fatalf("ls output: %s", r.stdout)
	}
	// Retention: keep the last of each job; prune frees the rest.
	r = e.must("forget", "--keep-last", "1", "--group-by", "job", "--prune")
	if !strings.Contains(r.stdout, "keep") || !strings.Contains(r.stdout, "(last)") {
		t.Fatalf("forget does not say why it keeps: %s", r.stdout)
	}
	r = e.must("snapshots", "--json")
	if n := len(strings.Split(strings.TrimSpace(r.stdout), "\n")); n != 2 {
		t.Fatalf("after forget: %d snapshots, want 2", n)
	}
	e.must("check", "--read-data")
	target = t.TempDir()
	e.must("restore", "latest", "--target", target)
	sameTree(t, filepath.Join(src, "logs-day2"), repo.TargetPath(target, filepath.Join(src, "logs-day2")))
	st := summary(t, e.must("stats", "--json").stdout)
	if st["stats"].(map[string]any)["snapshots"].(float64) != 2 {
		t.Fatalf("stats: %v", st)
	}
}

func TestCLIExitCodes(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644)

	r := e.run("snapshots")
	if r.code != exitNoRepo || !strings.Contains(r.stderr, "no repository") {
		t.Fatalf("missing repo: exit %d, %q", r.code, r.stderr)
	}
	e.must("init")
	if r := e.run("init"); r.code != exitError || !strings.Contains(r.stderr, "already") {
		t.Fatalf("second init: exit %d %q", r.code, r.stderr)
	}
	bad := *e
	bad.pwFile = filepath.Join(t.TempDir(), "bad")
	os.WriteFile(bad.pwFile, []byte("wrong"), 0o600)
	if r := bad.run("snapshots"); r.code != exitWrongPass || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("wrong password: exit %d, %q", r.code, r.stderr)
	}
	if r := e.run("restore", "latest"); r.code != exitUsage {
		t.Fatalf("restore without --target: exit %d", r.code)
	}
	if r := e.run("frobnicate"); r.code != exitUsage {
		t.Fatalf("unknown command: exit %d", r.code)
	}
	if r := e.run("backup", "--chunking", "huge", src); r.code != exitError || !strings.Contains(r.stderr, "chunking profile") {
		t.Fatalf("bad profile: exit %d %q", r.code, r.stderr)
	}

	// A live lock held by another process (this test) blocks with exit 11.
	st, _ := local.Open(e.repo, false)
	rp, err := repo.Open(context.Background(), st, "correct horse", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lock, err := rp.Lock(context.Background(), true, "prune", 0)
	if err != nil {
		t.Fatal(err)
	}
	r = e.run("backup", src)
	lock.Unlock()
	if r.code != exitLocked || !strings.Contains(r.stderr, "locked") {
		t.Fatalf("locked: exit %d %q", r.code, r.stderr)
	}
	e.must("backup", src)
}

// asNobody makes the binary drop root so that file permissions apply.
func asNobody(t *testing.T, e *env, dirs ...string) {
	if os.Geteuid() != 0 {
		return
	}
	e.creds = &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, d := range dirs {
		filepath.Walk(d, func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				os.Chown(p, 65534, 65534)
			}
			return nil
		})
	}
	for _, d := range dirs {
		for p := d; p != "/" && p != "."; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err == nil && fi.Mode().Perm()&0o005 != 0o005 {
				os.Chmod(p, fi.Mode().Perm()|0o005)
			}
		}
	}
}

func TestCLIUnreadableSourceIsPartial(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "ok"), []byte("fine"), 0o644)
	os.WriteFile(filepath.Join(src, "secret"), []byte("no"), 0o644)
	e.must("init")
	asNobody(t, e, filepath.Dir(e.repo), src, filepath.Dir(e.pwFile))
	os.Chown(filepath.Join(src, "secret"), 0, 0)
	os.Chmod(filepath.Join(src, "secret"), 0o000)
	r := e.run("backup", src)
	if r.code != exitPartial || !strings.Contains(r.stderr, "secret") || !strings.Contains(r.stderr, "permission denied") {
		t.Fatalf("unreadable file: exit %d, stderr %q", r.code, r.stderr)
	}
	target := t.TempDir()
	asNobody(t, e, target)
	e.must("restore", "latest", "--target", target)
	if b, err := os.ReadFile(repo.TargetPath(target, filepath.Join(src, "ok"))); err != nil || string(b) != "fine" {
		t.Fatalf("readable file not in partial snapshot: %v", err)
	}
}

func TestCLIRestoreDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the disk-full test mounts a small tmpfs and needs root")
		}
		t.Skip("needs root to mount a small tmpfs; run as root or in CI")
	}
	e := newEnv(t)
	src := t.TempDir()
	big := make([]byte, 12<<20)
	for i := range big {
		big[i] = byte(i*7 + i/4096)
	}
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o644)
	e.must("init")
	e.must("backup", src)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	r := e.run("restore", "latest", "--target", mnt)
	if r.code != exitError || !strings.Contains(r.stderr, "no space left on device") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("disk full: exit %d, stderr %q", r.code, r.stderr)
	}
	// The repository is untouched by a failed restore.
	e.must("check", "--read-data")
}

func TestCLICrashSafety(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	// Enough data for several 1 MiB packs.
	for i := 0; i < 6; i++ {
		b := make([]byte, 3<<20)
		for j := range b {
			b[j] = byte((j * (i + 3)) ^ (j >> 9) ^ i)
		}
		os.WriteFile(filepath.Join(src, fmt.Sprintf("f%d", i)), b, 0o644)
	}
	e.must("init", "--pack-size", "1")
	e.must("backup", src)
	kill := func(point string, args ...string) {
		t.Helper()
		k := *e
		k.extra = []string{"VIGIL_TEST_CRASH_AT=" + point}
		r := k.run(args...)
		if r.code != -1 {
			t.Fatalf("%s: process was not killed (exit %d) %s", point, r.code, r.stderr)
		}
	}
	for _, point := range []string{"backup:pack-uploaded", "backup:before-index", "backup:before-snapshot"} {
		os.WriteFile(filepath.Join(src, "new-"+strings.ReplaceAll(point, ":", "-")), bytes.Repeat([]byte(point), 300000), 0o644)
		kill(point, "backup", src)
		// The dead process's lock must not block; the repository must verify.
		e.must("check", "--read-data")
		e.must("backup", src)
	}
	// A kill at a random moment, not only at the named points.
	for _, delay := range []time.Duration{30 * time.Millisecond, 120 * time.Millisecond} {
		os.WriteFile(filepath.Join(src, fmt.Sprintf("late-%d", delay)), bytes.Repeat([]byte{byte(delay)}, 5<<20), 0o644)
		c := e.cmd(context.Background(), "backup", "--parent", "none", src)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		c.Process.Kill()
		c.Wait()
		e.must("check", "--read-data")
	}
	for _, point := range []string{"prune:repacked", "prune:indexed", "prune:deleted-index", "prune:deleted-pack"} {
		// Make something to prune: a new snapshot, then forget older ones.
		os.WriteFile(filepath.Join(src, "f0"), bytes.Repeat([]byte(point), 400000), 0o644)
		e.must("backup", src)
		e.must("forget", "--keep-last", "1")
		kill(point, "prune")
		r := e.must("check", "--read-data")
		_ = r
		e.must("backup", src)
		target := t.TempDir()
		e.must("restore", "latest", "--target", target)
		sameTree(t, src, repo.TargetPath(target, src))
	}
	// After all that, a clean prune leaves no warnings.
	e.must("prune")
	r := e.must("check", "--read-data")
	if strings.Contains(r.stdout, "warning") {
		t.Fatalf("warnings after final prune: %s", r.stdout)
	}
}
