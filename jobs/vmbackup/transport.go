package vmbackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vmdk"
)

// DiskReader reads one disk of a snapshot at random offsets. Past the end
// of the backing data it reads zeros up to the disk's capacity.
type DiskReader interface {
	io.ReaderAt
	// Fetched is how many bytes came over the network so far.
	Fetched() int64
	Close() error
}

// Transport opens disks for reading. Implementations must bound their
// memory whatever the disk size.
type Transport interface {
	Open(ctx context.Context, vm *VM, d Disk) (DiskReader, error)
}

// datastoreTransport reads the disk's flat extent through vCenter's
// /folder endpoint with ranged GETs. It works wherever the extent is a
// plain file (VMFS and NFS flat and thin disks, powered-off VMs, the
// simulator); vSAN and vVol disks need the nbd transport.
type datastoreTransport struct {
	s *Session
}

// streamWindow is how far one ranged GET reaches; reads continue on the
// open response while they are sequential, so a segment costs one request.
const (
	streamWindow = 64 << 20
	maxIdle      = 8
)

func (t *datastoreTransport) Open(ctx context.Context, vm *VM, d Disk) (DiskReader, error) {
	extent, err := t.extent(ctx, vm, d)
	if err != nil {
		return nil, err
	}
	u, err := datastoreURL(t.s, vm.Datacenter, extent)
	if err != nil {
		return nil, err
	}
	r := &rangeReader{ctx: ctx, c: t.s.Client.Client, u: u, name: extent, size: d.Capacity}
	fileSize, err := r.probe(ctx)
	if err != nil {
		return nil, err
	}
	if fileSize > d.Capacity {
		return nil, fmt.Errorf("open %s: file has %d bytes, more than the disk's capacity %d", extent, fileSize, d.Capacity)
	}
	r.fileSize = fileSize
	return r, nil
}

// extent finds the flat extent file from the disk's descriptor; a
// descriptor that cannot be read falls back to vSphere's "-flat" naming.
func (t *datastoreTransport) extent(ctx context.Context, vm *VM, d Disk) (string, error) {
	desc, err := fetchFile(ctx, t.s, vm.Datacenter, d.File, 1<<20)
	if err == nil {
		if dd, perr := vmdk.ParseDescriptor(bytes.NewReader(desc)); perr == nil && len(dd.Extent) == 1 && dd.Extent[0].Info != "" {
			var dp object.DatastorePath
			dp.FromString(d.File)
			dp.Path = path.Join(path.Dir(dp.Path), dd.Extent[0].Info)
			return dp.String(), nil
		}
	}
	var dp object.DatastorePath
	if !dp.FromString(d.File) {
		return "", fmt.Errorf("disk %d: bad file name %q", d.Index, d.File)
	}
	dp.Path = strings.TrimSuffix(dp.Path, ".vmdk") + "-flat.vmdk"
	return dp.String(), nil
}

func datastoreURL(s *Session, dc, dsPath string) (*url.URL, error) {
	var dp object.DatastorePath
	if !dp.FromString(dsPath) {
		return nil, fmt.Errorf("bad datastore path %q", dsPath)
	}
	return object.NewDatastoreURL(*s.Client.URL(), dc, dp.Datastore, dp.Path), nil
}

// fetchFile downloads a small file (descriptor, .vmx, .nvram) whole.
func fetchFile(ctx context.Context, s *Session, dc, dsPath string, limit int64) ([]byte, error) {
	u, err := datastoreURL(s, dc, dsPath)
	if err != nil {
		return nil, err
	}
	res, err := s.Client.Client.DownloadRequest(ctx, u, &soap.Download{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", dsPath, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %s", dsPath, res.Status)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", dsPath, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("download %s: larger than %d bytes", dsPath, limit)
	}
	return b, nil
}

// rangeReader is an io.ReaderAt over HTTP range requests. Memory is
// bounded by the caller's buffers plus a few idle response bodies.
type rangeReader struct {
	// ctx is the disk read's context: io.ReaderAt has no context
	// parameter, and the reader lives exactly as long as that read.
	ctx      context.Context
	c        *soap.Client
	u        *url.URL
	name     string
	size     int64 // disk capacity
	fileSize int64 // bytes the file holds; the rest reads as zeros

	mu      sync.Mutex
	idle    []*stream
	fetched atomic.Int64
}

