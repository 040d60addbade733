package repo

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/vigilops/vigil/storage/blob"
)

// CheckOptions select how deep check goes.
type CheckOptions struct {
	ReadData bool
	// Subset limits ReadData to part of the packs: "N%" (a random sample)
	// or "N/M" (the N-th of M deterministic groups, so M runs cover all).
	Subset   string
	Progress func(done, total int64)
}

// CheckResult lists problems. Errors make the repository unhealthy;
// Warnings (e.g. unreferenced packs left by an interrupted run) do not.
type CheckResult struct {
	Errors            []string `json:"errors"`
	Warnings          []string `json:"warnings"`
	DamagedPacks      []string `json:"damaged_packs"`
	DamagedIndexes    []string `json:"damaged_indexes"`
	DamagedSnapshots  []string `json:"damaged_snapshots"`
	AffectedSnapshots []string `json:"affected_snapshots"`
	Snapshots         int      `json:"snapshots"`
	Packs             int      `json:"packs"`
	PacksRead         int      `json:"packs_read"`
	BytesRead         int64    `json:"bytes_read"`
	Blobs             int      `json:"blobs"`
}

// OK reports whether check found no errors.
func (c *CheckResult) OK() bool { return len(c.Errors) == 0 }

type checker struct {
	r       *Repository
	res     CheckResult
	mu      sync.Mutex
	damaged map[BlobHandle]bool
}

