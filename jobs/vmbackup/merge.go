package vmbackup

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/vigilops/vigil/storage/repo"
)

// The repository stores images in 64 MiB segments: an unchanged segment
// reuses last night's chunks unread, a changed one is chunked again as a
// whole. Reading a whole changed segment from vCenter would make a 2 %
// scattered change cost nearly a full read, so inside changed segments
// only the changed areas (plus small gaps, see areaGap) come from the disk
// transport; the rest comes from last night's image in the repository,
// which changed block tracking says is identical there. The stored result
// is the same either way; only the network reads shrink.

// areaGap joins changed areas closer than this into one read: one request
// for a small gap is cheaper than two requests.
const areaGap = 256 << 10

// coalesce joins sorted areas closer than gap.
func coalesce(areas []Area, gap int64) []Area {
	var out []Area
	for _, a := range areas {
		if n := len(out); n > 0 && a.Start-(out[n-1].Start+out[n-1].Length) < gap {
			out[n-1].Length = max(out[n-1].Start+out[n-1].Length, a.Start+a.Length) - out[n-1].Start
			continue
		}
		out = append(out, a)
	}
	return out
}

// mergedReader reads changed areas from the disk and everything else from
// the base image.
type mergedReader struct {
	disk  io.ReaderAt
	base  io.ReaderAt
	areas []Area // sorted, coalesced
}

// hintedReader is implemented by readers that can bound a new request to
// where the caller will stop reading (rangeReader).
type hintedReader interface {
	readAtUntil(p []byte, off, until int64) (int, error)
}

func (m *mergedReader) ReadAt(p []byte, off int64) (int, error) {
	pos, end := off, off+int64(len(p))
	i := sort.Search(len(m.areas), func(i int) bool { return m.areas[i].Start+m.areas[i].Length > pos })
	for pos < end {
		var e int64
		var err error
		buf := func(e int64) []byte { return p[pos-off : e-off] }
		if i < len(m.areas) && m.areas[i].Start <= pos {
			a := m.areas[i]
			e = min(end, a.Start+a.Length)
			if h, ok := m.disk.(hintedReader); ok {
				_, err = h.readAtUntil(buf(e), pos, a.Start+a.Length)
			} else {
				_, err = m.disk.ReadAt(buf(e), pos)
			}
			i++
		} else {
			e = end
			if i < len(m.areas) {
				e = min(end, m.areas[i].Start)
			}
			_, err = m.base.ReadAt(buf(e), pos)
		}
		if err != nil && !(err == io.EOF && e == end) {
			return int(pos - off), err
		}
		if err == io.EOF {
			return int(e - off), io.EOF
		}
		pos = e
	}
	return len(p), nil
}

// baseImage reads a stored image at random offsets, keeping a few recent
// blobs: reads come in sequential runs per segment.
type baseImage struct {
	// ctx is the disk read's context: io.ReaderAt has no context
	// parameter, and this reader lives exactly as long as that read.
	ctx  context.Context
	r    *repo.Repository
	idx  *repo.MasterIndex
	refs []repo.ContentRef
	offs []int64 // start of each piece
	size int64

	mu    sync.Mutex
	cache map[repo.ID][]byte
	order []repo.ID
}

const baseCacheBlobs = 16 // image chunks are at most 256 KiB: 4 MiB

func newBaseImage(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, n *repo.Node) (*baseImage, error) {
	content, err := r.FileContent(ctx, idx, n)
	if err != nil {
		return nil, err
	}
	b := &baseImage{ctx: ctx, r: r, idx: idx, refs: content, offs: make([]int64, len(content)), cache: map[repo.ID][]byte{}}
	for i, c := range content {
		b.offs[i] = b.size
		if c.Zero > 0 {
			b.size += int64(c.Zero)
			continue
		}
		_, e, ok := idx.Lookup(repo.BlobHandle{Type: repo.DataBlob, ID: c.ID})
		if !ok {
			return nil, fmt.Errorf("last image: data blob %s is missing from the index", c.ID.Short())
		}
		b.size += int64(e.RawLength)
	}
	if b.size != int64(n.Size) {
		return nil, fmt.Errorf("last image: pieces cover %d bytes, size is %d", b.size, n.Size)
	}
	return b, nil
}

func (b *baseImage) ReadAt(p []byte, off int64) (int, error) {
	i := sort.Search(len(b.offs), func(i int) bool { return i+1 == len(b.offs) || b.offs[i+1] > off })
	n := 0
	for n < len(p) && i < len(b.refs) && off+int64(n) < b.size {
		o := off + int64(n)
		end := b.size
		if i+1 < len(b.offs) {
			end = b.offs[i+1]
		}
		k := int(min(int64(len(p)-n), end-o))
		if c := b.refs[i]; c.Zero > 0 {
			clear(p[n : n+k])
		} else {
			data, err := b.blob(c.ID)
			if err != nil {
				return n, fmt.Errorf("read last image at offset %d: %w", o, err)
			}
			within := o - b.offs[i]
			copy(p[n:n+k], data[within:within+int64(k)])
		}
		n += k
		i++
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (b *baseImage) blob(id repo.ID) ([]byte, error) {
	b.mu.Lock()
	if d, ok := b.cache[id]; ok {
		b.mu.Unlock()
		return d, nil
	}
	b.mu.Unlock()
	d, err := b.r.LoadBlob(b.ctx, b.idx, repo.BlobHandle{Type: repo.DataBlob, ID: id}, nil)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.cache[id]; !ok {
		b.cache[id] = d
		b.order = append(b.order, id)
		if len(b.order) > baseCacheBlobs {
			delete(b.cache, b.order[0])
			b.order = b.order[1:]
		}
	}
	return d, nil
}
