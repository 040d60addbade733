package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/restic/chunker"
)

// BackupOptions describe one backup.
type BackupOptions struct {
	Paths    []string
	Excludes []string // filepath.Match patterns, matched against the base name and the full path
	Tags     []string
	Host     string // default: this host's name
	Job      string // free-form label, e.g. the vigil job name
	// Chunking is "auto" (image profile for disk-image-like files),
	// "default" or "image".
	Chunking string
	// Parent is a snapshot reference used to skip unchanged files; empty
	// picks the latest snapshot with the same host, job and paths; "none"
	// disables it.
	Parent   string
	Progress func(Progress)
	// LockWait is how long to wait for a conflicting lock.
	LockWait time.Duration
}

// Progress is reported while a backup runs.
type Progress struct {
	Files       int64  `json:"files_done"`
	Dirs        int64  `json:"dirs_done"`
	BytesDone   int64  `json:"bytes_done"`
	BytesTotal  int64  `json:"bytes_total"`
	Errors      int64  `json:"errors"`
	CurrentFile string `json:"current_file,omitempty"`
}

// FileError is a path that could not be backed up; the backup goes on.
type FileError struct {
	Path string
	Err  error
}

func (e FileError) Error() string { return e.Path + ": " + e.Err.Error() }

// BackupResult is what Backup returns. A non-empty Errors means the
// snapshot is partial: it lacks those paths.
type BackupResult struct {
	Snapshot *Snapshot
	Errors   []FileError
}

// ErrNothingToBackup is returned when no path exists.
var ErrNothingToBackup = errors.New("none of the given paths could be read")

type archiver struct {
	r       *Repository
	idx     *MasterIndex
	w       *Writer
	opts    BackupOptions
	pol     chunker.Pol
	errs    []FileError
	errMu   sync.Mutex
	sum     SnapshotSummary
	done    atomic.Int64
	files   atomic.Int64
	dirs    atomic.Int64
	nerr    atomic.Int64
	current atomic.Value
	pools   map[uint]*sync.Pool
	// chunkers holds idle chunkers with their 512 KiB read buffers. Not a
	// sync.Pool: the CLI's low GC target empties those every few files,
	// and allocating a chunker per file cost more CPU than chunking a
	// small log file did.
	chunkers chan *chunker.Chunker
	estTotal int64
	chunks   atomic.Int64
	poolMu   sync.Mutex
	users    map[uint32]string
	groups   map[uint32]string
	excludes []string
}

