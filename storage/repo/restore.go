package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
)

// RestoreOptions describe a restore.
type RestoreOptions struct {
	Target string
	// Path selects a file or directory inside the snapshot ("/home/ana");
	// a directory's contents are restored directly into Target.
	Path     string
	Includes []string // patterns on the path inside the snapshot or the base name
	Excludes []string
	Progress func(RestoreProgress)
}

// RestoreProgress is reported while a restore runs.
type RestoreProgress struct {
	Files      int64 `json:"files_done"`
	BytesDone  int64 `json:"bytes_done"`
	BytesTotal int64 `json:"bytes_total"`
	Errors     int64 `json:"errors"`
}

// RestoreResult lists what was restored; Errors are files that failed (the
// rest restored).
type RestoreResult struct {
	Files  int
	Dirs   int
	Bytes  int64
	Errors []FileError
}

type restoreFile struct {
	rel    string
	node   *Node
	f      *os.File
	failed error
	mu     sync.Mutex
}

type blobTarget struct {
	file   *restoreFile
	offset int64
}

type plannedBlob struct {
	entry   PackedBlob
	targets []blobTarget
}

type restorer struct {
	r      *Repository
	idx    *MasterIndex
	root   *os.Root
	opts   RestoreOptions
	res    RestoreResult
	mu     sync.Mutex
	links  map[[2]uint64]string
	dirs   []dirMeta
	batch  []*restoreFile
	plan   map[ID]map[BlobHandle]*plannedBlob
	planB  int64
	done   atomic.Int64
	total  int64
	nfiles atomic.Int64
	nerr   atomic.Int64
	// indexDamaged adds a hint to "missing from the index" errors.
	indexDamaged bool
}

type dirMeta struct {
	rel  string
	node *Node
}

// restoreBatchBytes bounds how much file data one batch plans (and how many
// files it holds open).
const (
	restoreBatchBytes = 4 << 30
	restoreBatchFiles = 512
)

