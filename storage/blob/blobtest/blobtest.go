// Package blobtest is the contract suite every blob.Store implementation
// must pass. Call Run from the implementation's own tests with a function
// returning a fresh, empty store.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"testing"

	"github.com/vigilops/vigil/storage/blob"
)

// Run runs the contract suite. newStore must return an empty store.
func Run(t *testing.T, newStore func(t *testing.T) blob.Store) {
	ctx := context.Background()

	t.Run("PutGetRoundTrip", func(t *testing.T) {
		s := newStore(t)
		for _, size := range []int{0, 1, 4096, 5<<20 + 17} {
			data := random(t, size)
			name := fmt.Sprintf("data/ab/obj-%d", size)
			if err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
				t.Fatalf("put %d bytes: %v", size, err)
			}
			got := mustGet(t, s, name, 0, 0)
			if !bytes.Equal(got, data) {
				t.Fatalf("size %d: got %d bytes back, content differs", size, len(got))
			}
			info, err := s.Stat(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != int64(size) {
				t.Fatalf("stat size %d, want %d", info.Size, size)
			}
		}
	})

	t.Run("RangedGet", func(t *testing.T) {
		s := newStore(t)
		data := random(t, 100000)
		if err := s.Put(ctx, "data/cd/ranged", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		cases := []struct{ off, n int64 }{{0, 10}, {5, 1}, {99990, 10}, {50000, 0}, {12345, 54321}}
		for _, c := range cases {
			got := mustGet(t, s, "data/cd/ranged", c.off, c.n)
			end := c.off + c.n
			if c.n == 0 {
				end = int64(len(data))
			}
			if !bytes.Equal(got, data[c.off:end]) {
				t.Fatalf("range %d+%d: wrong bytes (%d returned)", c.off, c.n, len(got))
			}
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Get(ctx, "snapshots/missing", 0, 0); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("get missing: %v, want ErrNotFound", err)
		}
		if _, err := s.Stat(ctx, "snapshots/missing"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat missing: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "snapshots/missing"); err != nil {
			t.Fatalf("delete missing must succeed: %v", err)
		}
	})

	t.Run("OverwriteAndDelete", func(t *testing.T) {
		s := newStore(t)
		if err := s.Put(ctx, "locks/x", bytes.NewReader([]byte("one"))); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "locks/x", bytes.NewReader([]byte("second"))); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "locks/x", 0, 0); string(got) != "second" {
			t.Fatalf("after overwrite got %q", got)
		}
		if err := s.Delete(ctx, "locks/x"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "locks/x"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat after delete: %v", err)
		}
	})

	t.Run("ListPrefix", func(t *testing.T) {
		s := newStore(t)
		names := []string{"data/00/a", "data/00/b", "data/ff/c", "index/i1", "snapshots/s1", "config"}
		for _, n := range names {
			if err := s.Put(ctx, n, bytes.NewReader([]byte(n))); err != nil {
				t.Fatal(err)
			}
		}
		check := func(prefix string, want []string) {
			t.Helper()
			var got []string
			err := s.List(ctx, prefix, func(i blob.Info) error {
				if i.Size != int64(len(i.Name)) {
					t.Errorf("list %s: size %d, want %d", i.Name, i.Size, len(i.Name))
				}
				got = append(got, i.Name)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(got)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("list %q = %v, want %v", prefix, got, want)
			}
		}
		check("data/", []string{"data/00/a", "data/00/b", "data/ff/c"})
		check("data/00/", []string{"data/00/a", "data/00/b"})
		check("index/", []string{"index/i1"})
		check("locks/", nil)
		stop := errors.New("stop")
		n := 0
		err := s.List(ctx, "data/", func(blob.Info) error { n++; return stop })
		if !errors.Is(err, stop) || n != 1 {
			t.Fatalf("list must stop at callback error: err=%v calls=%d", err, n)
		}
	})

	t.Run("PutRewindsPayload", func(t *testing.T) {
		s := newStore(t)
		r := bytes.NewReader([]byte("rewind me"))
		_, _ = r.Seek(4, io.SeekStart) // a retry would start from the middle
		if err := s.Put(ctx, "snapshots/rw", r); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "snapshots/rw", 0, 0); string(got) != "rewind me" {
			t.Fatalf("got %q", got)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				name := fmt.Sprintf("data/%02x/c%d", i, i)
				data := bytes.Repeat([]byte{byte(i)}, 10000+i)
				if err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
					errs <- err
					return
				}
				rc, err := s.Get(ctx, name, 0, 0)
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("object %s mismatch (%v)", name, err)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})

	t.Run("CancelledContext", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, "data/00/cancelled", bytes.NewReader([]byte("x"))); err == nil {
			t.Fatal("put with cancelled context succeeded")
		}
		if _, err := s.Stat(ctx, "data/00/cancelled"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("cancelled put left an object: %v", err)
		}
	})
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustGet(t *testing.T, s blob.Store, name string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), name, off, n)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return b
}
