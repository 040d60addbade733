package repo

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"testing"

	"github.com/restic/chunker"
)

// Pipeline stage benchmarks on VM-like data (zero runs, repeated blocks,
// random blocks). Run: go test -run '^$' -bench . ./storage/repo/

func benchData() []byte {
	return mixedImage(rand.New(rand.NewSource(1)), 64<<20)
}

func BenchmarkChunkImageProfile(b *testing.B) {
	data := benchData()
	pol, _ := chunker.RandomPolynomial()
	buf := make([]byte, ProfileImage.Max)
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		ch := chunker.NewWithBoundaries(bytes.NewReader(data), pol, ProfileImage.Min, ProfileImage.Max)
		ch.SetAverageBits(ProfileImage.AvgBits)
		for {
			if _, err := ch.Next(buf); err == io.EOF {
				break
			}
		}
	}
}

func BenchmarkBlobID(b *testing.B) {
	k, _ := NewMasterKey()
	data := benchData()[:64<<10]
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		k.BlobID(data)
	}
}

func BenchmarkCompressFastest(b *testing.B) {
	data := benchData()
	b.SetBytes(int64(len(data)))
	var out []byte
	for i := 0; i < b.N; i++ {
		for off := 0; off < len(data); off += 64 << 10 {
			c := data[off : off+64<<10]
			if !incompressible(c) {
				out = zData.EncodeAll(c, out[:0])
			}
		}
	}
}

func BenchmarkSeal(b *testing.B) {
	k, _ := NewMasterKey()
	data := benchData()[:64<<10]
	out := make([]byte, 0, len(data)+Overhead)
	aad := blobAAD(DataBlob, ID{})
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		out = k.Seal(out[:0], data, aad)
	}
}

// BenchmarkBackupImage runs the whole write path (chunk, hash, compress,
// encrypt, pack, store on local disk) on a 64 MiB image.
func BenchmarkBackupImage(b *testing.B) {
	data := benchData()
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// A fresh repository per run: nothing dedups against earlier runs.
		b.StopTimer()
		r, _ := newTestRepo(b)
		b.StartTimer()
		bl, err := r.NewBuilder(ctx, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := bl.AddImage(ctx, "/disk.img", bytes.NewReader(data), int64(len(data)), FileMeta{}, nil, nil); err != nil {
			b.Fatal(err)
		}
		if _, err := bl.Commit(ctx, SnapshotMeta{Paths: []string{"bench"}}); err != nil {
			b.Fatal(err)
		}
	}
}
