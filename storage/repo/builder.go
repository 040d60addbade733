package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/user"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Builder assembles a snapshot from data that does not come from walking
// the local file system: VM disks read over the network, exported device
// configurations, generated reports. Paths inside the snapshot are chosen by
// the caller ("/vms/ils-server/disk-0.img"). It holds a shared lock until
// Commit or Close; like Backup, it writes the snapshot last.
type Builder struct {
	r    *Repository
	lock *Lock
	idx  *MasterIndex
	a    *archiver
	root *buildDir
	mu   sync.Mutex
	sum  SnapshotSummary
	done bool
}

type buildDir struct {
	node     *Node
	children map[string]*buildDir
	file     *Node // set for files and symlinks
}

// FileMeta is the metadata of a file added to a Builder.
type FileMeta struct {
	Mode    fs.FileMode
	ModTime time.Time
	UID     uint32
	GID     uint32
}

// NewBuilder starts a snapshot. Close it (after Commit, or instead of it).
func (r *Repository) NewBuilder(ctx context.Context, lockWait time.Duration) (*Builder, error) {
	lock, err := r.Lock(ctx, false, "backup", lockWait)
	if err != nil {
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		lock.Unlock()
		return nil, fmt.Errorf("new snapshot: %w", err)
	}
	a := &archiver{r: r, idx: idx, pol: r.cfg.Polynomial, pools: map[uint]*sync.Pool{}, chunkers: newArchiverChunkers()}
	a.current.Store("")
	a.w = r.NewWriter(ctx, idx)
	b := &Builder{r: r, lock: lock, idx: idx, a: a, root: &buildDir{children: map[string]*buildDir{}}}
	b.sum.Start = r.now().UTC()
	return b, nil
}

// Index is the repository index as of NewBuilder plus what was added since.
func (b *Builder) Index() *MasterIndex { return b.idx }

// Repository returns the repository the snapshot goes into.
func (b *Builder) Repository() *Repository { return b.r }

func splitSnapPath(p string) ([]string, error) {
	clean := path.Clean("/" + p)
	if clean == "/" {
		return nil, fmt.Errorf("invalid snapshot path %q", p)
	}
	parts := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	for _, part := range parts {
		if !ValidName(part) {
			return nil, fmt.Errorf("invalid snapshot path %q", p)
		}
	}
	return parts, nil
}

// place records n at p, creating parent directories.
func (b *Builder) place(p string, n *Node) error {
	parts, err := splitSnapPath(p)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.root
	for _, part := range parts[:len(parts)-1] {
		c := d.children[part]
		if c == nil {
			c = &buildDir{children: map[string]*buildDir{}, node: &Node{Name: part, Type: NodeDir, Mode: fs.ModeDir | 0o755, ModTime: b.sum.Start}}
			d.children[part] = c
		}
		if c.file != nil {
			return fmt.Errorf("add %s: %s is a file", p, part)
		}
		d = c
	}
	name := parts[len(parts)-1]
	if _, dup := d.children[name]; dup {
		return fmt.Errorf("add %s: already added", p)
	}
	n.Name = name
	d.children[name] = &buildDir{file: n}
	if n.Type == NodeFile {
		b.sum.FilesNew++
		b.sum.BytesTotal += int64(n.Size)
	}
	return nil
}

func metaNode(meta FileMeta) *Node {
	mode := meta.Mode
	if mode == 0 {
		mode = 0o640
	}
	mt := meta.ModTime.UTC()
	return &Node{Type: NodeFile, Mode: mode, ModTime: mt, ChangeTime: mt, UID: meta.UID, GID: meta.GID}
}

// AddFile chunks everything rd yields (default profile, or "image") and
// records it at p.
func (b *Builder) AddFile(ctx context.Context, p string, rd io.Reader, meta FileMeta, profile string) (*Node, error) {
	if profile == "" {
		profile = "default"
	}
	prof, err := b.r.Profile(profile)
	if err != nil {
		return nil, err
	}
	refs, read, err := b.a.chunkSegment(ctx, rd, prof, -1)
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", p, err)
	}
	n := metaNode(meta)
	var cb contentBuilder
	if err := cb.add(ctx, b.a, refs); err != nil {
		return nil, err
	}
	if err := cb.finish(ctx, b.a, n); err != nil {
		return nil, err
	}
	n.Size = uint64(read)
	return n, b.place(p, n)
}

