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

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/runner"
)

// oneVM starts a simulator with one powered-on VM holding data.
func oneVM(t *testing.T, name string, size int64) (*vmsim.Sim, *object.VirtualMachine, []byte) {
	t.Helper()
	s := startSim(t)
	vm, err := s.CreateVM(context.Background(), name, vmsim.VMOptions{DiskSizes: []int64{size}, PoweredOn: true})
	if err != nil {
		t.Fatal(err)
	}
	img := diskData(uint64(len(name)), int(size))
	if err := s.WriteDisk(name, 0, 0, img); err != nil {
		t.Fatal(err)
	}
	return s, vm, img
}

func TestRenameKeepsChain(t *testing.T) {
	ctx := context.Background()
	s, vm, _ := oneVM(t, "circ", 128*mib)
	r := newRepo(t)
	if err := NewJob("vms", params(t, s, "vms: ['circ*']\n")).Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	task, err := vm.Rename(ctx, "circulation")
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteDisk("circ", 0, 5*mib, bytes.Repeat([]byte{7}, 4096)); err != nil {
		t.Fatal(err)
	}
	j := NewJob("vms", params(t, s, "vms: ['circ*']\n"))
	var read atomic.Int64
	j.wrapReader = func(vm string, disk int, r DiskReader) DiskReader { return countingReader{DiskReader: r, n: &read} }
	if err := j.Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	sn, m := manifestOf(t, r, "circulation")
	if m.Disks[0].Read != "changed" || read.Load() != 4096 {
		t.Fatalf("after rename: disk read %q (%s), %d bytes fetched; want the changed segment only", m.Disks[0].Read, m.Disks[0].Why, read.Load())
	}
	if sn.Parent == nil {
		t.Fatal("renamed VM's snapshot has no parent: the chain restarted")
	}
}

func TestSnapshotRemovedWhenReadFails(t *testing.T) {
	ctx := context.Background()
	s, vm, _ := oneVM(t, "opac", 128*mib)
	r := newRepo(t)
	j := NewJob("vms", params(t, s, "vms: [opac]\n"))
	var read atomic.Int64
	j.wrapReader = func(vm string, disk int, r DiskReader) DiskReader {
		return countingReader{DiskReader: r, n: &read, failAt: 80 * mib}
	}
	rc := newRC(t, r)
	err := j.Run(ctx, rc)
	if err == nil || !strings.Contains(err.Error(), "injected read failure") {
		t.Fatalf("run error = %v, want the read failure", err)
	}
	if f := rc.finding("vmbackup.vm_failed"); f == nil || f.Subject != "opac" {
		t.Fatalf("no vm_failed finding: %+v", rc.findings)
	}
	if left := snapshotsOf(t, s, vm); len(left) != 0 {
		t.Fatalf("snapshots left behind: %v", left)
	}
	if sns, _ := r.Snapshots(ctx, nil); len(sns) != 0 {
		t.Fatalf("a failed backup committed %d snapshots", len(sns))
	}
	// The repository stays usable: the next night works.
	if err := NewJob("vms", params(t, s, "vms: [opac]\n")).Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
}

func TestJanitorRemovesLeftoverAndFailedRemovalIsAFinding(t *testing.T) {
	ctx := context.Background()
	s, vm, _ := oneVM(t, "ils", 64*mib)
	r := newRepo(t)
	// Removal fails tonight: the run still succeeds, with a finding.
	s.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "RemoveSnapshot_Task", ObjectType: "*", ObjectName: "*",
		Probability: 1, FaultType: simulator.FaultTypeResourceInUse, Message: "injected: snapshot busy", Enabled: true})
	rc := newRC(t, r)
	if err := NewJob("vms", params(t, s, "vms: [ils]\n")).Run(ctx, rc); err != nil {
		t.Fatal(err)
	}
	if f := rc.finding("vmbackup.snapshot_not_removed"); f == nil || !strings.Contains(f.Message, "vigil-vms-") {
		t.Fatalf("no snapshot_not_removed finding: %+v", rc.findings)
	}
	if left := snapshotsOf(t, s, vm); len(left) != 1 {
		t.Fatalf("want the leftover snapshot, have %v", left)
	}
	// A snapshot someone else took is left alone.
	task, err := vm.CreateSnapshot(ctx, "before-upgrade", "admin's own", false, false)
	if err == nil {
		err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Model.Service.ClearFaultRules()
	rc2 := newRC(t, r)
	if err := NewJob("vms", params(t, s, "vms: [ils]\n")).Run(ctx, rc2); err != nil {
		t.Fatal(err)
	}
	if f := rc2.finding("vmbackup.leftover_snapshot_removed"); f == nil {
		t.Fatalf("janitor did not report: %+v", rc2.findings)
	}
	if left := snapshotsOf(t, s, vm); len(left) != 1 || left[0] != "before-upgrade" {
		t.Fatalf("snapshots after the janitor: %v", left)
	}
}

