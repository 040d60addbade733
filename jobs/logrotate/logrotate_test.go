package logrotate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// TestRenameCreateSignalWithLiveWriter: a real process appends numbered
// lines while the job rotates its file five times; every line is found
// exactly once across the rotated copies and the live file, in order,
// and the new file keeps the old owner and mode.
func TestRenameCreateSignalWithLiveWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	e := newEnv(t)
	w := startWriter(t, path)
	if err := os.Chmod(path, 0o604); err != nil { // an unusual mode, to see it kept
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	j := e.build(fmt.Sprintf(`{paths: [%s/*.log], size: 1, keep: 0, compress: gzip, delay_compress: true, pid_file: %s, settle: 50ms}`, dir, path+".pid"))
	for i := range 5 {
		time.Sleep(30 * time.Millisecond)
		run, log := e.run(j)
		if run.Status != runner.StatusSuccess || run.Summary.Extra["rotated"] != int64(1) {
			t.Fatalf("rotation %d: %+v\n%s", i, run, log)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o604 || fi.Sys().(*syscall.Stat_t).Uid != before.Sys().(*syscall.Stat_t).Uid || fi.Sys().(*syscall.Stat_t).Gid != before.Sys().(*syscall.Stat_t).Gid {
			t.Errorf("new file mode %v owner %d:%d, want %v %d:%d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid, fi.Sys().(*syscall.Stat_t).Gid,
				before.Mode().Perm(), before.Sys().(*syscall.Stat_t).Uid, before.Sys().(*syscall.Stat_t).Gid)
		}
	}
	time.Sleep(30 * time.Millisecond)
	written := w.stop()
	files := append(rotatedInOrder(t, dir, "app.log"), path)
	if len(files) != 6 {
		t.Fatalf("files = %v", names(t, dir))
	}
	if !strings.HasSuffix(files[0], ".5.gz") || !strings.HasSuffix(files[4], ".1") {
		t.Errorf("compression not delayed by one rotation: %v", files)
	}
	got := lineNumbers(t, files...)
	if len(got) != written {
		t.Errorf("found %d lines, the writer wrote %d", len(got), written)
	}
	for i, n := range got {
		if n != i {
			t.Fatalf("line %d is number %d: lost or duplicated lines around a rotation", i, n)
		}
	}
	for _, f := range files[:5] {
		fi, _ := os.Stat(f)
		if fi.Size() == 0 {
			t.Errorf("%s is empty: the writer did not keep writing between rotations", f)
		}
	}
}

// TestCopyTruncateWithLiveWriter documents copytruncate's loss: lines
// written between the copy and the truncation are gone. Nothing is ever
// duplicated and what survives is in order; the test reports how many
// lines were lost.
func TestCopyTruncateWithLiveWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	e := newEnv(t)
	w := startWriter(t, path)
	j := e.build(fmt.Sprintf(`{paths: [%s], size: 1, method: copytruncate, compress: none}`, path))
	for i := range 5 {
		time.Sleep(30 * time.Millisecond)
		if run, log := e.run(j); run.Status != runner.StatusSuccess {
			t.Fatalf("rotation %d: %+v\n%s", i, run, log)
		}
	}
	time.Sleep(30 * time.Millisecond)
	written := w.stop()
	got := lineNumbers(t, append(rotatedInOrder(t, dir, "app.log"), path)...)
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("line %d after %d: duplicated or reordered", got[i], got[i-1])
		}
	}
	if len(got) > written || got[len(got)-1] >= written {
		t.Fatalf("found %d lines ending at %d, writer wrote %d", len(got), got[len(got)-1], written)
	}
	t.Logf("copytruncate lost %d of %d lines over 5 rotations (expected: lines written between copy and truncate)", written-len(got), written)
}

