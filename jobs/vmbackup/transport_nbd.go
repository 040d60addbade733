package vmbackup

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"regexp"
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