// ImageSource reads a disk image of known size at random offsets.
type ImageSource interface {
	io.ReaderAt
}

// AddImage stores a disk image with the image profile, segment by segment.
// If base is the same disk's node from an earlier snapshot and unchanged
// reports that nothing in [off, off+n) changed since (vSphere changed block
// tracking), those segments reuse base's pieces without being read; every
// other segment is read and chunked. The result is a complete image either
// way: every snapshot restores on its own. Segments are processed
// concurrently, so src.ReadAt and unchanged must be safe for concurrent use.
func (b *Builder) AddImage(ctx context.Context, p string, src ImageSource, size int64, meta FileMeta, base *Node, unchanged func(off, n int64) bool) (*Node, ImageStats, error) {
	prof, err := b.r.Profile("image")
	if err != nil {
		return nil, ImageStats{}, err
	}
	var baseSegs [][]ContentRef
	if base != nil && unchanged != nil && int64(base.Size) == size {
		baseSegs, err = b.r.segmentRefs(ctx, b.idx, base)
		if err != nil {
			b.r.log.Warn("earlier image unusable as base; reading everything", "path", p, "err", err)
			baseSegs = nil
		}
	}
	nseg := int((size + segmentSize - 1) / segmentSize)
	var st ImageStats
	var cb contentBuilder
	type segment struct {
		refs  []ContentRef
		n     int64
		reuse bool
	}
	// Twice the cores: images come over a network transport, and a segment
	// waiting for its next read leaves a core to another one.
	err = inOrder(ctx, 2*runtime.GOMAXPROCS(0), nseg, func(ctx context.Context, i int) (segment, error) {
		off := int64(i) * segmentSize
		n := min(segmentSize, size-off)
		if baseSegs != nil && i < len(baseSegs) && unchanged(off, n) {
			return segment{refs: baseSegs[i], n: n, reuse: true}, nil
		}
		r, read, err := b.a.chunkSegment(ctx, io.NewSectionReader(src, off, n), prof, -1)
		if err != nil {
			return segment{}, err
		}
		if read != n {
			return segment{}, fmt.Errorf("segment at %d: read %d of %d bytes", off, read, n)
		}
		return segment{refs: r, n: n}, nil
	}, func(_ int, s segment) (bool, error) {
		if s.reuse {
			st.BytesReused += s.n
		} else {
			st.BytesRead += s.n
		}
		return true, cb.add(ctx, b.a, s.refs)
	})
	if err != nil {
		return nil, st, fmt.Errorf("add %s: %w", p, err)
	}
	n := metaNode(meta)
	if err := cb.finish(ctx, b.a, n); err != nil {
		return nil, st, err
	}
	n.Size = uint64(size)
	return n, st, b.place(p, n)
}

// ImageStats says how much of an image was read and how much reused.
type ImageStats struct {
	BytesRead   int64
	BytesReused int64
}

// AddBytes stores small data (a config export) at p.
func (b *Builder) AddBytes(ctx context.Context, p string, data []byte, meta FileMeta) (*Node, error) {
	return b.AddFile(ctx, p, strings.NewReader(string(data)), meta, "default")
}

// AddNode records an existing node (e.g. reused from a parent snapshot),
// a file or a whole directory (a node with its Subtree): it is stored as it
// is. Its blobs must be in the repository.
func (b *Builder) AddNode(p string, n *Node) error {
	c := *n
	return b.place(p, &c)
}

