package repo

import (
	"context"
	"fmt"
	"io"
	"sort"
)

// Extent is a byte range of a disk image.
type Extent struct {
	Off, Len int64
}

type piece struct {
	off, n int64
	ref    ContentRef
}

// AddImageExtents stores a disk image of which only the extents in changed
// differ from base (last night's node for the same disk, e.g. from vSphere
// changed block tracking). Content-defined chunking depends only on the
// bytes since the start of the current chunk, so re-chunking can start at
// the base chunk boundary before each change and stop at the first new
// boundary, past the change, that is also a base boundary: from there on the
// chunks are last night's. Only those bytes are read from src; the result is
// exactly what chunking the whole new image would give, and every night
// restores on its own.
func (b *Builder) AddImageExtents(ctx context.Context, p string, src ImageSource, size int64, meta FileMeta, base *Node, changed []Extent) (*Node, ImageStats, error) {
	if base == nil || int64(base.Size) != size {
		return b.AddImage(ctx, p, src, size, meta, nil, nil)
	}
	segs, err := b.r.segmentRefs(ctx, b.idx, base)
	if err != nil {
		b.r.log.Warn("earlier image unusable as base; reading everything", "path", p, "err", err)
		return b.AddImage(ctx, p, src, size, meta, nil, nil)
	}
	prof, err := b.r.Profile("image")
	if err != nil {
		return nil, ImageStats{}, err
	}
	var pieces []piece
	var off int64
	for _, seg := range segs {
		for _, ref := range seg {
			n := int64(ref.Zero)
			if n == 0 {
				_, e, ok := b.idx.Lookup(BlobHandle{Type: DataBlob, ID: ref.ID})
				if !ok {
					return b.AddImage(ctx, p, src, size, meta, nil, nil)
				}
				n = int64(e.RawLength)
			}
			pieces = append(pieces, piece{off: off, n: n, ref: ref})
			off += n
		}
	}
	ext := normalizeExtents(changed, size)
	pieces = splitZeroRuns(pieces, ext, int64(prof.Min))
	var cb contentBuilder
	var st ImageStats
	for i, ei := 0, 0; i < len(pieces); {
		pc := pieces[i]
		if ei >= len(ext) || ext[ei].Off >= pc.off+pc.n {
			if err := cb.add(ctx, b.a, []ContentRef{pc.ref}); err != nil {
				return nil, st, err
			}
			st.BytesReused += pc.n
			i++
			continue
		}
		var refs []ContentRef
		var read int64
		from := pc.off
		refs, i, ei, read, err = b.rechunk(ctx, src, size, prof, pieces, i, ext, ei)
		if err != nil {
			return nil, st, fmt.Errorf("add %s: %w", p, err)
		}
		to := size
		if i < len(pieces) {
			to = pieces[i].off
		}
		st.BytesRead += read
		st.BytesReused += to - from - read // the rest of a zero run reused
		if err := cb.add(ctx, b.a, refs); err != nil {
			return nil, st, err
		}
	}
	n := metaNode(meta)
	if err := cb.finish(ctx, b.a, n); err != nil {
		return nil, st, err
	}
	n.Size = uint64(size)
	return n, st, b.place(p, n)
}

// normalizeExtents sorts, clips and merges extents.
func normalizeExtents(in []Extent, size int64) []Extent {
	var ext []Extent
	for _, e := range in {
		if e.Len <= 0 || e.Off >= size || e.Off < 0 {
			continue
		}
		ext = append(ext, Extent{e.Off, min(e.Len, size-e.Off)})
	}
	sort.Slice(ext, func(i, j int) bool { return ext[i].Off < ext[j].Off })
	var out []Extent
	for _, e := range ext {
		if k := len(out); k > 0 && e.Off <= out[k-1].Off+out[k-1].Len {
			out[k-1].Len = max(out[k-1].Len, e.Off+e.Len-out[k-1].Off)
			continue
		}
		out = append(out, e)
	}
	return out
}

