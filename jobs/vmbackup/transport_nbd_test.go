package vmbackup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/vmbackup/nbd/nbdkittest"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/storage/repo"
)

// nbdJob serves a simulated VM's flat disk files with nbdkit's file plugin
// (dir= mode: one export per file name) behind the given filters, and
// returns a job reading through it.
func nbdJob(t *testing.T, s *vmsim.Sim, vm string, nbdkitArgs ...string) (*Job, *nbdkittest.Server) {
	t.Helper()
	dir := filepath.Dir(s.FlatPath(vm, 0))
	// Filters go before the plugin's name, parameters after it.
	args, plugin := []string{"-r"}, []string{"file", "dir=" + dir}
	for _, a := range nbdkitArgs {
		if strings.HasPrefix(a, "--filter=") {
			args = append(args, a)
		} else {
			plugin = append(plugin, a)
		}
	}
	args = append(args, plugin...)
	srv := nbdkittest.Start(t, args...)
	p := params(t, s, "vms: ["+vm+"]\ntransport: nbd\nnbd_url: \"nbd+unix:///disk{disk}-flat.vmdk?socket="+srv.Socket+"\"\n")
	return NewJob("vms", p), srv
}

func restoredImage(t *testing.T, r *repo.Repository, vm string, disk string) []byte {
	t.Helper()
	sn, _ := manifestOf(t, r, vm)
	target := t.TempDir()
	if _, err := r.Restore(context.Background(), sn, repo.RestoreOptions{Target: target, Path: "/vms/" + vm + "/" + disk}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(target, disk))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Full then incremental through nbdkit: the incremental fetches only the
// changed areas over NBD, and both nights restore byte-exact.
func TestNBDTransportFullThenIncremental(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	const size = 72 * mib // two segments
	if _, err := s.CreateVM(ctx, "ils", vmsim.VMOptions{DiskSizes: []int64{size, 8 * mib}, PoweredOn: true}); err != nil {
		t.Fatal(err)
	}
	img := diskData(11, size)
	if err := s.WriteDisk("ils", 0, 0, img); err != nil {
		t.Fatal(err)
	}
	small := diskData(12, 8*mib)
	if err := s.WriteDisk("ils", 1, 0, small); err != nil {
		t.Fatal(err)
	}
	j, _ := nbdJob(t, s, "ils")
	var read atomic.Int64
	j.wrapReader = func(vm string, disk int, r DiskReader) DiskReader { return countingReader{DiskReader: r, n: &read} }
	r := newRepo(t)
	if err := j.Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	if read.Load() != size+8*mib {
		t.Fatalf("full backup read %d bytes through nbd, want %d", read.Load(), size+8*mib)
	}
	_, m := manifestOf(t, r, "ils")
	if m.Disks[0].Fetched != size || m.Disks[1].Fetched != 8*mib {
		t.Fatalf("fetched per disk: %d, %d", m.Disks[0].Fetched, m.Disks[1].Fetched)
	}
	if !bytes.Equal(restoredImage(t, r, "ils", "disk-0.img"), img) || !bytes.Equal(restoredImage(t, r, "ils", "disk-1.img"), small) {
		t.Fatal("night 1 restores differ from the disks")
	}
	change := bytes.Repeat([]byte("nbd night "), 6554)[:64<<10]
	for _, off := range []int64{3 * mib, 40*mib + 4096, 70 * mib} {
		if err := s.WriteDisk("ils", 0, off, change); err != nil {
			t.Fatal(err)
		}
		copy(img[off:], change)
	}
	read.Store(0)
	if err := j.Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	if read.Load() != 3*64<<10 {
		t.Fatalf("incremental read %d bytes through nbd, want the 192 KiB that changed", read.Load())
	}
	if !bytes.Equal(restoredImage(t, r, "ils", "disk-0.img"), img) {
		t.Fatal("night 2 restore differs from the disk")
	}
}

// A thin disk that is mostly holes: nbdkit's file plugin reports them
// through NBD block status, the full backup fetches only the written
// ranges (plus file-system block rounding), and the restore is byte-exact.
func TestNBDFullBackupSkipsHoles(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	const size = 96 * mib
	if _, err := s.CreateVM(ctx, "thin", vmsim.VMOptions{DiskSizes: []int64{size}, PoweredOn: true}); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, size)
	var written int64
	for i, off := range []int64{0, 33*mib + 4096, 90 * mib} {
		d := diskData(uint64(20+i), 2*mib)
		if err := s.WriteDisk("thin", 0, off, d); err != nil {
			t.Fatal(err)
		}
		copy(img[off:], d)
		written += int64(len(d))
	}
	j, _ := nbdJob(t, s, "thin")
	var read atomic.Int64
	j.wrapReader = func(vm string, disk int, r DiskReader) DiskReader { return countingReader{DiskReader: r, n: &read} }
	r := newRepo(t)
	if err := j.Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	if got := read.Load(); got < written || got > written+3*mib {
		t.Fatalf("full backup of a thin disk read %d bytes, want the %d written (plus block rounding), not %d", got, written, size)
	}
	_, m := manifestOf(t, r, "thin")
	if d := m.Disks[0]; d.Fetched != read.Load() || d.Skipped != size-d.Fetched || d.Read != "full" {
		t.Fatalf("manifest: fetched %d, skipped %d, read %q; counted %d", d.Fetched, d.Skipped, d.Read, read.Load())
	}
	if !bytes.Equal(restoredImage(t, r, "thin", "disk-0.img"), img) {
		t.Fatal("restore of the thin disk differs")
	}
}