func TestSizeAndAgeTriggersOnInjectedClock(t *testing.T) {
	dir := t.TempDir()
	big, small, tiny, empty := filepath.Join(dir, "big.log"), filepath.Join(dir, "small.log"), filepath.Join(dir, "tiny.log"), filepath.Join(dir, "empty.log")
	writeFile(t, big, 4096)
	writeFile(t, small, 500)
	writeFile(t, tiny, 10)
	writeFile(t, empty, 0)
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`{paths: ["%s/*.log"], size: 1KiB, age: 1d, min_size: 100, compress: none}`, dir))
	rotatedSet := func() []string {
		var out []string
		for _, n := range names(t, dir) {
			if strings.HasSuffix(n, ".1") {
				out = append(out, n)
			}
		}
		return out
	}
	if run, log := e.run(j); run.Summary.Extra["rotated"] != int64(1) {
		t.Fatalf("first run: %+v\n%s", run, log)
	}
	if got := rotatedSet(); !reflect.DeepEqual(got, []string{"big.log.1"}) {
		t.Errorf("after the first run (size trigger only; age clocks start): %v", got)
	}
	e.now = e.now.Add(23 * time.Hour)
	e.run(j)
	if got := rotatedSet(); len(got) != 1 {
		t.Errorf("rotated before a day passed: %v", got)
	}
	e.now = e.now.Add(time.Hour)
	e.run(j)
	// small.log is a day old and above min_size; tiny.log is under
	// min_size; empty.log is empty; big.log (new, empty) is not due.
	if got := rotatedSet(); !reflect.DeepEqual(got, []string{"big.log.1", "small.log.1"}) {
		t.Errorf("after a day: %v", got)
	}
	// The age clock restarts at each rotation.
	writeFile(t, small, 500)
	e.now = e.now.Add(12 * time.Hour)
	e.run(j)
	if _, err := os.Stat(small + ".2"); err == nil {
		t.Error("small.log rotated again 12h after its last rotation")
	}
	e.now = e.now.Add(12 * time.Hour)
	e.run(j)
	if _, err := os.Stat(small + ".2"); err != nil {
		t.Errorf("small.log not rotated a day after its last rotation: %v", names(t, dir))
	}
}

func TestKeepMaxAgeAndDelayedCompression(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`{paths: [%s], size: 1, keep: 3, delay_compress: true}`, path))
	for i := range 5 {
		if err := os.WriteFile(path, []byte(fmt.Sprintf("generation %d\n", i)), 0o640); err != nil {
			t.Fatal(err)
		}
		if run, log := e.run(j); run.Status != runner.StatusSuccess {
			t.Fatalf("%+v\n%s", run, log)
		}
		if i == 0 {
			if got := names(t, dir); !reflect.DeepEqual(got, []string{"app.log", "app.log.1"}) {
				t.Errorf("after one rotation (compression delayed): %v", got)
			}
		}
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"app.log", "app.log.1", "app.log.2.gz", "app.log.3.gz"}) {
		t.Fatalf("after five rotations with keep 3: %v", got)
	}
	for i, want := range map[int]string{1: "generation 4\n", 2: "generation 3\n", 3: "generation 2\n"} {
		p := filepath.Join(dir, fmt.Sprintf("app.log.%d", i))
		if i > 1 {
			p += ".gz"
		}
		if got := string(readAny(t, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	// max_age: the oldest copy's mtime is 10 days back.
	j2 := e.build(fmt.Sprintf(`{paths: [%s], size: 1GiB, max_age: 7d, delay_compress: true}`, path))
	old := e.now.Add(-10 * 24 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "app.log.3.gz"), old, old); err != nil {
		t.Fatal(err)
	}
	run, _ := e.run(j2)
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"app.log", "app.log.1", "app.log.2.gz"}) || run.Summary.Extra["deleted"] != int64(1) {
		t.Errorf("after max_age: %v (%+v)", got, run.Summary)
	}
	// Compression keeps the mtime, so max_age still sees the real age.
	fi, _ := os.Stat(filepath.Join(dir, "app.log.2.gz"))
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("compressed copy mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestDateSuffixAndZstd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	e := newEnv(t)
	// A glob that also matches the rotated copies: they must not be
	// mistaken for live logs.
	j := e.build(fmt.Sprintf(`{paths: ["%s/*"], size: 1, suffix: date, compress: zstd}`, dir))
	writeFile(t, path, 100)
	e.run(j)
	writeFile(t, path, 200)
	e.run(j)
	e.now = e.now.Add(24 * time.Hour)
	writeFile(t, path, 300)
	run, log := e.run(j)
	want := []string{"app.log", "app.log-20260301-2.zst", "app.log-20260301.zst", "app.log-20260302.zst"}
	if got := names(t, dir); !reflect.DeepEqual(got, want) {
		t.Fatalf("names = %v, want %v\n%s", got, want, log)
	}
	if run.Summary.Files != 1 {
		t.Errorf("live files = %d, want 1 (rotated copies were taken for logs)", run.Summary.Files)
	}
	if n := len(readAny(t, filepath.Join(dir, "app.log-20260301-2.zst"))); n != 200 {
		t.Errorf("second rotation holds %d bytes, want 200", n)
	}
}

