package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/vigilops/vigil/storage/blob"
)

// PruneOptions tune prune.
type PruneOptions struct {
	// RepackUnused: a pack whose unused share is at least this fraction is
	// repacked (its live blobs copied into new packs). Default 0.3.
	RepackUnused float64
	DryRun       bool
	LockWait     int // seconds to wait for other locks
}

// PruneResult reports what prune did (or would do).
type PruneResult struct {
	PacksDeleted    int   `json:"packs_deleted"`
	PacksRepacked   int   `json:"packs_repacked"`
	PacksWritten    int   `json:"packs_written"`
	StrayPacks      int   `json:"stray_packs_deleted"`
	BytesFreed      int64 `json:"bytes_freed"`
	BytesRepacked   int64 `json:"bytes_repacked"`
	BlobsUsed       int   `json:"blobs_used"`
	BlobsUnused     int   `json:"blobs_unused"`
	IndexesReplaced int   `json:"indexes_replaced"`
}

// ErrPruneUnsafe is returned when prune cannot prove which data is in use.
var ErrPruneUnsafe = errors.New("prune refused: cannot read every snapshot and tree, run vigil check")

// UsedBlobs walks every snapshot and returns the blobs they reference.
func (r *Repository) UsedBlobs(ctx context.Context, idx *MasterIndex) (map[BlobHandle]bool, error) {
	sns, err := r.Snapshots(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPruneUnsafe, err)
	}
	used := map[BlobHandle]bool{}
	var walk func(ID) error
	walk = func(id ID) error {
		h := BlobHandle{Type: TreeBlob, ID: id}
		if used[h] {
			return nil
		}
		used[h] = true
		t, err := r.LoadTree(ctx, idx, id)
		if err != nil {
			return err
		}
		for _, n := range t.Nodes {
			switch n.Type {
			case NodeDir:
				if err := walk(*n.Subtree); err != nil {
					return err
				}
			case NodeFile:
				for _, l := range n.ContentLists {
					used[BlobHandle{Type: TreeBlob, ID: l}] = true
				}
				content, err := r.FileContent(ctx, idx, n)
				if err != nil {
					return err
				}
				for _, c := range content {
					if c.Zero == 0 {
						used[BlobHandle{Type: DataBlob, ID: c.ID}] = true
					}
				}
			}
		}
		return nil
	}
	for _, s := range sns {
		if err := walk(s.Tree); err != nil {
			return nil, fmt.Errorf("%w: snapshot %s: %v", ErrPruneUnsafe, s.ID.Short(), err)
		}
	}
	return used, nil
}

