package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmware/govmomi/find"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/vmbackup"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/history"
	"github.com/vigilops/vigil/storage/repo"
)

// TestCLIVMRestore backs up a simulated VM into a repository made by
// `vigil init`, then lists and restores it through the CLI: a disk as an
// image file, and the VM as a new VM that the simulator then holds.
func TestCLIVMRestore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.must("init")
	sim, err := vmsim.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if _, err := sim.CreateVM(ctx, "ils", vmsim.VMOptions{DiskSizes: []int64{16 << 20}, PoweredOn: true}); err != nil {
		t.Fatal(err)
	}
	img := bytes.Repeat([]byte("catalogue "), 16<<20/10+1)[:16<<20]
	if err := sim.WriteDisk("ils", 0, 0, img); err != nil {
		t.Fatal(err)
	}
	vcpw := filepath.Join(t.TempDir(), "vcpw")
	if err := os.WriteFile(vcpw, []byte(sim.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := local.Open(e.repo, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, st, "correct horse", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tp := vmbackup.Thumbprint(sim.Server.Certificate())
	with, err := configs.ParseWith(fmt.Sprintf("url: %s\nuser: %s\npassword_file: %s\nthumbprint: %q\nvms: [ils]\n", sim.URL, sim.User, vcpw, tp))
	if err != nil {
		t.Fatal(err)
	}
	job, err := vmbackup.New(configs.Job{Name: "vms", Kind: "vmbackup", With: with})
	if err != nil {
		t.Fatal(err)
	}
	rn, err := runner.New([]runner.Spec{{Name: "vms", Kind: "vmbackup", Job: job}}, runner.Options{
		History: runner.NewMemHistory(), OpenRepository: func(context.Context) (any, error) { return r, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if run, err := rn.RunNow(ctx, "vms", runner.TriggerManual); err != nil || run.Status != runner.StatusSuccess {
		t.Fatalf("backup: %v %+v", err, run)
	}

	if out := e.must("vm", "list").stdout; !strings.Contains(out, "ils") || !strings.Contains(out, "quiesced") {
		t.Fatalf("vm list: %s", out)
	}
	target := t.TempDir()
	e.must("vm", "restore", "latest", "--vm", "ils", "--disk", "0", "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, "disk-0.img")); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restored disk differs (%v)", err)
	}
	conn := []string{"--vcenter", sim.URL.String(), "--vcenter-user", sim.User, "--vcenter-password-file", vcpw, "--vcenter-thumbprint", tp}
	if res := e.run(append([]string{"vm", "restore", "latest", "--vm", "ils", "--as-new", "ils"}, conn...)...); res.code != exitUsage ||
		!strings.Contains(res.stderr, "already exists") {
		t.Fatalf("restore over an existing VM: exit %d, %s", res.code, res.stderr)
	}
	e.must(append([]string{"vm", "restore", "latest", "--vm", "ils", "--as-new", "ils-copy"}, conn...)...)
	got, err := os.ReadFile(sim.LocalPath("[LocalDS_0] ils-copy/ils-copy_0.vmdk"))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("new VM's disk differs (%v)", err)
	}
	if res := e.run("vm", "restore", "latest", "--vm", "nosuch", "--disk", "0", "--target", target); res.code == 0 ||
		!strings.Contains(res.stderr, "no snapshot holds VM") {
		t.Fatalf("unknown VM: exit %d, %s", res.code, res.stderr)
	}
}

// TestCLIRestoreVMAndDisk drives `vigil restore disk` and `vigil restore vm`
// against the simulator with a config whose history records each restore
// as a manual run: a disk to a file, a refused overwrite, an unconfirmed
// --replace, a confirmed one, and a new VM; `vigil restore SNAPSHOT
// --target` still restores files.
func TestCLIRestoreVMAndDisk(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.must("init")
	sim, err := vmsim.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if _, err := sim.CreateVM(ctx, "ils", vmsim.VMOptions{DiskSizes: []int64{8 << 20}, PoweredOn: true}); err != nil {
		t.Fatal(err)
	}
	img := bytes.Repeat([]byte("circulation "), 8<<20/12+1)[:8<<20]
	clear(img[2<<20 : 5<<20]) // a hole in the restored file
	if err := sim.WriteDisk("ils", 0, 0, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	vcpw := filepath.Join(dir, "vcpw")
	if err := os.WriteFile(vcpw, []byte(sim.Password), 0o600); err != nil {
		t.Fatal(err)
	}
	tp := vmbackup.Thumbprint(sim.Server.Certificate())
	cfgPath := filepath.Join(dir, "vigil.yaml")
	hist := filepath.Join(dir, "history.db")
	cfg := fmt.Sprintf("repository:\n  url: %s\n  password_file: %s\nhistory:\n  path: %s\njobs:\n  - name: vms\n    kind: vmbackup\n    with:\n"+
		"      url: %s\n      user: %s\n      password_file: %s\n      thumbprint: %q\n      vms: [ils]\n", e.repo, e.pwFile, hist, sim.URL, sim.User, vcpw, tp)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("run", "-c", cfgPath, "vms")

	to := filepath.Join(dir, "ils-disk0.raw")
	e.must("restore", "disk", "latest", "--vm", "ils", "--disk", "0", "--to", to, "-c", cfgPath)
	if got, err := os.ReadFile(to); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("restore disk: differs (%v)", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(to, &st); err != nil || st.Blocks*512 > int64(len(img))-(2<<20) {
		t.Errorf("restored image is not sparse: %d bytes allocated (%v)", st.Blocks*512, err)
	}
	if res := e.run("restore", "disk", "latest", "--vm", "ils", "--disk", "0", "--to", to); res.code == 0 || !strings.Contains(res.stderr, "already exists") {
		t.Fatalf("restore disk over an existing file: exit %d, %s", res.code, res.stderr)
	}
	if res := e.run("restore", "disk", "latest", "--disk", "0", "--to", to+"2"); res.code != exitUsage {
		t.Fatalf("restore disk latest without --vm: exit %d, %s", res.code, res.stderr)
	}

	vm := []string{"restore", "vm", "latest", "--vm", "ils", "-c", cfgPath, "--job", "vms"}
	if res := e.run(append(vm, "--name", "ils")...); res.code != exitUsage || !strings.Contains(res.stderr, "already exists") ||
		!strings.Contains(res.stderr, "--replace") {
		t.Fatalf("restore over an existing VM: exit %d, %s", res.code, res.stderr)
	}
	if res := e.run(append(vm, "--name", "ils", "--replace")...); res.code != exitUsage || !strings.Contains(res.stderr, "not confirmed") {
		t.Fatalf("unconfirmed --replace: exit %d, %s", res.code, res.stderr)
	}
	if out := e.must(append(vm, "--name", "ils", "--replace", "--yes")...).stdout; !strings.Contains(out, "replacing VM ils") {
		t.Fatalf("restore --replace --yes: %s", out)
	}
	e.must(append(vm, "--name", "ils-copy", "--power-on")...)
	for _, p := range []string{"[LocalDS_0] ils-copy/ils-copy_0.vmdk"} {
		if got, err := os.ReadFile(sim.LocalPath(p)); err != nil || !bytes.Equal(got, img) {
			t.Fatalf("%s differs (%v)", p, err)
		}
	}
	vms, err := find.NewFinder(sim.Client().Client, true).VirtualMachineList(ctx, "/DC0/vm/ils*")
	if err != nil || len(vms) != 2 {
		t.Fatalf("VMs after the restores: %v %v", vms, err)
	}

	// The file restore of the parent command is unchanged.
	src := filepath.Join(dir, "src")
	writeDemoData(src, 5)
	e.must("backup", src)
	target := t.TempDir()
	e.must("restore", "latest", "--target", target)
	if err := compareTrees(src, repo.TargetPath(target, src)); err != nil {
		t.Fatal(err)
	}

	h, err := history.Open(ctx, hist, history.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	runs, err := h.Runs(ctx, runner.RunFilter{Job: "restore"})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range runs {
		if r.Trigger != runner.TriggerManual {
			t.Errorf("restore run %d has trigger %s", r.ID, r.Trigger)
		}
		kinds = append(kinds, fmt.Sprintf("%s/%s", r.Kind, r.Status))
	}
	// Newest first: the copy, the replacement, the refused overwrite, the disk.
	want := "restore-vm/success restore-vm/success restore-vm/failed restore-disk/success"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("restore runs: %s, want %s", got, want)
	}
	if runs[3].Summary.BytesRead != int64(len(img)) || runs[3].Summary.Extra["mb_per_s"] == nil {
		t.Fatalf("disk restore summary: %+v", runs[3].Summary)
	}
}
