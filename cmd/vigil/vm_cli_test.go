package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/vmbackup"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
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
