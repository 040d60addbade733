package nbd_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigilops/vigil/jobs/vmbackup/nbd"
	"github.com/vigilops/vigil/jobs/vmbackup/nbd/nbdkittest"
)

// BenchmarkRead reads a 256 MiB file from nbdkit's file plugin over a unix
// socket as the backup does: two readers, each sequential in 512 KiB reads
// (the chunker's buffer), on one connection. Transport only, no chunking.
func BenchmarkRead(b *testing.B) {
	const size = 256 << 20
	p := filepath.Join(b.TempDir(), "disk")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for off := 0; off < size; off += len(chunk) {
		f.Write(chunk)
	}
	f.Close()
	srv := nbdkittest.Start(b, "-r", "file", "file="+p)
	c, err := nbd.Dial(context.Background(), srv.Addr, nbd.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		done := make(chan error, 2)
		for half := 0; half < 2; half++ {
			go func() {
				buf := make([]byte, 512<<10)
				for off := int64(half) * size / 2; off < int64(half+1)*size/2; off += int64(len(buf)) {
					if err := c.ReadAt(context.Background(), buf, off); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
		}
		for k := 0; k < 2; k++ {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
	}
}
