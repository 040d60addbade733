package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/restic/chunker"
)

func TestInOrder(t *testing.T) {
	ctx := context.Background()
	var running, peak atomic.Int32
	fn := func(ctx context.Context, i int) (int, error) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // finish out of order
		return i * i, nil
	}
	var got []int
	err := inOrder(ctx, 3, 40, fn, func(i, v int) (bool, error) {
		if v != i*i {
			t.Fatalf("item %d got the result %d of another item", i, v)
		}
		got = append(got, i)
		return true, nil
	})
	if err != nil || len(got) != 40 {
		t.Fatalf("err %v, used %d of 40", err, len(got))
	}
	if p := peak.Load(); p > 3 || p < 2 {
		t.Fatalf("%d ran at once, want at most 3 (and more than one)", p)
	}

	// count < 0: until use says stop; nothing runs on afterwards.
	var used int
	err = inOrder(ctx, 2, -1, fn, func(i, v int) (bool, error) { used++; return i < 6, nil })
	if err != nil || used != 7 || running.Load() != 0 {
		t.Fatalf("stop: err %v, used %d, still running %d", err, used, running.Load())
	}

	// The first failure in order is returned and later items are cancelled.
	boom := errors.New("boom")
	var cancelled atomic.Int32
	err = inOrder(ctx, 4, 100, func(ctx context.Context, i int) (int, error) {
		if i == 5 {
			return 0, boom
		}
		if i > 5 {
			<-ctx.Done()
			cancelled.Add(1)
			return 0, ctx.Err()
		}
		return i, nil
	}, func(i, v int) (bool, error) { return true, nil })
	if !errors.Is(err, boom) || cancelled.Load() == 0 {
		t.Fatalf("err %v (want boom), cancelled %d", err, cancelled.Load())
	}
}

// A reused chunker must cut exactly as a fresh one, whatever it chunked
// before and with whichever profile.
func TestReusedChunkerCutsAsFresh(t *testing.T) {
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		t.Fatal(err)
	}
	a := &archiver{pol: pol, chunkers: newArchiverChunkers()}
	rng := rand.New(rand.NewPCG(3, 4))
	data := make([]byte, 6<<20)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	cuts := func(c *chunker.Chunker) []uint {
		var out []uint
		buf := make([]byte, 8<<20)
		for {
			ch, err := c.Next(buf)
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, ch.Start+ch.Length)
		}
	}
	for round, prof := range []ChunkProfile{ProfileImage, ProfileDefault, ProfileImage, ProfileDefault} {
		fresh := chunker.NewWithBoundaries(bytes.NewReader(data[round<<10:]), pol, prof.Min, prof.Max)
		fresh.SetAverageBits(prof.AvgBits)
		want := cuts(fresh)
		c := a.newChunker(bytes.NewReader(data[round<<10:]), prof)
		// Stop the reused one part-way, as an error or a resync would.
		if round%2 == 1 {
			if _, err := c.Next(make([]byte, prof.Max)); err != nil {
				t.Fatal(err)
			}
			a.doneChunker(c)
			c = a.newChunker(bytes.NewReader(data[round<<10:]), prof)
		}
		got := cuts(c)
		a.doneChunker(c)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("round %d: reused chunker cut at %v, a fresh one at %v", round, got, want)
		}
	}
	if len(a.chunkers) == 0 {
		t.Fatal("no chunker was kept for reuse")
	}
}

// A caller whose context ends while its blob waits for a sealer must not
// leave the blob marked in flight: another caller with the same data was
// told it is stored. inOrder cancels segments it no longer needs, so this
// happens in ordinary backups of growing files, not only on errors.
func TestSaveBlobStoresWhatItPromised(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := r.NewWriter(ctx, idx)
	rng := rand.New(rand.NewPCG(5, 6))
	blobs := make([][]byte, 96)
	for i := range blobs {
		blobs[i] = make([]byte, 256<<10)
		for j := range blobs[i] {
			blobs[i][j] = byte(rng.Uint32())
		}
	}
	var mu sync.Mutex
	promised := map[ID]bool{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			if g%2 == 0 { // half the callers are cancelled part-way
				time.AfterFunc(time.Duration(1+g)*time.Millisecond, cancel)
			}
			order := rand.New(rand.NewPCG(uint64(g), 1)).Perm(len(blobs))
			for _, i := range order {
				id, _, err := w.SaveBlob(cctx, DataBlob, blobs[i], nil)
				if err == nil {
					mu.Lock()
					promised[id] = true
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(promised) != len(blobs) {
		t.Fatalf("%d of %d blobs were saved by some caller", len(promised), len(blobs))
	}
	for id := range promised {
		if !idx.Has(BlobHandle{Type: DataBlob, ID: id}) {
			t.Fatalf("blob %s was reported saved but is not in the index after Flush", id.Short())
		}
	}
}