// nbdkit's error filter fails reads once the disk is a quarter read: the
// disk and the VM fail with the server's error, the snapshot is removed,
// no repository snapshot is written, and the next night works.
func TestNBDReadErrorMidDisk(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	const size = 32 * mib
	vm, err := s.CreateVM(ctx, "cat", vmsim.VMOptions{DiskSizes: []int64{size}, PoweredOn: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDisk("cat", 0, 0, diskData(5, size)); err != nil {
		t.Fatal(err)
	}
	trigger := filepath.Join(t.TempDir(), "fail-reads")
	j, _ := nbdJob(t, s, "cat", "--filter=error", "error-pread=EIO", "error-pread-rate=100%", "error-pread-file="+trigger)
	var read atomic.Int64
	j.wrapReader = func(_ string, _ int, r DiskReader) DiskReader {
		return triggerReader{DiskReader: r, n: &read, at: size / 4, trigger: trigger}
	}
	r := newRepo(t)
	rc := newRC(t, r)
	err = j.Run(ctx, rc)
	if err == nil || !strings.Contains(err.Error(), "EIO") || !strings.Contains(err.Error(), "VM cat") {
		t.Fatalf("run with a read error mid-disk: %v", err)
	}
	if f := rc.finding("vmbackup.vm_failed"); f == nil || !strings.Contains(f.Message, "disk-0.img") || !strings.Contains(f.Message, "nbd+unix:///disk0-flat.vmdk") {
		t.Fatalf("finding: %+v", f)
	}
	if names := snapshotsOf(t, s, vm); len(names) != 0 {
		t.Fatalf("snapshots left behind: %v", names)
	}
	if rc.finding("vmbackup.snapshot_not_removed") != nil {
		t.Fatal("snapshot removal reported as failed")
	}
	if _, err := r.FindSnapshot(ctx, "latest"); err == nil {
		t.Fatal("a repository snapshot was written for a failed disk")
	}
	os.Remove(trigger)
	j.wrapReader = nil
	if err := j.Run(ctx, newRC(t, r)); err != nil {
		t.Fatalf("next night: %v", err)
	}
}

// A slow server (delay filter) and a run whose context ends mid-read: the
// run fails promptly with the context's error and the snapshot is removed
// with the cleanup's own context.
func TestNBDCancelledMidReadRemovesSnapshot(t *testing.T) {
	s := startSim(t)
	vm, err := s.CreateVM(context.Background(), "slow", vmsim.VMOptions{DiskSizes: []int64{16 * mib}, PoweredOn: true})
	if err != nil {
		t.Fatal(err)
	}
	// Written data: an empty thin disk is all holes, which block status
	// lets the backup skip without a single slow read.
	if err := s.WriteDisk("slow", 0, 0, diskData(13, 16*mib)); err != nil {
		t.Fatal(err)
	}
	j, _ := nbdJob(t, s, "slow", "--filter=delay", "rdelay=200ms")
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = j.Run(ctx, newRC(t, newRepo(t)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("run: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("cancelled run took %v", d)
	}
	if names := snapshotsOf(t, s, vm); len(names) != 0 {
		t.Fatalf("snapshots left behind: %v", names)
	}
}

func TestNBDParams(t *testing.T) {
	s := startSim(t)
	for _, tc := range []struct{ yaml, want string }{
		{"transport: nbd\n", "nbd_url: is required"},
		{"transport: nbd\nnbd_url: \"nbd+unix:///{vm}/{nope}?socket=/s\"\n", "unknown placeholder {nope}"},
		{"transport: nbd\nnbd_url: \"http://h/{vm}\"\n", "scheme must be nbd"},
		{"nbd_url: \"nbd://h/{vm}\"\n", "only used with transport: nbd"},
		{"transport: vddk\n", `must be "datastore" or "nbd"`},
		{"parallel_disks: 0\n", "parallel_disks: must be at least 1"},
	} {
		pw := filepath.Join(t.TempDir(), "pw")
		os.WriteFile(pw, []byte("x"), 0o600)
		w := "url: " + s.URL.String() + "\nuser: u\npassword_file: " + pw + "\ninsecure: true\nvms: [a]\n" + tc.yaml
		wp, err := configs.ParseWith(w)
		if err != nil {
			t.Fatal(err)
		}
		_, err = parseParams(wp)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.yaml, err, tc.want)
		}
	}
	a, err := expandNBDURL("nbd://backup-proxy:10809/{uuid}/{disk}-{snapshot}", &VM{Name: "a b", InstanceUUID: "5003-x"}, Disk{Index: 1}, "snapshot-42")
	if err != nil || a.Addr != "backup-proxy:10809" || a.Export != "5003-x/1-snapshot-42" {
		t.Fatalf("expand: %+v %v", a, err)
	}
	a, err = expandNBDURL("nbd+unix:///{vm}?socket=/run/n.sock", &VM{Name: "a b/c"}, Disk{}, "")
	if err != nil || a.Export != "a b/c" {
		t.Fatalf("expand with escaping: %+v %v", a, err)
	}
}

// triggerReader creates the error filter's trigger file once at bytes have
// been read, so the server's reads fail from there on.
type triggerReader struct {
	DiskReader
	n       *atomic.Int64
	at      int64
	trigger string
}

func (r triggerReader) ReadAt(p []byte, off int64) (int, error) {
	if r.n.Add(int64(len(p))) > r.at {
		_ = os.WriteFile(r.trigger, nil, 0o600)
	}
	return r.DiskReader.ReadAt(p, off)
}