// Backup stores paths as a new snapshot. It takes a shared lock for its
// duration. Paths that cannot be read are skipped and listed in the result.
func (r *Repository) Backup(ctx context.Context, opts BackupOptions) (*BackupResult, error) {
	if len(opts.Paths) == 0 {
		return nil, fmt.Errorf("backup: no paths given")
	}
	if opts.Chunking == "" {
		opts.Chunking = "auto"
	}
	if opts.Chunking != "auto" {
		if _, err := r.Profile(opts.Chunking); err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
	}
	if opts.Host == "" {
		opts.Host = hostname()
	}
	var abs []string
	for _, p := range opts.Paths {
		a, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		abs = append(abs, a)
	}
	sort.Strings(abs)
	abs = dedupNested(abs)
	for _, pat := range opts.Excludes {
		if _, err := filepath.Match(pat, "x"); err != nil {
			return nil, fmt.Errorf("backup: exclude pattern %q: %w", pat, err)
		}
	}
	lock, err := r.Lock(ctx, false, "backup", opts.LockWait)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer lock.Unlock()

	idx, err := r.LoadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer idx.Close()
	a := &archiver{
		r: r, idx: idx, opts: opts, pol: r.cfg.Polynomial, pools: map[uint]*sync.Pool{}, chunkers: newArchiverChunkers(),
		users: map[uint32]string{}, groups: map[uint32]string{}, excludes: opts.Excludes,
	}
	a.current.Store("")
	a.sum.Start = r.now().UTC()
	var parent *Snapshot
	var parentTree *Tree
	if opts.Parent != "none" {
		parent, err = r.findParent(ctx, opts, abs)
		if err != nil {
			return nil, fmt.Errorf("backup: parent: %w", err)
		}
		if parent != nil {
			if parentTree, err = r.LoadTree(ctx, idx, parent.Tree); err != nil {
				r.log.Warn("parent snapshot unreadable; reading every file", "parent", parent.ID.Short(), "err", err)
				parent, parentTree = nil, nil
			}
		}
	}
	if opts.Progress != nil {
		a.estTotal = scanSize(ctx, abs, a)
		defer every(500*time.Millisecond, func() { opts.Progress(a.progress()) })()
	}

	a.w = r.NewWriter(ctx, idx)
	root := buildTrie(abs)
	rootID, err := a.saveTrie(ctx, "/", root, parentTree)
	if err != nil {
		a.w.Abort()
		return nil, fmt.Errorf("backup: %w", err)
	}
	if len(a.errs) == len(abs) && a.sum.FilesNew+a.sum.FilesChanged+a.sum.FilesUnchanged+a.sum.Dirs == 0 {
		a.w.Abort()
		return &BackupResult{Errors: a.errs}, fmt.Errorf("backup: %w: %v", ErrNothingToBackup, a.errs[0])
	}
	username := ""
	if u, err := user.Current(); err == nil {
		username = u.Username
	}
	if err := a.w.Flush(ctx); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	ws := a.w.Stats()
	a.sum.End = r.now().UTC()
	a.sum.BytesRead = a.done.Load()
	a.sum.Chunks = int(a.chunks.Load())
	a.sum.Errors = len(a.errs)
	a.sum.BytesNew, a.sum.BytesStored, a.sum.BlobsNew = ws.BytesNew, ws.BytesStored, ws.BlobsNew
	sn := &Snapshot{
		Time: a.sum.Start, Tree: rootID, Paths: abs, Hostname: opts.Host, Username: username,
		Tags: opts.Tags, Job: opts.Job, Summary: &a.sum,
	}
	if parent != nil {
		pid := parent.ID
		sn.Parent = &pid
	}
	if _, err := a.w.Commit(ctx, sn); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &BackupResult{Snapshot: sn, Errors: a.errs}, nil
}

func (a *archiver) progress() Progress {
	return Progress{Files: a.files.Load(), Dirs: a.dirs.Load(), BytesDone: a.done.Load(), BytesTotal: a.estTotal,
		Errors: a.nerr.Load(), CurrentFile: a.current.Load().(string)}
}

