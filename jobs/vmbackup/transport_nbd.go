package vmbackup

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vigilops/vigil/jobs/vmbackup/nbd"
)

// nbdTransport reads each disk from an NBD server, typically nbdkit with
// VMware's VDDK plugin that the site runs for the snapshot (VDDK is not
// redistributable, so vigil does not start it). The server and export of a
// disk come from the job's nbd_url template; see expandNBDURL.
type nbdTransport struct {
	template string
	snapshot string // managed object ID of the backup snapshot, "" without one
	opts     nbd.Options
}

// nbdPlaceholder matches {name} in an nbd_url template.
var nbdPlaceholder = regexp.MustCompile(`\{[a-z_]*\}`)

// nbdFields are the placeholders an nbd_url template may use.
var nbdFields = []string{"{vm}", "{uuid}", "{disk}", "{disk_key}", "{disk_uuid}", "{file}", "{snapshot}"}

// expandNBDURL fills an nbd_url template for one disk. Values are escaped
// for a URL path, so VM names with spaces or slashes stay one export name.
func expandNBDURL(tmpl string, vm *VM, d Disk, snapshot string) (nbd.Address, error) {
	vals := map[string]string{
		"{vm}": vm.Name, "{uuid}": vm.InstanceUUID, "{disk}": strconv.Itoa(d.Index), "{disk_key}": strconv.Itoa(int(d.Key)),
		"{disk_uuid}": d.UUID, "{file}": d.File, "{snapshot}": snapshot,
	}
	var bad string
	s := nbdPlaceholder.ReplaceAllStringFunc(tmpl, func(k string) string {
		v, ok := vals[k]
		if !ok {
			bad = k
		}
		return url.PathEscape(v)
	})
	if bad != "" {
		return nbd.Address{}, fmt.Errorf("nbd_url: unknown placeholder %s (known: %s)", bad, strings.Join(nbdFields, " "))
	}
	return nbd.ParseURL(s)
}

func (t *nbdTransport) Open(ctx context.Context, vm *VM, d Disk) (DiskReader, error) {
	a, err := expandNBDURL(t.template, vm, d, t.snapshot)
	if err != nil {
		return nil, err
	}
	c, err := nbd.Dial(ctx, a, t.opts)
	if err != nil {
		return nil, fmt.Errorf("open %s through nbd: %w", d.Label, err)
	}
	// A different size means the template points at another disk.
	if c.Size() != d.Capacity {
		c.Close()
		return nil, fmt.Errorf("open %s through nbd: export %s has %d bytes, the disk's capacity is %d (wrong nbd_url?)", d.Label, a, c.Size(), d.Capacity)
	}
	return &nbdReader{ctx: ctx, c: c}, nil
}

// nbdReader adapts an NBD connection to DiskReader.
type nbdReader struct {
	// ctx is the disk read's context: io.ReaderAt has no context
	// parameter, and the reader lives exactly as long as that read.
	ctx     context.Context
	c       *nbd.Client
	fetched atomic.Int64
}

func (r *nbdReader) ReadAt(p []byte, off int64) (int, error) {
	size := r.c.Size()
	if off >= size {
		return 0, io.EOF
	}
	want := p
	if rest := size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	if err := r.c.ReadAt(r.ctx, want, off); err != nil {
		return 0, fmt.Errorf("%s: %w", r.c.Addr(), err)
	}
	r.fetched.Add(int64(len(want)))
	if len(want) < len(p) {
		return len(want), io.EOF
	}
	return len(p), nil
}

func (r *nbdReader) Fetched() int64 { return r.fetched.Load() }
func (r *nbdReader) Close() error   { return r.c.Close() }

// ZeroRanges asks the server which ranges of the disk read as zeros (the
// holes of a thin disk; nbdkit's VDDK plugin answers from VMware's
// allocation map), so a full read can skip them. nbd.ErrNoBlockStatus
// means the server cannot tell.
func (r *nbdReader) ZeroRanges(ctx context.Context) ([]nbd.Extent, error) {
	size := r.c.Size()
	var zeros []nbd.Extent
	for off := int64(0); off < size; {
		// 256 MiB a request: at 4 KiB granularity the answer stays under 1 MiB.
		ext, err := r.c.BlockStatus(ctx, off, uint32(min(size-off, 256<<20)))
		if err != nil {
			return nil, err
		}
		for _, e := range ext {
			if !e.Zero {
				continue
			}
			if k := len(zeros) - 1; k >= 0 && zeros[k].Off+zeros[k].Len == e.Off {
				zeros[k].Len += e.Len
			} else {
				zeros = append(zeros, e)
			}
		}
		last := ext[len(ext)-1]
		off = last.Off + last.Len
	}
	return zeros, nil
}

// zeroMapper is a DiskReader that can say where the disk reads as zeros.
type zeroMapper interface {
	ZeroRanges(ctx context.Context) ([]nbd.Extent, error)
}

// zeroSkip serves the ranges in zeros (sorted, not overlapping) as zeros
// and reads only the rest from the disk.
type zeroSkip struct {
	io.ReaderAt
	zeros []nbd.Extent
}

func (z *zeroSkip) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		i := sort.Search(len(z.zeros), func(i int) bool { return z.zeros[i].Off+z.zeros[i].Len > pos })
		if i < len(z.zeros) && z.zeros[i].Off <= pos {
			k := int(min(int64(len(p)-n), z.zeros[i].Off+z.zeros[i].Len-pos))
			clear(p[n : n+k])
			n += k
			continue
		}
		k := int64(len(p) - n)
		if i < len(z.zeros) {
			k = min(k, z.zeros[i].Off-pos)
		}
		m, err := z.ReaderAt.ReadAt(p[n:n+int(k)], pos)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
