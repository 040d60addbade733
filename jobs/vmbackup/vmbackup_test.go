package vmbackup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/storage/repo"
)

const mib = 1 << 20

func TestFullThenIncremental(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	const size = 192 * mib // three 64 MiB segments
	if _, err := s.CreateVM(ctx, "ils", vmsim.VMOptions{DiskSizes: []int64{size, 8 * mib}, PoweredOn: true}); err != nil {
		t.Fatal(err)
	}
	img := diskData(1, size)
	if err := s.WriteDisk("ils", 0, 0, img); err != nil {
		t.Fatal(err)
	}
	img1 := diskData(2, 8*mib)
	if err := s.WriteDisk("ils", 1, 0, img1); err != nil {
		t.Fatal(err)
	}
	r := newRepo(t)
	// Both disks are read at once (parallel_disks defaults to 2).
	j := NewJob("vms", params(t, s, "vms: [ils]\n"))
	var read atomic.Int64
	j.wrapReader = func(vm string, disk int, r DiskReader) DiskReader { return countingReader{DiskReader: r, n: &read} }

	rc := newRC(t, r)
	if err := j.Run(ctx, rc); err != nil {
		t.Fatal(err)
	}
	if got := read.Load(); got != size+8*mib {
		t.Fatalf("full backup read %d bytes, want %d", got, size+8*mib)
	}
	// Night two: 1 MiB changes inside the middle segment.
	change := bytes.Repeat([]byte("night two "), 110000)[:mib]
	if err := s.WriteDisk("ils", 0, 70*mib, change); err != nil {
		t.Fatal(err)
	}
	copy(img[70*mib:], change)
	read.Store(0)
	rc2 := newRC(t, r)
	if err := j.Run(ctx, rc2); err != nil {
		t.Fatal(err)
	}
	if got := read.Load(); got != mib {
		t.Fatalf("incremental read %d bytes, want the 1 MiB that changed", got)
	}
	if s.Queries() < 2 {
		t.Fatalf("changed areas queried %d times", s.Queries())
	}
	sn, err := r.FindSnapshot(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	if sn.Parent == nil {
		t.Error("incremental snapshot has no parent")
	}
	target := t.TempDir()
	if _, err := r.Restore(ctx, sn, repo.RestoreOptions{Target: target, Path: "/vms/ils/disk-0.img"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "disk-0.img"))
	if err != nil {
		t.Fatal(err)
	}
	flat, _ := os.ReadFile(s.FlatPath("ils", 0))
	if !bytes.Equal(got, img) || !bytes.Equal(got, flat) {
		t.Fatal("restored image differs from the disk")
	}
	if _, err := r.Restore(ctx, sn, repo.RestoreOptions{Target: target, Path: "/vms/ils/disk-1.img"}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(target, "disk-1.img")); err != nil || !bytes.Equal(got, img1) {
		t.Fatalf("restored second disk differs from the disk (%v)", err)
	}
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := LoadManifest(ctx, r, idx, sn, "ils")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Disks) != 2 || m.Disks[0].Index != 0 || m.Disks[1].Index != 1 || m.Disks[1].Read != "changed" {
		t.Fatalf("manifest disks %+v, want disk 0 then disk 1, both read incrementally", m.Disks)
	}
}

// Scattered 64 KiB changes in every segment: only the changed areas (and
// gaps under areaGap between them) are read from vCenter, the rest of each
// changed segment comes from last night's image, and the result restores
// byte-exact.
func TestScatteredChangesReadOnlyChangedAreas(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	const size = 192 * mib
	if _, err := s.CreateVM(ctx, "web", vmsim.VMOptions{DiskSizes: []int64{size}, PoweredOn: true}); err != nil {
		t.Fatal(err)
	}
	img := diskData(3, size)
	if err := s.WriteDisk("web", 0, 0, img); err != nil {
		t.Fatal(err)
	}
	r := newRepo(t)
	j := NewJob("vms", params(t, s, "vms: [web]\n"))
	if err := j.Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	var changed int64
	for i := int64(0); i < 60; i++ {
		off := i*3*mib + 12345*(i%7)
		data := bytes.Repeat([]byte{byte(i), 0xA5}, 32<<10)
		if err := s.WriteDisk("web", 0, off, data); err != nil {
			t.Fatal(err)
		}
		copy(img[off:], data)
		changed += int64(len(data))
	}
	var read atomic.Int64
	j.wrapReader = func(vm string, disk int, r DiskReader) DiskReader { return countingReader{DiskReader: r, n: &read} }
	rc := newRC(t, r)
	if err := j.Run(ctx, rc); err != nil {
		t.Fatal(err)
	}
	_, m := manifestOf(t, r, "web")
	// Only the neighbourhood of each change is chunked again (AddImageExtents):
	// from the chunk boundary before it to the first boundary after it that
	// last night's chunking shares. In this disk's 1 MiB runs of repeated text
	// chunks are all maximum-size, so that can be the end of the run (about
	// 1 MiB a change here); everything else is last night's chunks.
	if d := m.Disks[0]; d.Read != "changed" || d.Changed != changed || d.BytesRead > size/2 || d.BytesRead+d.BytesReused != size {
		t.Fatalf("disk record: %+v (changed %d)", d, changed)
	}
	if read.Load() != changed {
		t.Fatalf("read %d bytes from vCenter for %d changed", read.Load(), changed)
	}
	sn, _ := manifestOf(t, r, "web")
	target := t.TempDir()
	if _, err := r.Restore(ctx, sn, repo.RestoreOptions{Target: target, Path: "/vms/web/disk-0.img"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "disk-0.img"))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restored image differs (%v)", err)
	}
}