func (c *checker) errorf(format string, args ...any) {
	c.mu.Lock()
	c.res.Errors = append(c.res.Errors, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// Check verifies the repository structure and, with ReadData, every stored
// byte. It names damaged packs, index objects and snapshots, and the
// snapshots whose data is affected.
func (r *Repository) Check(ctx context.Context, opts CheckOptions) (*CheckResult, error) {
	sel, err := parseSubset(opts.Subset)
	if err != nil {
		return nil, err
	}
	lock, err := r.Lock(ctx, false, "check", 0)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	defer lock.Unlock()
	c := &checker{r: r, damaged: map[BlobHandle]bool{}}

	// 1. Index objects, each on its own so one bad object is named.
	ids, err := r.listIDs(ctx, "index/")
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	idx := newMasterIndex(r.cache)
	defer idx.Close()
	packBlobs := map[ID][]PackedBlob{}
	for _, id := range ids {
		f, err := r.loadIndexNoCache(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			c.errorf("index %s: %v", id.Short(), err)
			c.res.DamagedIndexes = append(c.res.DamagedIndexes, id.String())
			continue
		}
		for _, p := range f.Packs {
			idx.addPack(p)
			packBlobs[p.ID] = append(packBlobs[p.ID], p.Blobs...)
		}
	}
	c.res.Blobs = idx.Len()

	// 2. Every indexed pack exists with a plausible size; stray packs are noted.
	stored := map[ID]int64{}
	if err := r.store.List(ctx, "data/", func(i blob.Info) error {
		if id, err := ParseID(i.Name[strings.LastIndex(i.Name, "/")+1:]); err == nil {
			stored[id] = i.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	c.res.Packs = len(stored)
	missingPack := map[ID]bool{}
	for p, blobs := range packBlobs {
		size, ok := stored[p]
		if !ok {
			c.errorf("pack %s is in the index but missing from storage", p.Short())
			missingPack[p] = true
			for _, b := range blobs {
				c.damaged[BlobHandle{Type: b.Type, ID: b.ID}] = true
			}
			continue
		}
		for _, b := range blobs {
			if int64(b.Offset)+int64(b.Length) > size {
				c.errorf("pack %s: blob %s lies past the end of the pack", p.Short(), b.ID.Short())
				missingPack[p] = true
			}
		}
	}
	for p := range stored {
		if _, ok := packBlobs[p]; !ok {
			c.res.Warnings = append(c.res.Warnings, fmt.Sprintf("pack %s is not referenced by any index (left by an interrupted backup or prune; prune removes it)", p.Short()))
		}
	}

	// 3. Read and verify data.
	if opts.ReadData {
		var todo []ID
		for p := range packBlobs {
			if !missingPack[p] && sel(p) {
				todo = append(todo, p)
			}
		}
		sort.Slice(todo, func(i, j int) bool { return todo[i].String() < todo[j].String() })
		var total, done int64
		for _, p := range todo {
			total += stored[p]
		}
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.conns)
		for _, p := range todo {
			g.Go(func() error {
				n, err := c.readPack(gctx, p, stored[p], packBlobs[p])
				if err != nil {
					return err
				}
				d := atomic.AddInt64(&done, n)
				if opts.Progress != nil {
					opts.Progress(d, total)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, fmt.Errorf("check: %w", err)
		}
		c.res.PacksRead = len(todo)
		c.res.BytesRead = done
	}

	// 4. Snapshots and trees: everything referenced must be indexed and intact.
	sids, err := r.listIDs(ctx, "snapshots/")
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	c.res.Snapshots = len(sids)
	treeState := map[ID]bool{} // tree ID -> intact
	for _, sid := range sids {
		sn, err := r.LoadSnapshot(ctx, sid)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			c.errorf("snapshot %s: %v", sid.Short(), err)
			c.res.DamagedSnapshots = append(c.res.DamagedSnapshots, sid.String())
			continue
		}
		if !c.walkTree(ctx, idx, sn.Tree, "/", sid, treeState) {
			c.res.AffectedSnapshots = append(c.res.AffectedSnapshots, sid.String())
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	for _, l := range [][]string{c.res.DamagedPacks, c.res.AffectedSnapshots, c.res.DamagedSnapshots} {
		sort.Strings(l)
	}
	return &c.res, nil
}

// walkTree reports whether everything below tree is indexed and undamaged.
func (c *checker) walkTree(ctx context.Context, idx *MasterIndex, tree ID, path string, sid ID, state map[ID]bool) bool {
	if ok, seen := state[tree]; seen {
		return ok
	}
	ok := true
	h := BlobHandle{Type: TreeBlob, ID: tree}
	if c.damaged[h] {
		c.errorf("snapshot %s: tree %s (%s) is damaged", sid.Short(), tree.Short(), path)
		state[tree] = false
		return false
	}
	t, err := c.r.LoadTree(ctx, idx, tree)
	if err != nil {
		c.errorf("snapshot %s: %s: %v", sid.Short(), path, err)
		state[tree] = false
		return false
	}
	for _, n := range t.Nodes {
		p := strings.TrimSuffix(path, "/") + "/" + n.Name
		switch n.Type {
		case NodeDir:
			if !c.walkTree(ctx, idx, *n.Subtree, p, sid, state) {
				ok = false
			}
		case NodeFile:
			content, err := c.r.FileContent(ctx, idx, n)
			if err != nil {
				c.errorf("snapshot %s: %s: %v", sid.Short(), p, err)
				ok = false
				continue
			}
			for _, ref := range content {
				if ref.Zero > 0 {
					continue
				}
				bh := BlobHandle{Type: DataBlob, ID: ref.ID}
				if !idx.Has(bh) {
					c.errorf("snapshot %s: %s: data blob %s is missing", sid.Short(), p, ref.ID.Short())
					ok = false
					break
				}
				if c.damaged[bh] {
					c.errorf("snapshot %s: %s: data blob %s is damaged", sid.Short(), p, ref.ID.Short())
					ok = false
					break
				}
			}
		}
	}
	state[tree] = ok
	return ok
}

// readPack downloads a whole pack and verifies its header against the index
// and every blob against its ID.
func (c *checker) readPack(ctx context.Context, p ID, size int64, indexed []PackedBlob) (int64, error) {
	rc, err := c.r.store.Get(ctx, packName(p), 0, 0)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		c.packDamaged(p, indexed, fmt.Sprintf("pack %s: %v", p.Short(), err))
		return 0, nil
	}
	bp := packBufs.Get().(*[]byte)
	defer packBufs.Put(bp)
	data, err := readAllInto(rc, (*bp)[:0], size)
	*bp = data
	rc.Close()
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		c.packDamaged(p, indexed, fmt.Sprintf("pack %s: read: %v", p.Short(), err))
		return 0, nil
	}
	n := int64(len(data))
	var problems []string
	header, err := parsePack(c.r.key, p, data)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		inHeader := map[BlobHandle]PackedBlob{}
		for _, e := range header {
			inHeader[BlobHandle{Type: e.Type, ID: e.ID}] = e
		}
		for _, e := range indexed {
			he, ok := inHeader[BlobHandle{Type: e.Type, ID: e.ID}]
			if !ok || he.Offset != e.Offset || he.Length != e.Length {
				problems = append(problems, fmt.Sprintf("pack %s: index entry for blob %s does not match the pack header", p.Short(), e.ID.Short()))
			}
		}
	}
	var s scratch
	for _, e := range indexed {
		if int64(e.Offset)+int64(e.Length) > n {
			c.markDamaged(e)
			continue
		}
		if _, err := c.r.openBlob(e, data[e.Offset:e.Offset+e.Length], &s); err != nil {
			problems = append(problems, fmt.Sprintf("pack %s: %v", p.Short(), err))
			c.markDamaged(e)
		}
	}
	if len(problems) > 0 {
		c.mu.Lock()
		c.res.DamagedPacks = append(c.res.DamagedPacks, p.String())
		c.res.Errors = append(c.res.Errors, problems...)
		c.mu.Unlock()
	}
	return n, nil
}

func (c *checker) markDamaged(e PackedBlob) {
	c.mu.Lock()
	c.damaged[BlobHandle{Type: e.Type, ID: e.ID}] = true
	c.mu.Unlock()
}

func (c *checker) packDamaged(p ID, blobs []PackedBlob, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.DamagedPacks = append(c.res.DamagedPacks, p.String())
	c.res.Errors = append(c.res.Errors, msg)
	for _, b := range blobs {
		c.damaged[BlobHandle{Type: b.Type, ID: b.ID}] = true
	}
}

// loadIndexNoCache reads an index object from storage, bypassing the cache,
// so check sees what the repository really holds.
func (r *Repository) loadIndexNoCache(ctx context.Context, id ID) (*IndexFile, error) {
	name := "index/" + id.String()
	sealed, err := readObject(ctx, r, name)
	if err != nil {
		return nil, err
	}
	plain, err := r.openObject(name, sealed)
	if err != nil {
		return nil, err
	}
	return decodeIndex(plain)
}

// ValidateSubset checks a --read-data-subset value without opening anything.
func ValidateSubset(s string) error {
	_, err := parseSubset(s)
	return err
}

func parseSubset(s string) (func(ID) bool, error) {
	if s == "" {
		return func(ID) bool { return true }, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		pct, err := strconv.ParseFloat(p, 64)
		if err != nil || pct <= 0 || pct > 100 {
			return nil, fmt.Errorf("check: --read-data-subset %q: want N%% with 0 < N <= 100", s)
		}
		return func(ID) bool { return rand.Float64()*100 < pct }, nil
	}
	n, m, ok := strings.Cut(s, "/")
	if ok {
		a, err1 := strconv.Atoi(n)
		b, err2 := strconv.Atoi(m)
		if err1 == nil && err2 == nil && b > 0 && a >= 1 && a <= b {
			return func(id ID) bool { return int(binary.BigEndian.Uint32(id[:4])%uint32(b)) == a-1 }, nil
		}
	}
	return nil, fmt.Errorf("check: --read-data-subset %q: want N%% or N/M with 1 <= N <= M", s)
}

// packBufs recycles whole-pack buffers between reads.
var packBufs = sync.Pool{New: func() any { b := make([]byte, 0, 17<<20); return &b }}

// readAllInto reads rd to the end into buf, sized for the expected length
// so that a whole pack is read without repeated growth.
func readAllInto(rd io.Reader, buf []byte, expect int64) ([]byte, error) {
	if int64(cap(buf)) < expect+1 {
		buf = make([]byte, 0, expect+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