// TestCorruptStateDoesNotBlockOthers: a garbage state entry is reported
// and treated as a new file; the other file rotates normally and the
// state is rewritten only after the rotation.
func TestCorruptStateDoesNotBlockOthers(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	writeFile(t, a, 2000)
	writeFile(t, b, 2000)
	e := newEnv(t)
	ctx := context.Background()
	e.hist.PutState(ctx, "rot", stateKey(a), []byte("{not json"))
	j := e.build(fmt.Sprintf(`{paths: ["%s/*.log"], size: 1KiB}`, dir))
	run, log := e.run(j)
	if run.Status != runner.StatusSuccess || run.Summary.Extra["rotated"] != int64(2) {
		t.Fatalf("%+v\n%s", run, log)
	}
	if !strings.Contains(log, "state corrupt") {
		t.Errorf("corrupt state not reported:\n%s", log)
	}
	v, _, _ := e.hist.GetState(ctx, "rot", stateKey(a))
	if !bytes.Contains(v, []byte(`"last_rotated":"2026-03-01T02:00:00Z"`)) {
		t.Errorf("state after rotation = %s", v)
	}
}

// TestStateWrittenOnlyAfterSuccess: a rotation that fails (a name clash
// the job refuses to overwrite) leaves the previous state as it was.
func TestStateWrittenOnlyAfterSuccess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	writeFile(t, path, 2000)
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`{paths: [%s], size: 1KiB, suffix: date, date_format: "2006"}`, path))
	for i := 1; i < 1000; i++ { // every name for this year is taken
		name := path + "-2026"
		if i > 1 {
			name += fmt.Sprintf("-%d", i)
		}
		os.WriteFile(name+".gz", nil, 0o644)
	}
	ctx := context.Background()
	e.hist.PutState(ctx, "rot", stateKey(path), []byte(`{"first_seen":"2026-01-01T00:00:00Z"}`))
	run, _ := e.run(j)
	if run.Status != runner.StatusFailed {
		t.Errorf("status = %s, want failed", run.Status)
	}
	v, _, _ := e.hist.GetState(ctx, "rot", stateKey(path))
	if string(v) != `{"first_seen":"2026-01-01T00:00:00Z"}` {
		t.Errorf("state changed by a failed rotation: %s", v)
	}
	if fi, _ := os.Stat(path); fi.Size() != 2000 {
		t.Error("live file touched by a failed rotation")
	}
	fs, _ := e.hist.Findings(ctx, run.ID)
	if len(fs) != 1 || fs[0].Code != "logrotate.rotate_failed" || fs[0].Subject != path {
		t.Errorf("findings = %+v", fs)
	}
}

