package logrotate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vigilops/vigil/runner"
)

// fileState is what the history keeps per live file.
type fileState struct {
	// FirstSeen starts the age clock of a file never rotated by vigil.
	FirstSeen   time.Time `json:"first_seen"`
	LastRotated time.Time `json:"last_rotated,omitzero"`
	Inode       uint64    `json:"inode,omitempty"` // of the live file after the rotation
	Rotated     string    `json:"rotated,omitempty"`
}

func stateKey(path string) string { return "file:" + path }

// rotated is one rotated copy of a live file.
type rotated struct {
	path       string
	n          int // counter suffix (0 for date suffixes)
	compressed bool
	mtime      time.Time
	size       int64
	dev, ino   uint64
}

// run is one run's working set.
type run struct {
	j     *Job
	p     Params
	rc    runner.RunContext
	log   *slog.Logger
	state runner.JobState
	dry   bool
	now   time.Time

	groups   map[string][]string // live file -> names of possible copies (reindex)
	problems []error
	stats    struct {
		files, rotated, compressed, deleted, archived, keptUnarchived, bytesRotated int64
		snapshot                                                                    string
	}
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	r := &run{j: j, p: j.p, rc: rc, log: rc.Log(), state: runner.StateOf(rc), dry: runner.IsDryRun(rc), now: j.now()}
	files, err := r.discover()
	if err != nil {
		return err
	}
	r.stats.files = int64(len(files))
	var rotatedAny bool
	if err := r.reindex(files); err != nil {
		return fmt.Errorf("logrotate: %w", err)
	}
	for i, f := range files {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("logrotate: %w", err)
		}
		rc.Progress(runner.Progress{Phase: "rotate", Done: int64(i), Total: int64(len(files)), Unit: "files"})
		ok, err := r.maybeRotate(ctx, f)
		if err != nil {
			r.problem(f, "logrotate.rotate_failed", err)
		}
		rotatedAny = rotatedAny || ok
	}
	if rotatedAny && r.p.Method == "create" {
		notified := r.notify(ctx)
		if notified && r.p.Compress != "none" && !r.p.DelayCompress && r.p.Settle > 0 && !r.dry {
			select {
			case <-time.After(r.p.Settle.D()):
			case <-ctx.Done():
				return fmt.Errorf("logrotate: %w", ctx.Err())
			}
		}
	}
	if err := r.reindex(files); err != nil {
		return fmt.Errorf("logrotate: %w", err)
	}
	for _, f := range files {
		if err := r.compressOld(ctx, f); err != nil {
			r.problem(f, "logrotate.compress_failed", err)
		}
	}
	if err := r.reindex(files); err != nil { // compression renamed copies
		return fmt.Errorf("logrotate: %w", err)
	}
	archived := map[string]bool{}
	if r.p.Archive {
		archived = r.archive(ctx, files)
	}
	for _, f := range files {
		if err := r.expire(f, archived); err != nil {
			r.problem(f, "logrotate.expire_failed", err)
		}
	}
	if r.p.Archive && !r.dry && r.reindex(files) == nil {
		r.forgetMarkers(ctx, files)
	}
	s := r.stats
	rc.SetSummary(runner.Summary{Files: s.files, BytesRead: s.bytesRotated, SnapshotID: s.snapshot, Extra: map[string]any{
		"rotated": s.rotated, "compressed": s.compressed, "deleted": s.deleted, "archived": s.archived,
		"kept_unarchived": s.keptUnarchived, "problems": len(r.problems), "dry_run": r.dry,
	}})
	if len(r.problems) == 0 {
		return nil
	}
	err = fmt.Errorf("logrotate: %d problem(s): %w", len(r.problems), errors.Join(r.problems...))
	if int64(len(r.problems)) < s.files || s.rotated > 0 {
		return runner.Partial(err)
	}
	return err
}

func (r *run) problem(path, code string, err error) {
	r.log.Error("logrotate problem", "path", path, "code", code, "err", err)
	r.problems = append(r.problems, err)
	r.rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: code, Subject: path, Message: err.Error()})
}