// segmentRefs splits a stored image's pieces at segment boundaries; since
// images are chunked per segment, no piece crosses one.
func (r *Repository) segmentRefs(ctx context.Context, idx *MasterIndex, n *Node) ([][]ContentRef, error) {
	content, err := r.FileContent(ctx, idx, n)
	if err != nil {
		return nil, err
	}
	var segs [][]ContentRef
	var cur []ContentRef
	var off, segEnd int64 = 0, segmentSize
	flush := func() {
		segs = append(segs, cur)
		cur = nil
		segEnd += segmentSize
	}
	for _, c := range content {
		var l int64
		if c.Zero > 0 {
			// Zero runs are merged across segments: split them again.
			z := int64(c.Zero)
			for z > 0 {
				take := min(z, segEnd-off)
				cur = append(cur, ContentRef{Zero: uint64(take)})
				off += take
				z -= take
				if off == segEnd {
					flush()
				}
			}
			continue
		}
		_, e, ok := idx.Lookup(BlobHandle{Type: DataBlob, ID: c.ID})
		if !ok {
			return nil, fmt.Errorf("data blob %s is missing", c.ID.Short())
		}
		l = int64(e.RawLength)
		if off+l > segEnd {
			return nil, errors.New("piece crosses a segment boundary (not chunked by segment)")
		}
		cur = append(cur, c)
		off += l
		if off == segEnd {
			flush()
		}
	}
	if len(cur) > 0 {
		segs = append(segs, cur)
	}
	if off != int64(n.Size) {
		return nil, fmt.Errorf("pieces cover %d bytes, size is %d", off, n.Size)
	}
	return segs, nil
}

// SnapshotMeta describes the snapshot a Builder commits.
type SnapshotMeta struct {
	Paths  []string // what the snapshot holds, e.g. ["vm:ils-server"]
	Host   string
	Tags   []string
	Job    string
	Parent *ID
}

// Commit writes all data, then the snapshot.
func (b *Builder) Commit(ctx context.Context, meta SnapshotMeta) (*Snapshot, error) {
	if b.done {
		return nil, errors.New("commit: builder already closed")
	}
	rootID, _, err := b.saveDir(ctx, b.root)
	if err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	if err := b.a.w.Flush(ctx); err != nil {
		return nil, fmt.Errorf("commit: %w", err)
	}
	ws := b.a.w.Stats()
	b.sum.End = b.r.now().UTC()
	b.sum.BytesRead = b.a.done.Load()
	b.sum.Chunks = int(b.a.chunks.Load())
	b.sum.BytesNew, b.sum.BytesStored, b.sum.BlobsNew = ws.BytesNew, ws.BytesStored, ws.BlobsNew
	if meta.Host == "" {
		meta.Host = hostname()
	}
	username := ""
	if u, err := user.Current(); err == nil {
		username = u.Username
	}
	sn := &Snapshot{Time: b.sum.Start, Tree: rootID, Paths: meta.Paths, Hostname: meta.Host, Username: username,
		Tags: meta.Tags, Job: meta.Job, Parent: meta.Parent, Summary: &b.sum}
	if _, err := b.a.w.Commit(ctx, sn); err != nil {
		return nil, err
	}
	b.Close()
	return sn, nil
}

// saveDir stores a directory the builder made up. Its mtime is that of its
// newest entry, not the time of the run, so a night where nothing changed
// produces the same tree blobs and stores nothing new.
func (b *Builder) saveDir(ctx context.Context, d *buildDir) (ID, time.Time, error) {
	names := make([]string, 0, len(d.children))
	for n := range d.children {
		names = append(names, n)
	}
	sort.Strings(names)
	t := &Tree{}
	var newest time.Time
	for _, name := range names {
		c := d.children[name]
		if c.file != nil {
			t.Nodes = append(t.Nodes, c.file)
			if c.file.ModTime.After(newest) {
				newest = c.file.ModTime
			}
			continue
		}
		id, mt, err := b.saveDir(ctx, c)
		if err != nil {
			return ID{}, newest, err
		}
		n := *c.node
		n.Subtree = &id
		n.ModTime, n.ChangeTime = mt, mt
		if mt.After(newest) {
			newest = mt
		}
		t.Nodes = append(t.Nodes, &n)
		b.sum.Dirs++
	}
	id, err := b.a.saveTree(ctx, t)
	return id, newest, err
}

// Close releases the lock; without Commit nothing becomes visible (packs
// already uploaded are removed by the next prune).
func (b *Builder) Close() {
	if b.done {
		return
	}
	b.done = true
	b.a.w.mu.Lock()
	closed := b.a.w.closed
	b.a.w.mu.Unlock()
	if !closed {
		b.a.w.Abort()
	}
	b.idx.Close()
	b.lock.Unlock()
}
