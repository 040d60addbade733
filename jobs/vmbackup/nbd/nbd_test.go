package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilops/vigil/jobs/vmbackup/nbd"
	"github.com/vigilops/vigil/jobs/vmbackup/nbd/nbdkittest"
)

// dataFile writes size random bytes with a zero run in the middle (so
// structured replies may send holes) and returns its path and contents.
func dataFile(t testing.TB, size int) (string, []byte) {
	t.Helper()
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	clear(b[size/3 : size/2])
	p := filepath.Join(t.TempDir(), "disk-flat.vmdk")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestReadAgainstNbdkit(t *testing.T) {
	const size = 9<<20 + 4096 // not a multiple of the request size
	path, want := dataFile(t, size)
	srv := nbdkittest.Start(t, "-r", "file", "file="+path)
	for _, simple := range []bool{false, true} {
		name := "structured"
		if simple {
			name = "simple"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			c, err := nbd.Dial(ctx, srv.Addr, nbd.Options{MaxInFlight: 4, MaxRequest: 256 << 10, NoStructured: simple})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Size() != size {
				t.Fatalf("size %d, want %d", c.Size(), size)
			}
			if c.Structured() == simple {
				t.Fatalf("structured replies negotiated: %v, asked for simple: %v", c.Structured(), simple)
			}
			// Concurrent reads of odd sizes and offsets, each split into
			// several pipelined requests.
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(g), 9))
					for i := 0; i < 20; i++ {
						n := 1 + rng.IntN(1<<20)
						off := rng.Int64N(int64(size - n))
						buf := make([]byte, n)
						if err := c.ReadAt(ctx, buf, off); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(buf, want[off:off+int64(n)]) {
							errs <- errors.New("data differs at offset " + time.Duration(off).String())
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			whole := make([]byte, size)
			if err := c.ReadAt(ctx, whole, 0); err != nil || !bytes.Equal(whole, want) {
				t.Fatalf("whole read: err %v, equal %v", err, bytes.Equal(whole, want))
			}
			if err := c.ReadAt(ctx, make([]byte, 10), size-5); err == nil {
				t.Fatal("read past the end succeeded")
			}
		})
	}
}

func TestURLs(t *testing.T) {
	for in, want := range map[string]nbd.Address{
		"nbd://10.0.0.5/sda":                           {Network: "tcp", Addr: "10.0.0.5:10809", Export: "sda"},
		"nbd://[::1]:2000/":                            {Network: "tcp", Addr: "[::1]:2000", Export: ""},
		"nbd+unix:///ils-0?socket=/run/vigil/nbd.sock": {Network: "unix", Addr: "/run/vigil/nbd.sock", Export: "ils-0"},
	} {
		got, err := nbd.ParseURL(in)
		if err != nil || got != want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"nbds://h/x", "nbd+unix:///x", "nbd:///x", "http://h/x"} {
		if _, err := nbd.ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) accepted", bad)
		}
	}
}

