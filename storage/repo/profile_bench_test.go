package repo

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/restic/chunker"
)

// BenchmarkChunkProfiles measures candidate chunk profiles on the shared
// corpus (VIGIL_BENCH_CORPUS=dir made by ../shared/bench/gen): chunk count,
// new bytes for each step (a, a-next, b) after dedup, and chunking speed.
// It produced the table in docs/design.md:
//
//	VIGIL_BENCH_CORPUS=/path/to/corpus go test -run '^$' -bench ChunkProfiles -benchtime 1x ./storage/repo/
func BenchmarkChunkProfiles(b *testing.B) {
	dir := os.Getenv("VIGIL_BENCH_CORPUS")
	if dir == "" {
		b.Skip("set VIGIL_BENCH_CORPUS to a ../shared/bench/gen output directory")
	}
	profiles := []struct {
		name string
		p    ChunkProfile
	}{
		{"restic-1MiB", ChunkProfile{Min: 512 << 10, Max: 8 << 20, AvgBits: 20}},
		{"512KiB", ChunkProfile{Min: 256 << 10, Max: 4 << 20, AvgBits: 19}},
		{"128KiB", ChunkProfile{Min: 32 << 10, Max: 512 << 10, AvgBits: 17}},
		{"64KiB", ChunkProfile{Min: 16 << 10, Max: 256 << 10, AvgBits: 16}},       // the first image profile
		{"64KiB-min32", ChunkProfile{Min: 32 << 10, Max: 256 << 10, AvgBits: 15}}, // ProfileImage since 2026-11-27
		{"32KiB", ChunkProfile{Min: 8 << 10, Max: 128 << 10, AvgBits: 15}},
	}
	pol, _ := chunker.RandomPolynomial()
	key, _ := NewMasterKey()
	for _, pr := range profiles {
		b.Run(pr.name, func(b *testing.B) {
			seen := map[ID]bool{}
			var line string
			for _, f := range []string{"vm-a.img", "vm-a-next.img", "vm-b.img", "logs-day1", "logs-day2"} {
				var newRaw, newZ int64
				chunks := 0
				var read int64
				start := time.Now()
				err := filepath.Walk(filepath.Join(dir, f), func(p string, fi os.FileInfo, err error) error {
					if err != nil || !fi.Mode().IsRegular() {
						return err
					}
					fh, err := os.Open(p)
					if err != nil {
						return err
					}
					defer fh.Close()
					ch := chunker.NewWithBoundaries(fh, pol, pr.p.Min, pr.p.Max)
					ch.SetAverageBits(pr.p.AvgBits)
					buf := make([]byte, pr.p.Max)
					for {
						c, err := ch.Next(buf)
						if err == io.EOF {
							return nil
						}
						if err != nil {
							return err
						}
						chunks++
						read += int64(c.Length)
						if isZero(c.Data) {
							continue
						}
						id := key.BlobID(c.Data)
						if seen[id] {
							continue
						}
						seen[id] = true
						newRaw += int64(c.Length)
						z := zData.EncodeAll(c.Data, nil)
						newZ += int64(min(len(z), len(c.Data)))
					}
				})
				if err != nil {
					b.Fatal(err)
				}
				mbps := float64(read) / 1e6 / time.Since(start).Seconds()
				line += fmt.Sprintf(" | %s: %d chunks, new %.1f MB (%.1f MB stored), %.0f MB/s", f, chunks, float64(newRaw)/1e6, float64(newZ)/1e6, mbps)
			}
			b.Log(pr.name + line)
		})
	}
}