// Prune deletes data no snapshot references, under an exclusive lock.
//
// Order, so that a prune killed at any point leaves a valid repository:
// (1) copy live blobs of mostly-empty packs into new packs; (2) write new
// index objects describing every kept and new pack; (3) delete the old index
// objects; (4) delete packs that no index references any more. Until (3)
// finishes both old and new index are present, which readers tolerate
// (duplicates); packs are deleted only once no index names them.
func (r *Repository) Prune(ctx context.Context, opts PruneOptions) (*PruneResult, error) {
	if opts.RepackUnused <= 0 {
		opts.RepackUnused = 0.3
	}
	lock, err := r.Lock(ctx, true, "prune", 0)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	defer lock.Unlock()
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	defer idx.Close()
	oldIndexes := idx.IndexIDs()
	used, err := r.UsedBlobs(ctx, idx)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	stored := map[ID]int64{}
	if err := r.store.List(ctx, "data/", func(i blob.Info) error {
		if id, err := ParseID(i.Name[strings.LastIndex(i.Name, "/")+1:]); err == nil {
			stored[id] = i.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}

	type packUse struct {
		live, dead   []PackedBlob
		liveB, deadB int64
	}
	packs := map[ID]*packUse{}
	seen := map[BlobHandle]bool{}
	// Walk packs in a fixed order so a blob stored twice keeps one copy.
	var packOrder []ID
	byPack := map[ID][]PackedBlob{}
	idx.Each(func(p ID, b PackedBlob) { byPack[p] = append(byPack[p], b) })
	for p := range byPack {
		packOrder = append(packOrder, p)
	}
	sort.Slice(packOrder, func(i, j int) bool { return packOrder[i].String() < packOrder[j].String() })
	res := &PruneResult{}
	for _, p := range packOrder {
		u := &packUse{}
		packs[p] = u
		for _, b := range byPack[p] {
			h := BlobHandle{Type: b.Type, ID: b.ID}
			if used[h] && !seen[h] {
				seen[h] = true
				u.live = append(u.live, b)
				u.liveB += int64(b.Length)
				res.BlobsUsed++
			} else {
				u.dead = append(u.dead, b)
				u.deadB += int64(b.Length)
				res.BlobsUnused++
			}
		}
	}
	for h := range used {
		if !seen[h] {
			return nil, fmt.Errorf("prune: %w: %s blob %s is referenced but not indexed", ErrPruneUnsafe, h.Type, h.ID.Short())
		}
	}
	var remove, repack []ID
	keep := map[ID]bool{}
	for _, p := range packOrder {
		u := packs[p]
		if _, ok := stored[p]; !ok {
			// Indexed but gone: drop it from the index (check reports the loss).
			if u.liveB > 0 {
				return nil, fmt.Errorf("prune: %w: pack %s holds live data but is missing", ErrPruneUnsafe, p.Short())
			}
			continue
		}
		total := u.liveB + u.deadB
		switch {
		case u.liveB == 0:
			remove = append(remove, p)
			res.BytesFreed += stored[p]
		case float64(u.deadB) >= opts.RepackUnused*float64(total):
			repack = append(repack, p)
			res.BytesRepacked += u.liveB
			res.BytesFreed += u.deadB
		default:
			keep[p] = true
		}
	}
	for p := range stored {
		if _, ok := packs[p]; !ok {
			remove = append(remove, p)
			res.StrayPacks++
			res.BytesFreed += stored[p]
		}
	}
	res.PacksDeleted = len(remove)
	res.PacksRepacked = len(repack)
	if opts.DryRun {
		return res, nil
	}

	// (1) Repack live blobs, verifying each one on the way.
	newIdx := newMasterIndex(r.cache)
	defer newIdx.Close()
	w := r.NewWriter(ctx, newIdx)
	for _, p := range repack {
		if err := r.repackPack(ctx, w, p, packs[p].live); err != nil {
			w.Abort()
			return nil, fmt.Errorf("prune: %w", err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	res.PacksWritten = w.Stats().Packs
	crashHook("prune:repacked")
	// (2) New index: kept packs plus what the writer stored. The writer has
	// already saved index objects for its packs.
	var f IndexFile
	n := 0
	flush := func() error {
		if len(f.Packs) == 0 {
			return nil
		}
		_, err := r.saveIndexFile(ctx, &f)
		f, n = IndexFile{}, 0
		return err
	}
	for _, p := range packOrder {
		if !keep[p] {
			continue
		}
		f.Packs = append(f.Packs, IndexPack{ID: p, Blobs: append(packs[p].live, packs[p].dead...)})
		n += len(byPack[p])
		if n >= indexFlushBlobs {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("prune: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	crashHook("prune:indexed")
	// (3) Old index objects go; (4) then the packs nobody references.
	for _, id := range oldIndexes {
		if err := r.store.Delete(ctx, "index/"+id.String()); err != nil {
			return nil, fmt.Errorf("prune: %w", err)
		}
		crashHook("prune:deleted-index")
		res.IndexesReplaced++
	}
	for _, p := range append(remove, repack...) {
		if err := r.store.Delete(ctx, packName(p)); err != nil {
			return nil, fmt.Errorf("prune: %w", err)
		}
		crashHook("prune:deleted-pack")
	}
	return res, nil
}

// repackPack copies live blobs of pack p into the writer's packs. Sealed
// blobs are bound to their ID, not their pack, so they are copied as they
// are after being authenticated.
func (r *Repository) repackPack(ctx context.Context, w *Writer, p ID, live []PackedBlob) error {
	rc, err := r.store.Get(ctx, packName(p), 0, 0)
	if err != nil {
		return fmt.Errorf("repack %s: %w", p.Short(), err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return fmt.Errorf("repack %s: %w", p.Short(), err)
	}
	for _, b := range live {
		if int64(b.Offset)+int64(b.Length) > int64(len(data)) {
			return fmt.Errorf("repack %s: blob %s past end of pack", p.Short(), b.ID.Short())
		}
		sealed := data[b.Offset : b.Offset+b.Length]
		if _, err := r.openBlob(b, sealed, nil); err != nil {
			return fmt.Errorf("repack %s: %w (run vigil check --read-data)", p.Short(), err)
		}
		w.addSealed(b, append([]byte(nil), sealed...))
	}
	return nil
}

// addSealed adds an already sealed blob (used by repack).
func (w *Writer) addSealed(e PackedBlob, sealed []byte) {
	w.mu.Lock()
	w.inflight[BlobHandle{Type: e.Type, ID: e.ID}] = struct{}{}
	w.stats.BlobsNew++
	w.stats.BytesNew += int64(e.RawLength)
	w.mu.Unlock()
	w.addToPack(e, sealed)
}

// RepairIndex rebuilds the index from the pack headers alone: it reads the
// header of every pack, writes new index objects, then deletes the old ones.
// Packs whose header cannot be read are reported and left out.
func (r *Repository) RepairIndex(ctx context.Context) (packs int, bad []string, err error) {
	lock, err := r.Lock(ctx, true, "repair index", 0)
	if err != nil {
		return 0, nil, fmt.Errorf("repair index: %w", err)
	}
	defer lock.Unlock()
	old, err := r.listIDs(ctx, "index/")
	if err != nil {
		return 0, nil, fmt.Errorf("repair index: %w", err)
	}
	type item struct {
		id   ID
		size int64
	}
	var items []item
	if err := r.store.List(ctx, "data/", func(i blob.Info) error {
		if id, err := ParseID(i.Name[strings.LastIndex(i.Name, "/")+1:]); err == nil {
			items = append(items, item{id, i.Size})
		}
		return nil
	}); err != nil {
		return 0, nil, fmt.Errorf("repair index: %w", err)
	}
	results := make([]*IndexPack, len(items))
	errs := make([]error, len(items))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for i, it := range items {
		g.Go(func() error {
			entries, err := r.readPackHeader(gctx, it.id, it.size)
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				errs[i] = err
				return nil
			}
			results[i] = &IndexPack{ID: it.id, Blobs: entries}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, nil, fmt.Errorf("repair index: %w", err)
	}
	var f IndexFile
	n := 0
	for i, p := range results {
		if p == nil {
			bad = append(bad, fmt.Sprintf("pack %s: %v", items[i].id.Short(), errs[i]))
			continue
		}
		packs++
		f.Packs = append(f.Packs, *p)
		n += len(p.Blobs)
		if n >= indexFlushBlobs {
			if _, err := r.saveIndexFile(ctx, &f); err != nil {
				return 0, nil, fmt.Errorf("repair index: %w", err)
			}
			f, n = IndexFile{}, 0
		}
	}
	if len(f.Packs) > 0 {
		if _, err := r.saveIndexFile(ctx, &f); err != nil {
			return 0, nil, fmt.Errorf("repair index: %w", err)
		}
	}
	for _, id := range old {
		if err := r.store.Delete(ctx, "index/"+id.String()); err != nil {
			return 0, nil, fmt.Errorf("repair index: %w", err)
		}
	}
	return packs, bad, nil
}

// readPackHeader fetches and authenticates only the tail of a pack.
func (r *Repository) readPackHeader(ctx context.Context, id ID, size int64) ([]PackedBlob, error) {
	if size < 4+Overhead {
		return nil, fmt.Errorf("%w: pack of %d bytes", errBadHeader, size)
	}
	tail := min(size, 64<<10)
	b, err := r.readRange(ctx, packName(id), size-tail, tail)
	if err != nil {
		return nil, err
	}
	hl := int64(binary.LittleEndian.Uint32(b[len(b)-4:]))
	if hl+4 > size {
		return nil, fmt.Errorf("%w: header length %d", errBadHeader, hl)
	}
	if hl+4 > tail {
		if b, err = r.readRange(ctx, packName(id), size-hl-4, hl+4); err != nil {
			return nil, err
		}
	}
	sealed := b[int64(len(b))-4-hl : len(b)-4]
	plain, err := r.key.Open(nil, sealed, objectAAD(packName(id)))
	if err != nil {
		return nil, fmt.Errorf("pack %s header: %w", id.Short(), err)
	}
	return decodePackHeader(plain, size-4-hl)
}

func (r *Repository) readRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	rc, err := r.store.Get(ctx, name, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