// discover expands the globs into live log files, leaving out rotated and
// compressed copies and our own temporary files.
func (r *run) discover() ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, g := range r.p.Paths {
		matches, err := filepath.Glob(g)
		if err != nil {
			return nil, fmt.Errorf("logrotate: glob %q: %w", g, err)
		}
		if len(matches) == 0 {
			r.log.Info("no file matches", "glob", g)
		}
		for _, m := range matches {
			if seen[m] {
				continue
			}
			seen[m] = true
			name := filepath.Base(m)
			if strings.HasSuffix(name, ".gz") || strings.HasSuffix(name, ".zst") || strings.HasSuffix(name, ".tmp") || counterName.MatchString(name) {
				continue
			}
			fi, err := os.Lstat(m)
			if err != nil || !fi.Mode().IsRegular() {
				continue // vanished, a directory, a symlink or a device: not ours to rotate
			}
			out = append(out, m)
		}
	}
	sort.Strings(out)
	if r.p.Suffix == "date" {
		// "app.log-20260301" is a rotated copy of "app.log" when both match.
		live := out[:0]
		for i, m := range out {
			if i > 0 && isDateCopy(out[:i], m) {
				continue
			}
			live = append(live, m)
		}
		out = live
	}
	return out, nil
}

var counterName = regexp.MustCompile(`\.[0-9]+$`)

func isDateCopy(before []string, m string) bool {
	for _, b := range before {
		if strings.HasPrefix(m, b+"-") {
			return true
		}
	}
	return false
}

// loadState reads a file's state; a corrupt entry is reported and treated
// as absent so that it only ever affects its own file.
func (r *run) loadState(ctx context.Context, path string) (fileState, bool) {
	var st fileState
	b, ok, err := r.state.Get(ctx, stateKey(path))
	if err != nil {
		r.log.Warn("state unreadable; treating the file as new", "path", path, "err", err)
		return st, false
	}
	if !ok {
		return st, false
	}
	if err := json.Unmarshal(b, &st); err != nil || st.FirstSeen.IsZero() && st.LastRotated.IsZero() {
		r.log.Warn("state corrupt; treating the file as new", "path", path, "err", err)
		return fileState{}, false
	}
	return st, true
}

func (r *run) saveState(ctx context.Context, path string, st fileState) error {
	if r.dry {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state of %s: %w", path, err)
	}
	if err := r.state.Put(ctx, stateKey(path), b); err != nil {
		return fmt.Errorf("save state of %s: %w", path, err)
	}
	return nil
}

// maybeRotate rotates path when a trigger fires; it reports whether it did.
func (r *run) maybeRotate(ctx context.Context, path string) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	st, known := r.loadState(ctx, path)
	if !known {
		st = fileState{FirstSeen: r.now}
		// Starting the age clock is not a rotation, but it must persist or
		// the age trigger never fires for files vigil has not rotated yet.
		if err := r.saveState(ctx, path, st); err != nil {
			r.log.Warn("cannot record first sight", "path", path, "err", err)
		}
	}
	reason := r.due(fi, st)
	if reason == "" {
		return false, nil
	}
	target, err := r.target(path)
	if err != nil {
		return false, err
	}
	if r.dry {
		r.log.Info("plan: rotate", "path", path, "to", target, "method", r.p.Method, "reason", reason, "size", fi.Size())
		r.stats.rotated++
		return true, nil
	}
	if r.p.Suffix == "counter" {
		if err := r.shift(path); err != nil {
			return false, err
		}
	}
	if r.p.Method == "copytruncate" {
		err = copyTruncate(ctx, path, target)
	} else {
		err = renameCreate(path, target, fi)
	}
	if err != nil {
		return false, fmt.Errorf("rotate %s: %w", path, err)
	}
	r.stats.rotated++
	r.stats.bytesRotated += fi.Size()
	r.log.Info("rotated", "path", path, "to", target, "reason", reason, "size", fi.Size())
	st.LastRotated, st.Rotated = r.now, filepath.Base(target)
	if nfi, err := os.Stat(path); err == nil {
		st.Inode = nfi.Sys().(*syscall.Stat_t).Ino
	}
	if err := r.saveState(ctx, path, st); err != nil {
		// The rotation stands; at worst the age trigger fires early next time.
		r.log.Error("rotated but the state was not saved", "path", path, "err", err)
	}
	return true, nil
}