func TestSelection(t *testing.T) {
	ctx := context.Background()
	s := startSim(t)
	for _, c := range []struct {
		name string
		o    vmsim.VMOptions
	}{
		{"golden", vmsim.VMOptions{DiskSizes: []int64{mib}}},
		{"desk-01", vmsim.VMOptions{DiskSizes: []int64{mib}, PoweredOn: true, ParentDisk: vmsim.DiskFile("golden", 0)}},
		{"archive", vmsim.VMOptions{DiskSizes: []int64{mib}}},
		{"web", vmsim.VMOptions{DiskSizes: []int64{mib}, PoweredOn: true}},
	} {
		if _, err := s.CreateVM(ctx, c.name, c.o); err != nil {
			t.Fatal(err)
		}
	}
	r := newRepo(t)
	rc := newRC(t, r)
	j := NewJob("vms", params(t, s, "vms: [desk-01, archive, '/DC0/vm/w*']\n"))
	if err := j.Run(ctx, rc); err != nil {
		t.Fatal(err)
	}
	log := rc.logBuf.String()
	if !strings.Contains(log, "vm=desk-01") || !strings.Contains(log, "linked or instant clone") {
		t.Fatalf("linked clone not excluded with a reason:\n%s", log)
	}
	if _, m := manifestOf(t, r, "archive"); m.Consistency != "powered-off" || m.Snapshot != "" {
		t.Fatalf("powered-off VM: consistency %q, snapshot %q", m.Consistency, m.Snapshot)
	}
	if _, m := manifestOf(t, r, "web"); m.Consistency != "quiesced" || m.InventoryPath != "/DC0/vm/web" {
		t.Fatalf("web: %+v", m)
	}
	if _, err := FindVM(ctx, r, "latest", "desk-01"); !errors.Is(err, ErrNoBackup) {
		t.Fatalf("linked clone was backed up (%v)", err)
	}

	// An unknown name fails before any snapshot is taken.
	err := NewJob("vms", params(t, s, "vms: [web, nosuchvm]\n")).Run(ctx, newRC(t, r))
	if !errors.Is(err, ErrUnknownVM) || !strings.Contains(err.Error(), "nosuchvm") {
		t.Fatalf("unknown VM: %v", err)
	}
}

func TestQuiescePolicy(t *testing.T) {
	ctx := context.Background()
	s, vm, _ := oneVM(t, "db", 8*mib)
	r := newRepo(t)
	// Quiescing fails (twice: the attempt and its retry); "preferred"
	// falls back to crash-consistent and records it.
	s.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "CreateSnapshot_Task", ObjectType: "*", ObjectName: "*",
		Probability: 1, FaultType: simulator.FaultTypeInvalidState, Message: "injected: quiescing failed", MaxCount: 2, Enabled: true})
	if err := NewJob("vms", params(t, s, "vms: [db]\n")).Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	if _, m := manifestOf(t, r, "db"); m.Consistency != "crash-consistent" {
		t.Fatalf("consistency %q", m.Consistency)
	}
	// "required" fails the VM, and leaves nothing behind.
	s.Model.Service.ClearFaultRules()
	s.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: "CreateSnapshot_Task", ObjectType: "*", ObjectName: "*",
		Probability: 1, FaultType: simulator.FaultTypeInvalidState, Message: "injected: quiescing failed", Enabled: true})
	err := NewJob("vms", params(t, s, "vms: [db]\nquiesce: required\n")).Run(ctx, newRC(t, r))
	if err == nil || !strings.Contains(err.Error(), "quiesce: required") {
		t.Fatalf("required quiesce: %v", err)
	}
	if left := snapshotsOf(t, s, vm); len(left) != 0 {
		t.Fatalf("snapshots left: %v", left)
	}
}

func TestFullAgainAfterResetOrResize(t *testing.T) {
	ctx := context.Background()
	s, vm, _ := oneVM(t, "ils", 64*mib)
	r := newRepo(t)
	run := func() *Manifest {
		t.Helper()
		if err := NewJob("vms", params(t, s, "vms: [ils]\n")).Run(ctx, newRC(t, r)); err != nil {
			t.Fatal(err)
		}
		_, m := manifestOf(t, r, "ils")
		return m
	}
	run()
	if m := run(); m.Disks[0].Read != "changed" {
		t.Fatalf("second night: %q (%s)", m.Disks[0].Read, m.Disks[0].Why)
	}
	s.ResetTracking("ils", 0)
	if m := run(); m.Disks[0].Read != "full" || !strings.Contains(m.Disks[0].Why, "changed areas unavailable") {
		t.Fatalf("after a tracking reset: %q (%s)", m.Disks[0].Read, m.Disks[0].Why)
	}
	if m := run(); m.Disks[0].Read != "changed" {
		t.Fatalf("night after the reset: %q (%s)", m.Disks[0].Read, m.Disks[0].Why)
	}
	devs, err := vm.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	disk := devs.SelectByType((*types.VirtualDisk)(nil))[0].(*types.VirtualDisk)
	disk.CapacityInKB = 96 * 1024
	disk.CapacityInBytes = 96 * mib
	if err := vm.EditDevice(ctx, disk); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.FlatPath("ils", 0), 96*mib); err != nil {
		t.Fatal(err)
	}
	if m := run(); m.Disks[0].Read != "full" || !strings.Contains(m.Disks[0].Why, "resized") {
		t.Fatalf("after a resize: %q (%s)", m.Disks[0].Read, m.Disks[0].Why)
	}
}