// dedupNested drops paths inside another given path (sorted input).
func dedupNested(paths []string) []string {
	var out []string
	for _, p := range paths {
		if len(out) > 0 {
			last := out[len(out)-1]
			if p == last || strings.HasPrefix(p, strings.TrimSuffix(last, "/")+"/") {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

func (r *Repository) findParent(ctx context.Context, opts BackupOptions, paths []string) (*Snapshot, error) {
	if opts.Parent != "" {
		return r.FindSnapshot(ctx, opts.Parent)
	}
	sns, err := r.Snapshots(ctx, func(ID, error) {})
	if err != nil {
		return nil, err
	}
	want := strings.Join(paths, "\x00")
	for i := len(sns) - 1; i >= 0; i-- {
		s := sns[i]
		if s.Hostname == opts.Host && s.Job == opts.Job && strings.Join(s.Paths, "\x00") == want {
			return s, nil
		}
	}
	return nil, nil
}

// trie holds the requested paths; inner nodes are their ancestors, which are
// stored with metadata only.
type trie struct {
	children map[string]*trie
	leaf     bool
}

func buildTrie(paths []string) *trie {
	root := &trie{children: map[string]*trie{}}
	for _, p := range paths {
		t := root
		for _, part := range strings.Split(strings.Trim(p, "/"), "/") {
			if part == "" {
				continue
			}
			c := t.children[part]
			if c == nil {
				c = &trie{children: map[string]*trie{}}
				t.children[part] = c
			}
			t = c
		}
		t.leaf = true
	}
	return root
}

func (a *archiver) saveTrie(ctx context.Context, dir string, t *trie, parent *Tree) (ID, error) {
	if t.leaf {
		// "/" itself was requested.
		return a.saveDirContents(ctx, dir, parent)
	}
	names := make([]string, 0, len(t.children))
	for n := range t.children {
		names = append(names, n)
	}
	sort.Strings(names)
	tree := &Tree{}
	for _, name := range names {
		c := t.children[name]
		full := filepath.Join(dir, name)
		var pn *Node
		if parent != nil {
			pn = parent.Find(name)
		}
		if c.leaf {
			n, err := a.saveEntry(ctx, full, name, pn)
			if err != nil {
				return ID{}, err
			}
			if n != nil {
				tree.Nodes = append(tree.Nodes, n)
			}
			continue
		}
		n, err := a.statNode(full, name)
		if err != nil {
			a.addErr(full, err)
			continue
		}
		var sub *Tree
		if pn != nil && pn.Type == NodeDir && pn.Subtree != nil {
			sub, _ = a.r.LoadTree(ctx, a.idx, *pn.Subtree)
		}
		id, err := a.saveTrie(ctx, full, c, sub)
		if err != nil {
			return ID{}, err
		}
		n.Type, n.Subtree = NodeDir, &id
		tree.Nodes = append(tree.Nodes, n)
	}
	return a.saveTree(ctx, tree)
}

func (a *archiver) addErr(path string, err error) {
	a.errMu.Lock()
	a.errs = append(a.errs, FileError{Path: path, Err: err})
	a.errMu.Unlock()
	a.nerr.Add(1)
	// Info, not Warn: callers report these errors themselves (CLI, run log).
	a.r.log.Info("skipping unreadable path", "path", path, "err", err)
}

func (a *archiver) excluded(full, name string) bool {
	for _, p := range a.excludes {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
		if ok, _ := filepath.Match(p, full); ok {
			return true
		}
	}
	return false
}

func (a *archiver) saveTree(ctx context.Context, t *Tree) (ID, error) {
	b, err := encodeTree(t)
	if err != nil {
		return ID{}, fmt.Errorf("encode tree: %w", err)
	}
	id, _, err := a.w.SaveBlob(ctx, TreeBlob, b, nil)
	return id, err
}

// statNode fills a node's metadata from lstat.
func (a *archiver) statNode(full, name string) (*Node, error) {
	fi, err := os.Lstat(full)
	if err != nil {
		return nil, err
	}
	return a.nodeFromInfo(full, name, fi)
}

func (a *archiver) nodeFromInfo(full, name string, fi fs.FileInfo) (*Node, error) {
	n := &Node{Name: name, Mode: fi.Mode(), ModTime: fi.ModTime().UTC()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		n.UID, n.GID = st.Uid, st.Gid
		n.Inode, n.DeviceID, n.Links = st.Ino, uint64(st.Dev), uint64(st.Nlink)
		n.ChangeTime = time.Unix(st.Ctim.Sec, st.Ctim.Nsec).UTC()
		n.User, n.Group = a.lookupUser(st.Uid), a.lookupGroup(st.Gid)
	}
	switch {
	case fi.Mode().IsRegular():
		n.Type, n.Size = NodeFile, uint64(fi.Size())
	case fi.IsDir():
		n.Type = NodeDir
		n.Links = 0 // directory link counts are not hard links
	case fi.Mode()&fs.ModeSymlink != 0:
		n.Type = NodeSymlink
		target, err := os.Readlink(full)
		if err != nil {
			return nil, err
		}
		n.LinkTarget = target
	default:
		n.Type = NodeOther
	}
	return n, nil
}

func (a *archiver) lookupUser(uid uint32) string {
	if v, ok := a.users[uid]; ok {
		return v
	}
	name := ""
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		name = u.Username
	}
	a.users[uid] = name
	return name
}

func (a *archiver) lookupGroup(gid uint32) string {
	if v, ok := a.groups[gid]; ok {
		return v
	}
	name := ""
	if g, err := user.LookupGroupId(strconv.Itoa(int(gid))); err == nil {
		name = g.Name
	}
	a.groups[gid] = name
	return name
}

// saveEntry backs up one path (recursively for directories). It returns a
// nil node (and no error) for a path that was skipped.
func (a *archiver) saveEntry(ctx context.Context, full, name string, parent *Node) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if a.excluded(full, name) {
		return nil, nil
	}
	n, err := a.statNode(full, name)
	if err != nil {
		a.addErr(full, err)
		return nil, nil
	}
	switch n.Type {
	case NodeDir:
		var sub *Tree
		if parent != nil && parent.Type == NodeDir && parent.Subtree != nil {
			sub, _ = a.r.LoadTree(ctx, a.idx, *parent.Subtree)
		}
		id, err := a.saveDirContents(ctx, full, sub)
		if err != nil {
			if ctx.Err() != nil || a.w.Err() != nil {
				return nil, err
			}
			a.addErr(full, err)
			return nil, nil
		}
		n.Subtree = &id
		a.sum.Dirs++
		a.dirs.Add(1)
	case NodeFile:
		if parent != nil && unchanged(parent, n) && a.contentStored(parent) {
			n.Content, n.ContentLists = parent.Content, parent.ContentLists
			a.sum.FilesUnchanged++
			a.files.Add(1)
			a.done.Add(int64(n.Size))
			a.sum.BytesTotal += int64(n.Size)
			return n, nil
		}
		if err := a.saveFile(ctx, full, n); err != nil {
			if ctx.Err() != nil || a.w.Err() != nil {
				return nil, err
			}
			a.addErr(full, err)
			return nil, nil
		}
		a.sum.BytesTotal += int64(n.Size)
		if parent != nil {
			a.sum.FilesChanged++
		} else {
			a.sum.FilesNew++
		}
		a.files.Add(1)
	}
	return n, nil
}

func unchanged(old, cur *Node) bool {
	return old.Type == NodeFile && old.Size == cur.Size && old.ModTime.Equal(cur.ModTime) &&
		old.ChangeTime.Equal(cur.ChangeTime) && old.Inode == cur.Inode
}

// contentStored checks that a parent's file content is still indexed (a
// prune may have removed a damaged or forgotten blob since).
func (a *archiver) contentStored(n *Node) bool {
	for _, c := range n.Content {
		if c.Zero == 0 && !a.idx.Has(BlobHandle{Type: DataBlob, ID: c.ID}) {
			return false
		}
	}
	for _, id := range n.ContentLists {
		if !a.idx.Has(BlobHandle{Type: TreeBlob, ID: id}) {
			return false
		}
	}
	return true
}

func (a *archiver) saveDirContents(ctx context.Context, dir string, parent *Tree) (ID, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return ID{}, err
	}
	tree := &Tree{Nodes: make([]*Node, 0, len(entries))}
	for _, e := range entries {
		var pn *Node
		if parent != nil {
			pn = parent.Find(e.Name())
		}
		n, err := a.saveEntry(ctx, filepath.Join(dir, e.Name()), e.Name(), pn)
		if err != nil {
			return ID{}, err
		}
		if n != nil {
			tree.Nodes = append(tree.Nodes, n)
		}
	}
	return a.saveTree(ctx, tree)
}

// imageExt marks files chunked with the image profile under "auto".
var imageExt = map[string]bool{".img": true, ".raw": true, ".vmdk": true, ".vhd": true, ".vhdx": true, ".qcow2": true, ".iso": true, ".disk": true}

// ImageThreshold is the size from which "auto" uses the image profile.
const ImageThreshold = 256 << 20

func (a *archiver) profileFor(name string, size uint64) ChunkProfile {
	p := a.opts.Chunking
	if p == "auto" {
		p = "default"
		if size >= ImageThreshold || imageExt[strings.ToLower(filepath.Ext(name))] {
			p = "image"
		}
	}
	return a.r.cfg.Profiles[p]
}

// newChunker returns a chunker over rd for prof, reusing an idle one.
func (a *archiver) newChunker(rd io.Reader, prof ChunkProfile) *chunker.Chunker {
	var c *chunker.Chunker
	select {
	case c = <-a.chunkers:
		c.ResetWithBoundaries(rd, a.pol, prof.Min, prof.Max)
	default:
		c = chunker.NewWithBoundaries(rd, a.pol, prof.Min, prof.Max)
	}
	c.SetAverageBits(prof.AvgBits)
	return c
}

// doneChunker keeps c for reuse, up to a few.
func (a *archiver) doneChunker(c *chunker.Chunker) {
	c.ResetWithBoundaries(nil, a.pol, 0, 0) // drop the reader
	select {
	case a.chunkers <- c:
	default:
	}
}

// newArchiverChunkers sizes the idle-chunker list: one per segment that
// can be in flight, plus one.
func newArchiverChunkers() chan *chunker.Chunker {
	return make(chan *chunker.Chunker, 2*runtime.GOMAXPROCS(0)+1)
}

// bufPool returns the pool of chunk buffers for an input of sizeHint bytes
// (< 0: unknown). A small file gets a buffer of its size class, not the
// profile's maximum chunk (4 MiB by default): zeroing 4 MiB for a 20 KiB
// log file was most of the time of an incremental backup of many logs. A
// file that grew meanwhile just makes the chunker grow the buffer.
func (a *archiver) bufPool(prof ChunkProfile, sizeHint int64) *sync.Pool {
	size := prof.Max
	if sizeHint >= 0 && sizeHint < int64(prof.Max) {
		size = 64 << 10
		for int64(size) < sizeHint {
			size *= 2
		}
		size = min(size, prof.Max)
	}
	return a.pool(size)
}

func (a *archiver) pool(max uint) *sync.Pool {
	a.poolMu.Lock()
	defer a.poolMu.Unlock()
	p := a.pools[max]
	if p == nil {
		p = &sync.Pool{New: func() any { b := make([]byte, max); return &b }}
		a.pools[max] = p
	}
	return p
}

var zeroBlock = make([]byte, 256<<10)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// contentListSize is how many pieces go in one content-list blob.
const contentListSize = 8192

// segmentSize splits large files into independently chunked segments so
// that several cores chunk and hash one disk image at once. Boundaries sit
// at fixed offsets, so the same file chunks the same way every night; the
// cost is one forced chunk boundary per segment.
var segmentSize int64 = 64 << 20

// contentBuilder collects a file's pieces in order, merging zero runs and
// moving pieces into content-list blobs as they accumulate.
type contentBuilder struct {
	refs  []ContentRef
	lists []ID
}

func (cb *contentBuilder) add(ctx context.Context, a *archiver, refs []ContentRef) error {
	for _, r := range refs {
		if k := len(cb.refs); r.Zero > 0 && k > 0 && cb.refs[k-1].Zero > 0 {
			cb.refs[k-1].Zero += r.Zero
			continue
		}
		cb.refs = append(cb.refs, r)
		if len(cb.refs) >= contentListSize {
			if err := cb.flush(ctx, a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (cb *contentBuilder) flush(ctx context.Context, a *archiver) error {
	b, err := json.Marshal(contentList{Content: cb.refs})
	if err != nil {
		return err
	}
	id, _, err := a.w.SaveBlob(ctx, TreeBlob, b, nil)
	if err != nil {
		return err
	}
	cb.lists = append(cb.lists, id)
	cb.refs = nil
	return nil
}

func (cb *contentBuilder) finish(ctx context.Context, a *archiver, n *Node) error {
	if len(cb.lists) > 0 || len(cb.refs) > maxInlineContent {
		if len(cb.refs) > 0 {
			if err := cb.flush(ctx, a); err != nil {
				return err
			}
		}
		n.ContentLists = cb.lists
		return nil
	}
	n.Content = cb.refs
	return nil
}

func (a *archiver) saveFile(ctx context.Context, full string, n *Node) error {
	f, err := os.OpenFile(full, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NOATIME, 0)
	if err != nil && errors.Is(err, syscall.EPERM) {
		// O_NOATIME is only allowed for the file's owner.
		f, err = os.OpenFile(full, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	a.current.Store(full)
	prof := a.profileFor(n.Name, n.Size)
	var cb contentBuilder
	var size uint64
	if n.Size < 2*uint64(segmentSize) {
		refs, read, err := a.chunkSegment(ctx, f, prof, int64(n.Size))
		if err != nil {
			return err
		}
		size = uint64(read)
		if err := cb.add(ctx, a, refs); err != nil {
			return err
		}
	} else {
		// Read until a short segment: a file that grows while it is read
		// is stored as far as that segment reached.
		type segment struct {
			refs []ContentRef
			read int64
		}
		err := inOrder(ctx, runtime.GOMAXPROCS(0), -1, func(ctx context.Context, i int) (segment, error) {
			sr := io.NewSectionReader(f, int64(i)*segmentSize, segmentSize)
			refs, read, err := a.chunkSegment(ctx, sr, prof, -1)
			return segment{refs, read}, err
		}, func(_ int, s segment) (bool, error) {
			size += uint64(s.read)
			return s.read == segmentSize, cb.add(ctx, a, s.refs)
		})
		if err != nil {
			return err
		}
	}
	if err := cb.finish(ctx, a, n); err != nil {
		return err
	}
	// Record what was read: a file that grew or shrank while we read it is
	// stored as read, which restore reproduces exactly.
	n.Size = size
	return nil
}

// chunkSegment chunks everything rd yields and stores the chunks. It may
// run concurrently for different segments of one file.
func (a *archiver) chunkSegment(ctx context.Context, rd io.Reader, prof ChunkProfile, sizeHint int64) ([]ContentRef, int64, error) {
	ch := a.newChunker(rd, prof)
	defer a.doneChunker(ch)
	pool := a.bufPool(prof, sizeHint)
	var refs []ContentRef
	var read int64
	chunks := 0
	defer func() { a.chunks.Add(int64(chunks)) }()
	for {
		bp := pool.Get().(*[]byte)
		c, err := ch.Next(*bp)
		if err == io.EOF {
			pool.Put(bp)
			return refs, read, nil
		}
		if err != nil {
			pool.Put(bp)
			return nil, read, fmt.Errorf("read: %w", err)
		}
		read += int64(c.Length)
		a.done.Add(int64(c.Length))
		chunks++
		if isZero(c.Data) {
			pool.Put(bp)
			if k := len(refs); k > 0 && refs[k-1].Zero > 0 {
				refs[k-1].Zero += uint64(c.Length)
			} else {
				refs = append(refs, ContentRef{Zero: uint64(c.Length)})
			}
			continue
		}
		id, _, err := a.w.SaveBlob(ctx, DataBlob, c.Data, func() { pool.Put(bp) })
		if err != nil {
			return nil, read, err
		}
		refs = append(refs, ContentRef{ID: id})
	}
}

// scanSize sums the sizes of what will be read, for progress and ETA.
func scanSize(ctx context.Context, paths []string, a *archiver) int64 {
	var total int64
	for _, p := range paths {
		_ = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil || ctx.Err() != nil {
				return nil
			}
			if a.excluded(path, d.Name()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					total += fi.Size()
				}
			}
			return nil
		})
	}
	return total
}