func newRepo(t *testing.T) *repo.Repository {
	t.Helper()
	st, err := local.Open(filepath.Join(t.TempDir(), "repo"), true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), st, "pw", repo.InitOptions{PackSize: 1 << 20},
		repo.Options{KDF: repo.KDFParams{N: 1 << 10, R: 8, P: 1}, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestArchiveThenDelete: with archive on, retention deletes a rotated copy
// only once the repository holds it. While the repository is unavailable
// nothing is deleted; once it is back, the backlog is archived and expired.
func TestArchiveThenDelete(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	e := newEnv(t)
	down := errors.New("repository unreachable")
	e.repo = func(context.Context) (any, error) { return nil, down }
	j := e.build(fmt.Sprintf(`{paths: [%s], size: 1, keep: 1, archive: true}`, path))
	for i := range 3 {
		os.WriteFile(path, []byte(fmt.Sprintf("generation %d\n", i)), 0o640)
		run, log := e.run(j)
		if run.Status != runner.StatusPartial || !strings.Contains(run.Error, "repository unreachable") {
			t.Fatalf("run %d with the repository down: %+v\n%s", i, run, log)
		}
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"app.log", "app.log.1.gz", "app.log.2.gz", "app.log.3.gz"}) {
		t.Fatalf("copies deleted without an archive: %v", got)
	}
	r := newRepo(t)
	e.repo = func(context.Context) (any, error) { return r, nil }
	os.WriteFile(path, []byte("generation 3\n"), 0o640)
	run, log := e.run(j)
	if run.Status != runner.StatusSuccess || run.Summary.Extra["archived"] != int64(4) || run.Summary.Extra["deleted"] != int64(3) || run.Summary.SnapshotID == "" {
		t.Fatalf("run with the repository back: %+v\n%s", run, log)
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"app.log", "app.log.1.gz"}) {
		t.Errorf("after archiving: %v", got)
	}
	// The snapshot holds all four generations.
	snaps, err := r.Snapshots(context.Background(), nil)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots = %v, %v", snaps, err)
	}
	if !slices.Contains(snaps[0].Tags, "logrotate") || snaps[0].Job != "rot" || len(snaps[0].Paths) != 4 {
		t.Errorf("snapshot = %+v", snaps[0])
	}
	// Next rotation: the archived .1 shifts to .2 (marker follows the
	// inode), the new .1 is archived, then .2 is deleted.
	os.WriteFile(path, []byte("generation 4\n"), 0o640)
	run, log = e.run(j)
	if run.Summary.Extra["archived"] != int64(1) || run.Summary.Extra["deleted"] != int64(1) {
		t.Errorf("second archive run: %+v\n%s", run.Summary, log)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`{paths: [%s], size: 1, keep: 1, pid_file: /nonexistent.pid}`, path))
	writeFile(t, path, 100)
	os.WriteFile(path+".1", []byte("x"), 0o640)
	os.WriteFile(path+".2.gz", []byte("x"), 0o640)
	res, out := e.dryRun(j)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	for _, want := range []string{"plan: rotate", "to=" + path + ".1", "plan: signal", "plan: compress", "plan: delete"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if got := names(t, dir); !reflect.DeepEqual(got, []string{"app.log", "app.log.1", "app.log.2.gz"}) {
		t.Errorf("dry run changed files: %v", got)
	}
	if st, _ := e.hist.ListState(context.Background(), "rot", ""); len(st) != 0 {
		t.Errorf("dry run wrote state: %q", st)
	}
}

func TestPostRotateArgvWithoutShell(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	marker := filepath.Join(dir, "reopened; echo injected")
	writeFile(t, path, 100)
	e := newEnv(t)
	j := e.build(fmt.Sprintf(`{paths: [%s], size: 1, compress: none, post_rotate: [/usr/bin/touch, "%s"]}`, path, marker))
	if run, log := e.run(j); run.Status != runner.StatusSuccess {
		t.Fatalf("%+v\n%s", run, log)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("post_rotate did not run with its argument as one word: %v", names(t, dir))
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ with, want string }{
		{`{size: 1}`, "paths"},
		{`{paths: [rel/*.log], size: 1}`, "not absolute"},
		{`{paths: [/x]}`, "set size and/or age"},
		{`{paths: [/x], size: 1, compress: bz2}`, "compress"},
		{`{paths: [/x], size: 1, method: move}`, "method"},
		{`{paths: [/x], size: 1, signal: KILL}`, "signal"},
		{`{paths: [/x], size: 1, method: copytruncate, pid_file: /run/x.pid}`, "copytruncate"},
		{`{paths: [/x], size: 1, suffix: date, date_format: "day"}`, "date_format"},
	} {
		w, _ := configs.ParseWith(c.with)
		_, err := New(configs.Job{Name: "x", Kind: "logrotate", With: w})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to mention %q", c.with, err, c.want)
		}
	}
}

// BenchmarkRotate1000Files: one run rotating and gzipping 1,000 files.
func BenchmarkRotate1000Files(b *testing.B) {
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		for i := range 1000 {
			os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%04d.log", i)), bytes.Repeat([]byte("Mar  1 02:00:00 host app[1]: line\n"), 100), 0o640)
		}
		w, _ := configs.ParseWith(fmt.Sprintf(`{paths: ["%s/*.log"], size: 1, keep: 3}`, dir))
		j, _ := New(configs.Job{Name: "rot", Kind: "logrotate", With: w})
		r, _ := runner.New([]runner.Spec{{Name: "rot", Job: j}}, runner.Options{History: runner.NewMemHistory()})
		b.StartTimer()
		run, err := r.RunNow(context.Background(), "rot", runner.TriggerManual)
		if err != nil || run.Summary.Extra["rotated"] != int64(1000) {
			b.Fatalf("%+v %v", run, err)
		}
	}
}