func TestConnectionErrors(t *testing.T) {
	ctx := context.Background()
	s, vm, _ := oneVM(t, "ils", mib)
	r := newRepo(t)
	check := func(extra string, want error) error {
		t.Helper()
		p := params(t, s, "vms: [ils]\n")
		w := extra
		switch {
		case strings.HasPrefix(w, "password:"):
			p.Password = configsSecret(strings.TrimPrefix(w, "password:"))
		case strings.HasPrefix(w, "thumbprint:"):
			p.Insecure, p.Thumbprint = false, strings.TrimPrefix(w, "thumbprint:")
		case strings.HasPrefix(w, "url:"):
			p.URL = strings.TrimPrefix(w, "url:")
		case w == "verify":
			p.Insecure = false
		}
		err := NewJob("vms", p).Run(ctx, newRC(t, r))
		if !errors.Is(err, want) {
			t.Fatalf("%s: error %v, want %v", extra, err, want)
		}
		if left := snapshotsOf(t, s, vm); len(left) != 0 {
			t.Fatalf("%s: snapshot taken: %v", extra, left)
		}
		return err
	}
	check("password:wrong", ErrAuth)
	check("thumbprint:"+strings.Repeat("AB:", 31)+"AB", ErrTLS)
	check("verify", ErrTLS)
	if err := check("url:https://127.0.0.1:1/sdk", ErrUnreachable); !runner.IsRetryable(err) {
		t.Fatalf("unreachable vCenter is not retryable: %v", err)
	}
	if err := NewJob("vms", params(t, s, "vms: [ils]\n")).Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	// The right pin works, and so does the CA file.
	p := params(t, s, "vms: [ils]\n")
	p.Insecure, p.Thumbprint = false, Thumbprint(s.Server.Certificate())
	if err := NewJob("vms", p).Run(ctx, newRC(t, r)); err != nil {
		t.Fatalf("pinned thumbprint: %v", err)
	}
	ca, err := s.Server.CertificateFile()
	if err != nil {
		t.Fatal(err)
	}
	p = params(t, s, "vms: [ils]\n")
	p.Insecure, p.CAFile = false, ca
	if err := NewJob("vms", p).Run(ctx, newRC(t, r)); err != nil {
		t.Fatalf("ca_file: %v", err)
	}
}

func TestRestoreAsNewVM(t *testing.T) {
	ctx := context.Background()
	s, _, img := oneVM(t, "ils", 96*mib)
	r := newRepo(t)
	if err := NewJob("vms", params(t, s, "vms: [ils]\n")).Run(ctx, newRC(t, r)); err != nil {
		t.Fatal(err)
	}
	b, err := FindVM(ctx, r, "latest", "ils")
	if err != nil {
		t.Fatal(err)
	}
	// Disk image to a local file, byte-exact.
	file, _, err := RestoreDisk(ctx, r, b, 0, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restored disk image differs (%v)", err)
	}
	sess, err := Connect(ctx, params(t, s, "vms: [ils]\n").Connection(), newRC(t, r).log)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Logout(ctx)
	if _, err := RestoreAsNew(ctx, sess, r, b, NewVMOptions{Name: "ils"}); !errors.Is(err, ErrVMExists) {
		t.Fatalf("restore over an existing VM: %v", err)
	}
	res, err := RestoreAsNew(ctx, sess, r, b, NewVMOptions{Name: "ils-restored", PowerOn: true})
	if err != nil {
		t.Fatal(err)
	}
	devs, err := res.VM.Device(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ds := disks(devs)
	if len(ds) != 1 || ds[0].Capacity != 96*mib {
		t.Fatalf("restored VM disks: %+v", ds)
	}
	// Read the new VM's disk back through the simulator's datastore.
	vms, err := sess.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var nv *VM
	for _, v := range vms {
		if v.Name == "ils-restored" {
			nv = v
		}
	}
	rd, err := (&datastoreTransport{s: sess}).Open(ctx, nv, ds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	got := make([]byte, 96*mib)
	if _, err := rd.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Fatal("restored VM's disk differs from the original")
	}
	if filepath.Base(ds[0].File) != "ils-restored_0.vmdk" {
		t.Fatalf("disk file %s", ds[0].File)
	}
}
