package logrotate

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// TestMain lets the test binary act as a log writer process (see
// startWriter): a real process with its own file descriptor is the only
// honest way to test rename+signal against lost or duplicated lines.
func TestMain(m *testing.M) {
	if path := os.Getenv("LOGROTATE_TEST_WRITER"); path != "" {
		os.Exit(writerMain(path))
	}
	os.Exit(m.Run())
}

// writerMain appends numbered lines to path, reopens it on SIGHUP, and on
// SIGTERM writes how many lines it wrote to path+".count".
func writerMain(path string) int {
	hup := make(chan os.Signal, 1)
	term := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	signal.Notify(term, syscall.SIGTERM)
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return f
	}
	f := open()
	if err := os.WriteFile(path+".pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return 2
	}
	n := 0
	for {
		select {
		case <-hup:
			f.Close()
			f = open()
		case <-term:
			f.Close()
			os.WriteFile(path+".count", []byte(strconv.Itoa(n)), 0o644)
			return 0
		default:
			// One write per line, like a logger with line buffering.
			if _, err := fmt.Fprintf(f, "Mar  1 02:00:00 host app[1]: line %08d padding-padding-padding-padding\n", n); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			n++
			if n%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}
}

type writer struct {
	t    *testing.T
	path string
	proc *os.Process
}

func startWriter(t *testing.T, path string) *writer {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p, err := os.StartProcess(exe, []string{exe}, &os.ProcAttr{Env: append(os.Environ(), "LOGROTATE_TEST_WRITER="+path), Files: []*os.File{nil, os.Stdout, os.Stderr}})
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{t: t, path: path, proc: p}
	t.Cleanup(func() { p.Kill(); p.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(path + ".pid"); err == nil && len(b) > 0 {
			if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
				return w
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("writer did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the writer and returns how many lines it wrote.
func (w *writer) stop() int {
	w.t.Helper()
	w.proc.Signal(syscall.SIGTERM)
	w.proc.Wait()
	b, err := os.ReadFile(w.path + ".count")
	if err != nil {
		w.t.Fatal(err)
	}
	n, _ := strconv.Atoi(string(b))
	return n
}

// env runs jobs through a real runner with an in-memory history.
type env struct {
	t    *testing.T
	hist *runner.MemHistory
	now  time.Time
	repo func(ctx context.Context) (any, error)
}

func newEnv(t *testing.T) *env {
	return &env{t: t, hist: runner.NewMemHistory(), now: time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)}
}

func (e *env) build(with string) *Job {
	e.t.Helper()
	w, err := configs.ParseWith(with)
	if err != nil {
		e.t.Fatal(err)
	}
	j, err := New(configs.Job{Name: "rot", Kind: "logrotate", With: w})
	if err != nil {
		e.t.Fatal(err)
	}
	job := j.(*Job)
	job.now = func() time.Time { return e.now }
	return job
}

func (e *env) runner(j *Job) *runner.Runner {
	e.t.Helper()
	r, err := runner.New([]runner.Spec{{Name: "rot", Kind: "logrotate", Job: j}}, runner.Options{History: e.hist, OpenRepository: e.repo})
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// run runs j once and returns the run and its log text.
func (e *env) run(j *Job) (runner.Run, string) {
	e.t.Helper()
	run, err := e.runner(j).RunNow(context.Background(), "rot", runner.TriggerManual)
	if err != nil {
		e.t.Fatal(err)
	}
	logs, _ := e.hist.Logs(context.Background(), run.ID)
	var sb strings.Builder
	for _, l := range logs {
		fmt.Fprintf(&sb, "%s %s %s\n", l.Level, l.Message, l.Attrs)
	}
	return run, sb.String()
}

func (e *env) dryRun(j *Job) (runner.DryRunResult, string) {
	e.t.Helper()
	var buf bytes.Buffer
	res, err := e.runner(j).DryRun(context.Background(), "rot", slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		e.t.Fatal(err)
	}
	return res, buf.String()
}

func writeFile(t *testing.T, path string, size int) {
	t.Helper()
	line := []byte("Mar  1 02:00:00 host app[1]: something happened\n")
	var b []byte
	for len(b) < size {
		b = append(b, line...)
	}
	if err := os.WriteFile(path, b[:size], 0o640); err != nil {
		t.Fatal(err)
	}
}

// readAny reads a plain, gzip or zstd file.
func readAny(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".gz"):
		gz, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = gz
	case strings.HasSuffix(path, ".zst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// names lists a directory's file names (without our pid/count files).
func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		if !strings.HasSuffix(e.Name(), ".pid") && !strings.HasSuffix(e.Name(), ".count") {
			out = append(out, e.Name())
		}
	}
	return out
}

// lineNumbers returns the writer line numbers found in the given files, in order.
func lineNumbers(t *testing.T, files ...string) []int {
	t.Helper()
	var out []int
	for _, f := range files {
		sc := bufio.NewScanner(bytes.NewReader(readAny(t, f)))
		for sc.Scan() {
			_, num, ok := strings.Cut(sc.Text(), "line ")
			if !ok {
				t.Fatalf("%s: odd line %q", f, sc.Text())
			}
			n, err := strconv.Atoi(strings.Fields(num)[0])
			if err != nil {
				t.Fatalf("%s: odd line %q", f, sc.Text())
			}
			out = append(out, n)
		}
	}
	return out
}

func rotatedInOrder(t *testing.T, dir, base string) []string {
	t.Helper()
	// Oldest first: highest counter first.
	var out []string
	for i := 200; i >= 1; i-- {
		for _, ext := range []string{"", ".gz", ".zst"} {
			p := filepath.Join(dir, base+"."+strconv.Itoa(i)+ext)
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}