func TestUnknownExportIsRefused(t *testing.T) {
	path, _ := dataFile(t, 1<<20)
	srv := nbdkittest.Start(t, "-r", "--filter=exportname", "file", "file="+path, "exportname=disk-0", "exportname-strict=true")
	a := srv.Addr
	a.Export = "disk-9"
	_, err := nbd.Dial(context.Background(), a, nbd.Options{})
	if err == nil || !strings.Contains(err.Error(), `export "disk-9"`) {
		t.Fatalf("dial of an unknown export: %v", err)
	}
	a.Export = "disk-0"
	c, err := nbd.Dial(context.Background(), a, nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// The error filter fails reads while its trigger file exists; the error
// reaches the caller as EIO and the connection stays usable.
func TestServerReadError(t *testing.T) {
	path, want := dataFile(t, 4<<20)
	trigger := filepath.Join(t.TempDir(), "fail")
	srv := nbdkittest.Start(t, "-r", "--filter=error", "file", "file="+path,
		"error-pread=EIO", "error-pread-rate=100%", "error-pread-file="+trigger)
	for _, simple := range []bool{false, true} {
		ctx := context.Background()
		c, err := nbd.Dial(ctx, srv.Addr, nbd.Options{NoStructured: simple})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(trigger, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		err = c.ReadAt(ctx, make([]byte, 3<<20), 1<<20)
		var re *nbd.ReadError
		if !errors.As(err, &re) || re.Errno != 5 || !strings.Contains(err.Error(), "EIO") {
			t.Fatalf("simple=%v: read with injected errors: %v", simple, err)
		}
		os.Remove(trigger)
		buf := make([]byte, 1<<20)
		if err := c.ReadAt(ctx, buf, 2<<20); err != nil || !bytes.Equal(buf, want[2<<20:3<<20]) {
			t.Fatalf("simple=%v: read after the fault: %v", simple, err)
		}
		c.Close()
	}
}

// The delay filter makes each read take 150 ms: with 2 requests allowed in
// flight, 8 requests need at least 4 rounds; a cancelled read returns
// promptly and leaves the connection closed, not hung.
func TestInFlightBoundAndCancel(t *testing.T) {
	path, _ := dataFile(t, 4<<20)
	srv := nbdkittest.Start(t, "-r", "--filter=delay", "file", "file="+path, "rdelay=150ms")
	ctx := context.Background()
	c, err := nbd.Dial(ctx, srv.Addr, nbd.Options{MaxInFlight: 2, MaxRequest: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	if err := c.ReadAt(ctx, make([]byte, 8*64<<10), 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 4*150*time.Millisecond*9/10 {
		t.Fatalf("8 delayed requests with 2 in flight took %v: the bound is not applied", d)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	err = c.ReadAt(cctx, make([]byte, 1<<20), 0)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled read: %v after %v", err, time.Since(start))
	}
	if err := c.ReadAt(ctx, make([]byte, 10), 0); err == nil {
		t.Fatal("read on a connection closed by cancellation succeeded")
	}
}

// Block status against nbdkit's file plugin on a sparse file: the holes
// come back as zero extents, the written ranges as data, the answers are
// contiguous from the offset asked, and a client without structured
// replies says it cannot ask.
func TestBlockStatusAgainstNbdkit(t *testing.T) {
	ctx := context.Background()
	const size = 64 << 20
	p := filepath.Join(t.TempDir(), "sparse-flat.vmdk")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("catalogue "), 1<<17)[:1<<20]
	written := []int64{8 << 20, 40<<20 + 4096}
	for _, off := range written {
		if _, err := f.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	srv := nbdkittest.Start(t, "-r", "file", "file="+p)
	c, err := nbd.Dial(ctx, srv.Addr, nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var all []nbd.Extent
	for off := int64(0); off < size; {
		ext, err := c.BlockStatus(ctx, off, uint32(min(size-off, 24<<20)))
		if err != nil {
			t.Fatalf("block status at %d: %v", off, err)
		}
		for _, e := range ext {
			if e.Off != off || e.Len <= 0 || e.Off+e.Len > size {
				t.Fatalf("extent %+v does not continue at %d inside the export", e, off)
			}
			off += e.Len
			all = append(all, e)
		}
	}
	var zero int64
	for _, e := range all {
		if !e.Zero {
			continue
		}
		zero += e.Len
		for _, w := range written {
			if e.Off < w+int64(len(data)) && w < e.Off+e.Len {
				t.Fatalf("zero extent %+v overlaps data written at %d", e, w)
			}
		}
	}
	if want := int64(size - 2*len(data) - 2*(1<<20)); zero < want {
		t.Fatalf("only %d of %d bytes reported as zeros (want at least %d): %+v", zero, size, want, all)
	}
	// The reads still agree with the map.
	got := make([]byte, len(data))
	if err := c.ReadAt(ctx, got, written[1]); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after block status: %v", err)
	}

	plain, err := nbd.Dial(ctx, srv.Addr, nbd.Options{NoStructured: true})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := plain.BlockStatus(ctx, 0, 4096); !errors.Is(err, nbd.ErrNoBlockStatus) {
		t.Fatalf("block status without structured replies: %v, want ErrNoBlockStatus", err)
	}
}