// Restore writes a snapshot (or part of it) below opts.Target. Nothing is
// ever written outside Target: entries are opened through an os.Root, and
// tree names are validated when decoded. Every blob is authenticated and its
// hash checked before it is written. Files whose data cannot be read are
// removed and listed in the result; the others are restored.
func (r *Repository) Restore(ctx context.Context, sn *Snapshot, opts RestoreOptions) (*RestoreResult, error) {
	if opts.Target == "" {
		return nil, fmt.Errorf("restore: no target directory")
	}
	for _, p := range append(append([]string{}, opts.Includes...), opts.Excludes...) {
		if _, err := path.Match(p, "x"); err != nil {
			return nil, fmt.Errorf("restore: pattern %q: %w", p, err)
		}
	}
	lock, err := r.Lock(ctx, false, "restore", 0)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer lock.Unlock()
	// A damaged index object must not stop the restore of everything else:
	// files whose blobs it listed fail one by one, with a hint.
	idx, damaged, err := r.LoadIndexTolerant(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer idx.Close()
	if err := os.MkdirAll(opts.Target, 0o700); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	root, err := os.OpenRoot(opts.Target)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer root.Close()
	rs := &restorer{r: r, idx: idx, root: root, opts: opts, links: map[[2]uint64]string{}, indexDamaged: len(damaged) > 0}

	start, startNode, err := rs.resolve(ctx, sn, opts.Path)
	if err != nil && rs.indexDamaged {
		return nil, fmt.Errorf("restore: %w (an index object is damaged: run vigil repair index)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if opts.Progress != nil {
		defer every(500*time.Millisecond, func() { opts.Progress(rs.progress()) })()
	}
	rs.resetPlan()
	if startNode != nil {
		// A single file selected.
		err = rs.visit(ctx, startNode.Name, "/"+startNode.Name, startNode)
	} else {
		err = rs.walk(ctx, start, "", strings.TrimSuffix(cleanSnapPath(opts.Path), "/"))
	}
	if err == nil {
		err = rs.flush(ctx)
	}
	rs.closeAll()
	if err != nil && rs.indexDamaged && ctx.Err() == nil {
		return nil, fmt.Errorf("restore: %w (an index object is damaged: run vigil repair index)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	// Directory metadata last, deepest first, so writing children does not
	// reset a directory's mtime.
	for i := len(rs.dirs) - 1; i >= 0; i-- {
		rs.setMeta(rs.dirs[i].rel, rs.dirs[i].node)
	}
	return &rs.res, nil
}

func (rs *restorer) progress() RestoreProgress {
	return RestoreProgress{Files: rs.nfiles.Load(), BytesDone: rs.done.Load(), BytesTotal: rs.total, Errors: rs.nerr.Load()}
}

func cleanSnapPath(p string) string {
	if p == "" {
		return "/"
	}
	return path.Clean("/" + p)
}

// resolve finds the tree (or single file node) that opts.Path names.
func (rs *restorer) resolve(ctx context.Context, sn *Snapshot, p string) (ID, *Node, error) {
	cur := sn.Tree
	p = cleanSnapPath(p)
	if p == "/" {
		return cur, nil, nil
	}
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i, part := range parts {
		t, err := rs.r.LoadTree(ctx, rs.idx, cur)
		if err != nil {
			return ID{}, nil, err
		}
		n := t.Find(part)
		if n == nil {
			return ID{}, nil, fmt.Errorf("path %s not found in snapshot %s", p, sn.ID.Short())
		}
		if n.Type != NodeDir {
			if i == len(parts)-1 {
				return ID{}, n, nil
			}
			return ID{}, nil, fmt.Errorf("path %s: %s is not a directory", p, part)
		}
		cur = *n.Subtree
	}
	return cur, nil, nil
}

func (rs *restorer) selected(snapPath, name string, isDir bool) bool {
	match := func(pats []string) bool {
		for _, p := range pats {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
			if ok, _ := path.Match(p, snapPath); ok {
				return true
			}
			// A pattern naming a directory selects everything below it.
			if strings.HasPrefix(snapPath, strings.TrimSuffix(p, "/")+"/") {
				return true
			}
		}
		return false
	}
	if match(rs.opts.Excludes) {
		return false
	}
	if len(rs.opts.Includes) == 0 || isDir {
		return true
	}
	return match(rs.opts.Includes)
}

func (rs *restorer) walk(ctx context.Context, tree ID, rel, snapDir string) error {
	t, err := rs.r.LoadTree(ctx, rs.idx, tree)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		childRel := n.Name
		if rel != "" {
			childRel = rel + "/" + n.Name
		}
		if err := rs.visit(ctx, childRel, snapDir+"/"+n.Name, n); err != nil {
			return err
		}
	}
	return nil
}

func (rs *restorer) visit(ctx context.Context, rel, snapPath string, n *Node) error {
	if !rs.selected(snapPath, n.Name, n.Type == NodeDir) {
		return nil
	}
	switch n.Type {
	case NodeDir:
		if len(rs.opts.Includes) == 0 {
			if err := rs.mkdir(rel); err != nil {
				return err
			}
		}
		rs.res.Dirs++
		rs.dirs = append(rs.dirs, dirMeta{rel: rel, node: n})
		if err := rs.walk(ctx, *n.Subtree, rel, snapPath); err != nil {
			if ctx.Err() != nil {
				return err
			}
			// An unreadable subtree fails that directory, not the restore.
			rs.fileErr(rel, err)
		}
		return nil
	case NodeSymlink:
		if err := rs.mkParent(rel); err != nil {
			return err
		}
		rs.removeExisting(rel)
		// The link is created as stored; os.Root never follows it out of
		// the target when writing later entries.
		if err := rs.root.Symlink(n.LinkTarget, rel); err != nil {
			rs.fileErr(rel, err)
			return nil
		}
		rs.setOwner(rel, n, true)
		return nil
	case NodeFile:
		return rs.planFile(ctx, rel, n)
	}
	return nil // devices, fifos and sockets are not recreated
}

func (rs *restorer) mkdir(rel string) error {
	if err := rs.root.MkdirAll(rel, 0o700); err != nil {
		return fmt.Errorf("create directory %s: %w", rel, err)
	}
	return nil
}

func (rs *restorer) mkParent(rel string) error {
	if d := path.Dir(rel); d != "." {
		return rs.mkdir(d)
	}
	return nil
}

// removeExisting clears a non-directory entry in the way (an old symlink
// must not redirect a restored file).
func (rs *restorer) removeExisting(rel string) {
	if fi, err := rs.root.Lstat(rel); err == nil && !fi.IsDir() {
		_ = rs.root.Remove(rel)
	}
}

func (rs *restorer) fileErr(rel string, err error) {
	if rs.indexDamaged && !strings.Contains(err.Error(), "repair index") {
		err = fmt.Errorf("%w (an index object is damaged: run vigil repair index)", err)
	}
	rs.mu.Lock()
	rs.res.Errors = append(rs.res.Errors, FileError{Path: rel, Err: err})
	rs.mu.Unlock()
	rs.nerr.Add(1)
	rs.r.log.Warn("restore failed for file", "path", rel, "err", err)
}

func (rs *restorer) resetPlan() {
	rs.plan = map[ID]map[BlobHandle]*plannedBlob{}
	rs.batch = nil
	rs.planB = 0
}

func (rs *restorer) planFile(ctx context.Context, rel string, n *Node) error {
	if err := rs.mkParent(rel); err != nil {
		return err
	}
	if n.Links > 1 {
		key := [2]uint64{n.DeviceID, n.Inode}
		if first, ok := rs.links[key]; ok {
			rs.removeExisting(rel)
			if err := rs.root.Link(first, rel); err == nil {
				rs.res.Files++
				return nil
			}
			// Fall through: restore a copy if linking failed.
		} else {
			rs.links[key] = rel
		}
	}
	content, err := rs.r.FileContent(ctx, rs.idx, n)
	if err != nil {
		rs.fileErr(rel, err)
		return nil
	}
	rs.removeExisting(rel)
	f, err := rs.root.OpenFile(rel, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", rel, err)
	}
	rf := &restoreFile{rel: rel, node: n, f: f}
	rs.batch = append(rs.batch, rf)
	// Truncate to size first: zero runs are never written and stay holes.
	if err := f.Truncate(int64(n.Size)); err != nil {
		return fmt.Errorf("restore %s: %w", rel, err)
	}
	var off int64
	for _, c := range content {
		if c.Zero > 0 {
			off += int64(c.Zero)
			continue
		}
		h := BlobHandle{Type: DataBlob, ID: c.ID}
		pack, e, ok := rs.idx.Lookup(h)
		if !ok {
			rf.failed = fmt.Errorf("data blob %s at offset %d is missing from the index", c.ID.Short(), off)
			break
		}
		m := rs.plan[pack]
		if m == nil {
			m = map[BlobHandle]*plannedBlob{}
			rs.plan[pack] = m
		}
		pb := m[h]
		if pb == nil {
			pb = &plannedBlob{entry: e}
			m[h] = pb
		}
		pb.targets = append(pb.targets, blobTarget{file: rf, offset: off})
		off += int64(e.RawLength)
	}
	if rf.failed == nil && off != int64(n.Size) {
		rf.failed = fmt.Errorf("content covers %d bytes, file size is %d", off, n.Size)
	}
	rs.planB += int64(n.Size)
	rs.total += int64(n.Size)
	if rs.planB >= restoreBatchBytes || len(rs.batch) >= restoreBatchFiles {
		return rs.flush(ctx)
	}
	return nil
}

// packRun is one ranged read: neighbouring blobs of a pack.
type packRun struct {
	pack  ID
	start uint32
	end   uint32
	blobs []*plannedBlob
}

// Runs merge blobs separated by less than this gap, up to runMax bytes.
const (
	runGap = 256 << 10
	runMax = 16 << 20
)

func (rs *restorer) flush(ctx context.Context) error {
	var runs []*packRun
	for pack, m := range rs.plan {
		blobs := make([]*plannedBlob, 0, len(m))
		for _, b := range m {
			blobs = append(blobs, b)
		}
		sort.Slice(blobs, func(i, j int) bool { return blobs[i].entry.Offset < blobs[j].entry.Offset })
		var cur *packRun
		for _, b := range blobs {
			e := b.entry
			if cur != nil && e.Offset <= cur.end+runGap && e.Offset+e.Length-cur.start <= runMax {
				cur.end = max(cur.end, e.Offset+e.Length)
				cur.blobs = append(cur.blobs, b)
				continue
			}
			cur = &packRun{pack: pack, start: e.Offset, end: e.Offset + e.Length, blobs: []*plannedBlob{b}}
			runs = append(runs, cur)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(rs.r.conns)
	for _, run := range runs {
		g.Go(func() error { return rs.readRun(gctx, run) })
	}
	err := g.Wait()
	rs.finishBatch(err == nil)
	rs.resetPlan()
	return err
}

func (rs *restorer) readRun(ctx context.Context, run *packRun) error {
	failAll := func(err error) {
		for _, b := range run.blobs {
			for _, t := range b.targets {
				t.file.fail(err)
			}
		}
	}
	rc, err := rs.r.store.Get(ctx, packName(run.pack), int64(run.start), int64(run.end-run.start))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failAll(fmt.Errorf("read pack %s: %w", run.pack.Short(), err))
		return nil
	}
	bp := packBufs.Get().(*[]byte)
	defer packBufs.Put(bp)
	if cap(*bp) < int(run.end-run.start) {
		*bp = make([]byte, run.end-run.start)
	}
	buf := (*bp)[:run.end-run.start]
	_, err = io.ReadFull(rc, buf)
	rc.Close()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		failAll(fmt.Errorf("read pack %s: %w", run.pack.Short(), err))
		return nil
	}
	var s scratch
	for _, b := range run.blobs {
		e := b.entry
		sealed := buf[e.Offset-run.start : e.Offset-run.start+e.Length]
		out, err := rs.r.openBlob(e, sealed, &s)
		if err != nil {
			err = fmt.Errorf("pack %s: %w", run.pack.Short(), err)
			for _, t := range b.targets {
				t.file.fail(err)
			}
			continue
		}
		for _, t := range b.targets {
			if t.file.isFailed() {
				continue
			}
			if _, err := t.file.f.WriteAt(out, t.offset); err != nil {
				if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
					// The whole restore cannot go on; say so once, clearly.
					return fmt.Errorf("write %s: %w", t.file.rel, err)
				}
				t.file.fail(fmt.Errorf("write: %w", err))
				continue
			}
			rs.done.Add(int64(len(out)))
		}
	}
	return nil
}

func (f *restoreFile) fail(err error) {
	f.mu.Lock()
	if f.failed == nil {
		f.failed = err
	}
	f.mu.Unlock()
}

func (f *restoreFile) isFailed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed != nil
}

func (rs *restorer) finishBatch(ok bool) {
	for _, rf := range rs.batch {
		err := rf.f.Close()
		rf.f = nil
		if rf.failed == nil && err != nil {
			rf.failed = err
		}
		if !ok {
			continue
		}
		if rf.failed != nil {
			// Never leave a file that looks restored but is not.
			_ = rs.root.Remove(rf.rel)
			rs.fileErr(rf.rel, rf.failed)
			continue
		}
		rs.setMeta(rf.rel, rf.node)
		rs.res.Files++
		rs.res.Bytes += int64(rf.node.Size)
		rs.nfiles.Add(1)
	}
}

func (rs *restorer) closeAll() {
	for _, rf := range rs.batch {
		if rf.f != nil {
			rf.f.Close()
		}
	}
}

func (rs *restorer) setOwner(rel string, n *Node, symlink bool) {
	if os.Geteuid() != 0 {
		return
	}
	if symlink {
		_ = rs.root.Lchown(rel, int(n.UID), int(n.GID))
		return
	}
	_ = rs.root.Chown(rel, int(n.UID), int(n.GID))
}

func (rs *restorer) setMeta(rel string, n *Node) {
	rs.setOwner(rel, n, false)
	if err := rs.root.Chmod(rel, n.Mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		rs.r.log.Debug("chmod failed", "path", rel, "err", err)
	}
	if err := rs.root.Chtimes(rel, n.ModTime, n.ModTime); err != nil {
		rs.r.log.Debug("chtimes failed", "path", rel, "err", err)
	}
}

// TargetPath is where a snapshot path lands for a restore of the whole
// snapshot (used by tests and the CLI to print locations).
func TargetPath(target, snapPath string) string {
	return filepath.Join(target, filepath.FromSlash(strings.TrimPrefix(path.Clean("/"+snapPath), "/")))
}
