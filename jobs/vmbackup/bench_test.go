package vmbackup

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/vmbackup/nbd/nbdkittest"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// BenchmarkVMBackup backs up one simulated disk (2 GiB, or
// VIGIL_BENCH_VM_MIB) through each transport: a full night, then a night
// after 2 % of the disk changed in 10 clustered regions, then a night after
// 2 % changed as scattered 64 KiB blocks. Run it once per transport:
//
//	go test -run '^$' -bench VMBackup -benchtime 1x ./jobs/vmbackup
//
// The disk is a mix per MiB of zeros (30 %), log-like text (30 %) and
// random data (40 %); nbd reads go to nbdkit's file plugin on a unix socket.
// Metrics: MB/s of each night's disk size over its wall time, bytes read
// from the transport, bytes newly stored, incremental/full time ratios,
// CPU seconds and peak RSS of the test process (nbdkit not included).
func BenchmarkVMBackup(b *testing.B) {
	size := int64(2 << 30)
	if v, err := strconv.Atoi(os.Getenv("VIGIL_BENCH_VM_MIB")); err == nil && v > 0 {
		size = int64(v) << 20
	}
	for _, tr := range []string{"nbd", "datastore"} {
		b.Run(tr, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchNights(b, tr, size)
			}
		})
	}
}

func benchNights(b *testing.B, transport string, size int64) {
	ctx := context.Background()
	b.StopTimer()
	s, err := vmsim.Start(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateVM(ctx, "big", vmsim.VMOptions{DiskSizes: []int64{size}, PoweredOn: true}); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 42))
	piece := make([]byte, 16<<20)
	for off := int64(0); off < size; off += int64(len(piece)) {
		fillRealistic(rng, piece)
		if err := s.WriteDisk("big", 0, off, piece[:min(int64(len(piece)), size-off)]); err != nil {
			b.Fatal(err)
		}
	}
	extra := "vms: [big]\n"
	if transport == "nbd" {
		dir := s.FlatPath("big", 0)
		srv := nbdkittest.Start(b, "-r", "file", "file="+dir)
		extra += "transport: nbd\nnbd_url: \"nbd+unix:///?socket=" + srv.Socket + "\"\n"
	}
	pw := b.TempDir() + "/pw"
	_ = os.WriteFile(pw, []byte(s.Password), 0o600)
	w := fmt.Sprintf("url: %s\nuser: %s\npassword_file: %s\ninsecure: true\n%s", s.URL, s.User, pw, extra)
	p := benchParams(b, w)
	j := NewJob("bench", p)
	var read atomic.Int64
	j.wrapReader = func(_ string, _ int, r DiskReader) DiskReader { return countingReader{DiskReader: r, n: &read} }
	r := benchRepo(b)

	night := func(name string) (time.Duration, int64, int64) {
		read.Store(0)
		rc := newBenchRC(r)
		// Flush the set-up's writes of the disk so the night's fsyncs do
		// not pay for them.
		syscall.Sync()
		cpu0 := cpuSeconds()
		start := time.Now()
		b.StartTimer()
		err := j.Run(ctx, rc)
		b.StopTimer()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		newBytes := rc.summary.BytesStored
		b.ReportMetric(float64(size)/d.Seconds()/1e6, name+"_MB/s")
		b.ReportMetric(float64(read.Load())/(1<<20), name+"_read_MiB")
		b.ReportMetric(float64(newBytes)/(1<<20), name+"_stored_MiB")
		b.ReportMetric(cpuSeconds()-cpu0, name+"_cpu_s")
		return d, read.Load(), newBytes
	}
	full, _, _ := night("full")

	// 2 % in 10 clustered regions.
	region := size / 50 / 10
	for k := int64(0); k < 10; k++ {
		off := (k*size/10 + 3<<20) &^ 4095
		buf := make([]byte, region)
		fillRealistic(rng, buf)
		if err := s.WriteDisk("big", 0, off, buf); err != nil {
			b.Fatal(err)
		}
	}
	clustered, _, _ := night("clustered")

	// 2 % as scattered 64 KiB blocks at random aligned offsets.
	blocks := size / 50 / (64 << 10)
	buf := make([]byte, 64<<10)
	for k := int64(0); k < blocks; k++ {
		off := rng.Int64N(size/(64<<10)) * (64 << 10)
		fillRealistic(rng, buf)
		if err := s.WriteDisk("big", 0, off, buf); err != nil {
			b.Fatal(err)
		}
	}
	scattered, _, _ := night("scattered")
	b.ReportMetric(clustered.Seconds()/full.Seconds(), "clustered/full")
	b.ReportMetric(scattered.Seconds()/full.Seconds(), "scattered/full")
	b.ReportMetric(peakRSSMiB(), "peak_RSS_MiB")
}

// fillRealistic fills p per MiB with zeros, log-like text or random bytes.
func fillRealistic(rng *rand.Rand, p []byte) {
	for off := 0; off < len(p); off += 1 << 20 {
		end := min(off+1<<20, len(p))
		switch x := rng.IntN(10); {
		case x < 3:
			clear(p[off:end])
		case x < 6:
			var line bytes.Buffer
			for line.Len() < end-off {
				fmt.Fprintf(&line, "Nov 27 02:%02d:%02d ils kernel: [%d.%06d] EXT4-fs (sda%d): mounted filesystem with ordered data mode\n",
					rng.IntN(60), rng.IntN(60), rng.IntN(99999), rng.IntN(999999), rng.IntN(4))
			}
			copy(p[off:end], line.Bytes())
		default:
			for i := off; i+8 <= end; i += 8 {
				v := rng.Uint64()
				p[i], p[i+1], p[i+2], p[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
				p[i+4], p[i+5], p[i+6], p[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
			}
		}
	}
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func peakRSSMiB() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024 // KiB on Linux
}

func benchRepo(b *testing.B) *repo.Repository {
	st, err := local.Open(filepath.Join(b.TempDir(), "repo"), true)
	if err != nil {
		b.Fatal(err)
	}
	r, err := repo.Init(context.Background(), st, "secret", repo.InitOptions{}, repo.Options{KDF: testKDF})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func newBenchRC(r *repo.Repository) *fakeRC {
	buf := &syncBuf{}
	return &fakeRC{r: r, log: slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelWarn})), logBuf: buf}
}

func benchParams(b *testing.B, src string) Params {
	w, err := configs.ParseWith(src)
	if err != nil {
		b.Fatal(err)
	}
	p, err := parseParams(w)
	if err != nil {
		b.Fatal(err)
	}
	return p
}