// due says why path should rotate now, or "" if it should not.
func (r *run) due(fi fs.FileInfo, st fileState) string {
	size := fi.Size()
	if size == 0 && !r.p.RotateEmpty {
		return ""
	}
	if r.p.Size > 0 && size >= int64(r.p.Size) {
		return fmt.Sprintf("size %d >= %d", size, r.p.Size)
	}
	if r.p.Age > 0 && size >= int64(r.p.MinSize) {
		since := st.LastRotated
		if since.IsZero() {
			since = st.FirstSeen
		}
		if age := r.now.Sub(since); age >= r.p.Age.D() {
			return fmt.Sprintf("age %s >= %s", age.Round(time.Second), r.p.Age)
		}
	}
	return ""
}

// target is the name the live file's content gets.
func (r *run) target(path string) (string, error) {
	if r.p.Suffix == "counter" {
		return path + ".1", nil
	}
	base := path + "-" + r.now.Format(r.p.DateFormat)
	for i := 1; i < 1000; i++ {
		cand := base
		if i > 1 {
			cand = base + "-" + strconv.Itoa(i)
		}
		if !existsAny(cand) {
			return cand, nil
		}
	}
	return "", fmt.Errorf("rotate %s: 1000 rotations already carry the date %s", path, r.now.Format(r.p.DateFormat))
}

func existsAny(p string) bool {
	for _, ext := range []string{"", ".gz", ".zst"} {
		if _, err := os.Lstat(p + ext); err == nil {
			return true
		}
	}
	return false
}

// shift renames app.log.N to app.log.N+1, highest first, so .1 is free.
// A rename never replaces an existing file: a name clash (left by a crash
// or another tool) stops this file's rotation instead of losing a copy.
func (r *run) shift(path string) error {
	list, err := r.list(path)
	if err != nil {
		return err
	}
	sort.Slice(list, func(a, b int) bool { return list[a].n > list[b].n })
	for _, c := range list {
		ext := compressionExt(c.path)
		to := path + "." + strconv.Itoa(c.n+1) + ext
		if existsAny(path + "." + strconv.Itoa(c.n+1)) {
			return fmt.Errorf("rotate %s: cannot shift %s: %s already exists", path, filepath.Base(c.path), filepath.Base(to))
		}
		if err := os.Rename(c.path, to); err != nil {
			return fmt.Errorf("rotate %s: shift: %w", path, err)
		}
	}
	return nil
}

func compressionExt(p string) string {
	for _, ext := range []string{".gz", ".zst"} {
		if strings.HasSuffix(p, ext) {
			return ext
		}
	}
	return ""
}

// reindex reads each directory of files once and groups the entries by
// the live file they could be copies of; list then needs no directory
// read per file (1,000 logs in one directory would mean 1,000 reads per
// stage). Each stage reindexes, since stages rename and create copies;
// within a stage a file's operations touch only its own copies.
func (r *run) reindex(files []string) error {
	r.groups = map[string][]string{}
	byDir := map[string]map[string]bool{}
	for _, f := range files {
		dir, base := filepath.Split(f)
		if byDir[dir] == nil {
			byDir[dir] = map[string]bool{}
		}
		byDir[dir][base] = true
	}
	for dir, bases := range byDir {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("list rotated copies in %s: %w", dir, err)
		}
		for _, e := range entries {
			name := e.Name()
			stem := strings.TrimSuffix(name, compressionExt(name))
			if r.p.Suffix == "counter" {
				if i := strings.LastIndexByte(stem, '.'); i > 0 && bases[stem[:i]] {
					r.groups[dir+stem[:i]] = append(r.groups[dir+stem[:i]], name)
				}
				continue
			}
			// Date copies: the longest live name followed by "-".
			for i := len(stem) - 1; i > 0; i-- {
				if stem[i] == '-' && bases[stem[:i]] {
					r.groups[dir+stem[:i]] = append(r.groups[dir+stem[:i]], name)
					break
				}
			}
		}
	}
	return nil
}