type stream struct {
	body     io.ReadCloser
	pos, end int64
}

func (r *rangeReader) Fetched() int64 { return r.fetched.Load() }

func (r *rangeReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.idle {
		s.body.Close()
	}
	r.idle = nil
	return nil
}

// probe learns the file size from a one-byte range request.
func (r *rangeReader) probe(ctx context.Context) (int64, error) {
	res, err := r.c.DownloadRequest(ctx, r.u, &soap.Download{Method: http.MethodGet, Headers: map[string]string{"Range": "bytes=0-0"}})
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", r.name, err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<16))
	switch res.StatusCode {
	case http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
		cr := res.Header.Get("Content-Range")
		i := strings.LastIndexByte(cr, '/')
		n, err := strconv.ParseInt(cr[i+1:], 10, 64)
		if i < 0 || err != nil {
			return 0, fmt.Errorf("open %s: bad Content-Range %q", r.name, cr)
		}
		return n, nil
	case http.StatusOK:
		return res.ContentLength, nil
	case http.StatusNotFound:
		return 0, fmt.Errorf("open %s: not found on the datastore", r.name)
	case http.StatusUnauthorized, http.StatusForbidden:
		return 0, fmt.Errorf("open %s: %s (session expired or no datastore browse privilege)", r.name, res.Status)
	}
	return 0, fmt.Errorf("open %s: %s", r.name, res.Status)
}

func (r *rangeReader) ReadAt(p []byte, off int64) (int, error) {
	return r.readAtUntil(p, off, off+streamWindow)
}

// readAtUntil is ReadAt for a caller that will read on up to until: a new
// request asks for no more than that.
func (r *rangeReader) readAtUntil(p []byte, off, until int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset", r.name)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if rest := r.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	n := 0
	for n < len(want) {
		o := off + int64(n)
		if o >= r.fileSize {
			clear(want[n:])
			n = len(want)
			break
		}
		lim := min(int64(len(want)-n), r.fileSize-o)
		m, err := r.readFile(want[n:n+int(lim)], o, max(until, o+lim))
		n += m
		if err != nil {
			return n, err
		}
	}
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readFile fills p from the file at off, continuing an idle response that
// stands at off if there is one. A broken response is reopened once.
func (r *rangeReader) readFile(p []byte, off, until int64) (int, error) {
	n := 0
	retried := false
	for n < len(p) {
		o := off + int64(n)
		s := r.take(o)
		if s == nil {
			var err error
			if s, err = r.open(o, until); err != nil {
				return n, err
			}
		}
		k := min(int64(len(p)-n), s.end-s.pos)
		m, err := io.ReadFull(s.body, p[n:n+int(k)])
		n += m
		s.pos += int64(m)
		r.fetched.Add(int64(m))
		if err != nil {
			s.body.Close()
			if retried || r.ctx.Err() != nil {
				return n, fmt.Errorf("read %s at offset %d: %w", r.name, s.pos, err)
			}
			retried = true
			continue
		}
		r.put(s)
	}
	return n, nil
}

func (r *rangeReader) take(off int64) *stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, s := range r.idle {
		if s.pos == off {
			r.idle = append(r.idle[:i], r.idle[i+1:]...)
			return s
		}
	}
	return nil
}

func (r *rangeReader) put(s *stream) {
	if s.pos >= s.end {
		s.body.Close()
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.idle = append(r.idle, s)
	if len(r.idle) > maxIdle {
		r.idle[0].body.Close()
		r.idle = r.idle[1:]
	}
}

func (r *rangeReader) open(off, until int64) (*stream, error) {
	end := min(until, off+streamWindow, r.fileSize)
	hdr := map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", off, end-1)}
	res, err := r.c.DownloadRequest(r.ctx, r.u, &soap.Download{Method: http.MethodGet, Headers: hdr})
	if err != nil {
		return nil, fmt.Errorf("read %s at offset %d: %w", r.name, off, err)
	}
	switch {
	case res.StatusCode == http.StatusPartialContent:
	case res.StatusCode == http.StatusOK && off == 0:
		// A server that ignores ranges sends the whole file.
		end = r.fileSize
	default:
		res.Body.Close()
		return nil, fmt.Errorf("read %s at offset %d: %w", r.name, off, errors.New(res.Status))
	}
	return &stream{body: res.Body, pos: off, end: end}, nil
}