// rechunk chunks src from the start of pieces[i] until it is past every
// change it met and on a base boundary. It returns the new pieces, the index
// of the base piece to continue with, the next extent and the bytes read.
func (b *Builder) rechunk(ctx context.Context, src ImageSource, size int64, prof ChunkProfile, pieces []piece, i int, ext []Extent, ei int) ([]ContentRef, int, int, int64, error) {
	a := b.a
	pool := a.pool(prof.Max)
	pos := pieces[i].off
	start := pos
	var refs []ContentRef
	j := i // first base piece starting at or after pos
	for {
		segEnd := min((pos/segmentSize+1)*segmentSize, size)
		rd := &trackedReader{r: io.NewSectionReader(src, pos, segEnd-pos), end: pos}
		ch := a.newChunker(rd, prof)
		for {
			bp := pool.Get().(*[]byte)
			c, err := ch.Next(*bp)
			if err == io.EOF {
				pool.Put(bp)
				break
			}
			if err != nil {
				pool.Put(bp)
				return nil, 0, 0, 0, fmt.Errorf("read at %d: %w", pos, err)
			}
			pos += int64(c.Length)
			a.done.Add(int64(c.Length))
			a.chunks.Add(1)
			if isZero(c.Data) {
				pool.Put(bp)
				refs = append(refs, ContentRef{Zero: uint64(c.Length)})
			} else {
				id, _, err := a.w.SaveBlob(ctx, DataBlob, c.Data, func() { pool.Put(bp) })
				if err != nil {
					return nil, 0, 0, 0, err
				}
				refs = append(refs, ContentRef{ID: id})
			}
			synced, nj, nei, carry := resynced(pos, pieces, j, ext, ei, int64(prof.Min))
			// The chunker reads ahead: if that already fetched part of the
			// next change, chunk on through it rather than read it twice.
			if synced && nei < len(ext) && ext[nei].Off < rd.end {
				synced = false
			}
			if synced {
				if carry > 0 {
					refs = append(refs, ContentRef{Zero: uint64(carry)})
				}
				a.doneChunker(ch)
				return refs, nj, nei, pos - start, nil
			}
			j, ei = nj, nei
		}
		a.doneChunker(ch)
		if pos != segEnd {
			return nil, 0, 0, 0, fmt.Errorf("read at %d: short segment (%d of %d bytes)", pos, pos, segEnd)
		}
		if pos >= size {
			return refs, len(pieces), len(ext), pos - start, nil
		}
		// A segment boundary is always a base boundary, but changes go on:
		// start the next segment's chunker fresh, as a full backup does.
	}
}

// resynced reports whether pos is a base boundary with no change pending
// before it, advancing the base piece and extent cursors. Boundaries inside
// a base zero run count too: zero data is cut at exactly the minimum chunk
// size, so a run of them has a boundary every minSize bytes from its start;
// carry is then the rest of that zero run, reused as it is.
func resynced(pos int64, pieces []piece, j int, ext []Extent, ei int, minSize int64) (synced bool, nj, nei int, carry int64) {
	for ei < len(ext) && ext[ei].Off+ext[ei].Len <= pos {
		ei++
	}
	for j < len(pieces) && pieces[j].off < pos {
		j++
	}
	if ei < len(ext) && ext[ei].Off < pos {
		return false, j, ei, 0 // still inside a change
	}
	if j < len(pieces) && pieces[j].off == pos {
		return true, j, ei, 0
	}
	if k := j - 1; k >= 0 && pieces[k].ref.Zero > 0 && (pos-pieces[k].off)%minSize == 0 {
		end := pieces[k].off + pieces[k].n
		// The rest of the run is reused only if no change starts inside it.
		if ei >= len(ext) || ext[ei].Off >= end {
			return true, j, ei, end - pos
		}
	}
	return false, j, ei, 0
}

// splitZeroRuns cuts base zero runs at the implicit chunk boundaries just
// before and after each change inside them (zero data is cut every minSize
// bytes from the run's start), so re-chunking starts and stops next to the
// change instead of at the ends of a run that may span a whole segment.
func splitZeroRuns(pieces []piece, ext []Extent, minSize int64) []piece {
	out := make([]piece, 0, len(pieces))
	for _, pc := range pieces {
		end := pc.off + pc.n
		if pc.ref.Zero == 0 {
			out = append(out, pc)
			continue
		}
		k := sort.Search(len(ext), func(i int) bool { return ext[i].Off+ext[i].Len > pc.off })
		var cuts []int64
		for ; k < len(ext) && ext[k].Off < end; k++ {
			s := pc.off + max(0, ext[k].Off-pc.off)/minSize*minSize
			e := pc.off + (ext[k].Off+ext[k].Len-pc.off+minSize-1)/minSize*minSize
			for _, c := range []int64{s, e} {
				if c > pc.off && c < end && (len(cuts) == 0 || c > cuts[len(cuts)-1]) {
					cuts = append(cuts, c)
				}
			}
		}
		at := pc.off
		for _, c := range append(cuts, end) {
			out = append(out, piece{off: at, n: c - at, ref: ContentRef{Zero: uint64(c - at)}})
			at = c
		}
	}
	return out
}

// trackedReader remembers how far its reader has been read.
type trackedReader struct {
	r   io.Reader
	end int64
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.end += int64(n)
	return n, err
}