// list returns path's rotated copies, newest first, from the last reindex.
func (r *run) list(path string) ([]rotated, error) {
	dir, base := filepath.Split(path)
	var out []rotated
	for _, name := range r.groups[path] {
		ext := compressionExt(name)
		stem := strings.TrimSuffix(name, ext)
		c := rotated{path: filepath.Join(dir, name), compressed: ext != ""}
		switch r.p.Suffix {
		case "counter":
			rest, ok := strings.CutPrefix(stem, base+".")
			if !ok {
				continue
			}
			n, err := strconv.Atoi(rest)
			if err != nil || n < 1 || strconv.Itoa(n) != rest {
				continue
			}
			c.n = n
		case "date":
			if !strings.HasPrefix(stem, base+"-") {
				continue
			}
		}
		fi, err := os.Lstat(c.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the reindex (compressed or expired)
		}
		if err != nil {
			return nil, fmt.Errorf("list rotated copies of %s: %w", path, err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		sys := fi.Sys().(*syscall.Stat_t)
		c.mtime, c.size, c.dev, c.ino = fi.ModTime(), fi.Size(), uint64(sys.Dev), sys.Ino
		out = append(out, c)
	}
	sort.SliceStable(out, func(a, b int) bool {
		if r.p.Suffix == "counter" {
			return out[a].n < out[b].n
		}
		if !out[a].mtime.Equal(out[b].mtime) {
			return out[a].mtime.After(out[b].mtime)
		}
		return out[a].path > out[b].path
	})
	return out, nil
}

// renameCreate moves the live file away and creates an empty one with the
// same mode and owner, so the writer can reopen its usual path.
func renameCreate(path, target string, fi fs.FileInfo) error {
	if existsAny(target) {
		return fmt.Errorf("%s already exists", target)
	}
	if err := os.Rename(path, target); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if errors.Is(err, fs.ErrExist) {
		return nil // the writer already reopened and created it
	}
	if err != nil {
		return fmt.Errorf("create new %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Chmod(fi.Mode().Perm()); err != nil { // the umask applied at create
		return fmt.Errorf("chmod new %s: %w", path, err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	if err := f.Chown(int(sys.Uid), int(sys.Gid)); err != nil && !(errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0) {
		return fmt.Errorf("chown new %s: %w", path, err)
	}
	return f.Close()
}

// copyTruncate copies the live file to target, then truncates it in place.
// Lines written between the end of the copy and the truncation are lost:
// that is the price of not needing the writer's cooperation.
func copyTruncate(ctx context.Context, path, target string) error {
	if existsAny(target) {
		return fmt.Errorf("%s already exists", target)
	}
	src, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+".tmp")
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	defer dst.Close()
	if _, err := io.Copy(dst, ctxReader{ctx, src}); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	if err := finishCopy(dst, fi); err != nil {
		return err
	}
	if err := os.Rename(tmp, target); err != nil {
		return err
	}
	if err := src.Truncate(0); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}

// finishCopy gives a copy its source's mode, owner and mtime, and makes
// it durable before it replaces anything.
func finishCopy(dst *os.File, src fs.FileInfo) error {
	if err := dst.Chmod(src.Mode().Perm()); err != nil {
		return err
	}
	sys := src.Sys().(*syscall.Stat_t)
	if err := dst.Chown(int(sys.Uid), int(sys.Gid)); err != nil && !(errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0) {
		return err
	}
	if err := dst.Sync(); err != nil {
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Chtimes(dst.Name(), src.ModTime(), src.ModTime())
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// notify tells writers to reopen: a signal to the pid file's process
// and/or the post-rotate program, once per run. It reports whether there
// was anyone to tell.
func (r *run) notify(ctx context.Context) bool {
	if r.p.PIDFile == "" && len(r.p.PostRotate) == 0 {
		r.log.Warn("no pid_file or post_rotate: writers keep writing to the rotated file until they reopen on their own")
		return false
	}
	if r.p.PIDFile != "" {
		if r.dry {
			r.log.Info("plan: signal", "pid_file", r.p.PIDFile, "signal", r.p.Signal)
		} else if err := signalPIDFile(r.p.PIDFile, signals[r.p.Signal]); err != nil {
			r.problem(r.p.PIDFile, "logrotate.signal_failed", err)
		} else {
			r.log.Info("signalled writer", "pid_file", r.p.PIDFile, "signal", r.p.Signal)
		}
	}
	if len(r.p.PostRotate) > 0 {
		if r.dry {
			r.log.Info("plan: run post_rotate", "argv", fmt.Sprintf("%q", r.p.PostRotate))
			return true
		}
		cmd := exec.CommandContext(ctx, r.p.PostRotate[0], r.p.PostRotate[1:]...)
		out, err := cmd.CombinedOutput()
		if len(out) > 0 {
			r.log.Info("post_rotate output", "output", strings.TrimSpace(string(out[:min(len(out), 4096)])))
		}
		if err != nil {
			r.problem(r.p.PostRotate[0], "logrotate.post_rotate_failed", fmt.Errorf("post_rotate %s: %w", r.p.PostRotate[0], err))
		}
	}
	return true
}

func signalPIDFile(pidFile string, sig syscall.Signal) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("signal writer: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("signal writer: pid file %s holds %q, not a pid", pidFile, strings.TrimSpace(string(b)))
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return fmt.Errorf("signal writer: pid %d from %s: %w", pid, pidFile, err)
	}
	return nil
}

// compressOld compresses rotated copies that are not compressed yet,
// except the newest one under delay_compress.
func (r *run) compressOld(ctx context.Context, path string) error {
	if r.p.Compress == "none" {
		return nil
	}
	list, err := r.list(path)
	if err != nil {
		return err
	}
	for i, c := range list {
		if c.compressed || (i == 0 && r.p.DelayCompress) {
			continue
		}
		if r.dry {
			r.log.Info("plan: compress", "path", c.path, "with", r.p.Compress)
			continue
		}
		if err := compressFile(ctx, c.path, r.p.Compress); err != nil {
			return err
		}
		r.stats.compressed++
		r.log.Info("compressed", "path", c.path, "with", r.p.Compress)
	}
	return nil
}

// expire deletes rotated copies beyond keep or older than max_age; with
// archive on, only those the repository holds.
func (r *run) expire(path string, archived map[string]bool) error {
	if r.p.Keep <= 0 && r.p.MaxAge <= 0 {
		return nil
	}
	list, err := r.list(path)
	if err != nil {
		return err
	}
	for i, c := range list {
		reason := ""
		switch {
		case r.p.Keep > 0 && i >= r.p.Keep:
			reason = fmt.Sprintf("more than keep %d", r.p.Keep)
		case r.p.MaxAge > 0 && r.now.Sub(c.mtime) > r.p.MaxAge.D():
			reason = fmt.Sprintf("older than max_age %s", r.p.MaxAge)
		default:
			continue
		}
		if r.p.Archive && !archived[markerKey(c)] {
			r.stats.keptUnarchived++
			r.log.Warn("kept: not archived yet", "path", c.path, "reason", reason)
			continue
		}
		if r.dry {
			r.log.Info("plan: delete", "path", c.path, "reason", reason)
			continue
		}
		if err := os.Remove(c.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("expire %s: %w", c.path, err)
		}
		r.stats.deleted++
		r.log.Info("deleted", "path", c.path, "reason", reason)
	}
	return nil
}
