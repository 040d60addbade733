package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/vmbackup"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

const demoVMDisk = 256 << 20

// runVMDemo backs up a VM of an in-process vCenter simulator into r twice
// (the second night reads only what changed), then restores its disk as
// an image file and the whole VM as a new VM, and checks the bytes.
func runVMDemo(ctx context.Context, g *globals, r *repo.Repository, dir string) error {
	sim, err := vmsim.Start(ctx)
	if err != nil {
		return err
	}
	defer sim.Close()
	if _, err := sim.CreateVM(ctx, "ils-server", vmsim.VMOptions{DiskSizes: []int64{demoVMDisk}, PoweredOn: true}); err != nil {
		return err
	}
	if err := sim.WriteDisk("ils-server", 0, 0, demoDisk(7, demoVMDisk)); err != nil {
		return err
	}
	pw := filepath.Join(dir, "vcenter-password")
	if err := os.WriteFile(pw, []byte(sim.Password), 0o600); err != nil {
		return err
	}
	with, err := configs.ParseWith(fmt.Sprintf("url: %s\nuser: %s\npassword_file: %s\nthumbprint: %q\nvms: [ils-server]\n",
		sim.URL, sim.User, pw, vmbackup.Thumbprint(sim.Server.Certificate())))
	if err != nil {
		return err
	}
	job, err := vmbackup.New(configs.Job{Name: "demo-vms", Kind: "vmbackup", With: with})
	if err != nil {
		return err
	}
	rn, err := runner.New([]runner.Spec{{Name: "demo-vms", Kind: "vmbackup", Job: job}}, runner.Options{
		History: runner.NewMemHistory(), Logger: g.logger(),
		OpenRepository: func(context.Context) (any, error) { return r, nil },
	})
	if err != nil {
		return err
	}
	g.out("vCenter simulator: %s, VM ils-server with a %s disk\n", sim.URL, humanBytes(demoVMDisk))
	for night := 1; night <= 2; night++ {
		if night == 2 {
			// 2 % of the disk rewritten in 4 clustered regions.
			for i, off := range []int64{3 << 20, 70 << 20, 140 << 20, 200 << 20} {
				if err := sim.WriteDisk("ils-server", 0, off, bytes.Repeat([]byte{byte('a' + i)}, demoVMDisk/50/4)); err != nil {
					return err
				}
			}
		}
		run, err := rn.RunNow(ctx, "demo-vms", runner.TriggerManual)
		if err != nil {
			return err
		}
		if run.Status != runner.StatusSuccess {
			return fmt.Errorf("demo: VM backup night %d: %s: %s", night, run.Status, run.Error)
		}
		s := run.Summary
		g.out("VM night %d: run %s in %s: read %s from vCenter, reused %s, new %s, stored %s, snapshot %s\n", night, run.Status,
			run.Duration().Round(time.Millisecond), humanBytes(s.BytesRead), humanBytes(toInt64(s.Extra["bytes_reused"])),
			humanBytes(s.BytesNew), humanBytes(s.BytesStored), shortID(s.SnapshotID))
		if g.json {
			_ = g.emit(map[string]any{"message_type": "vm_backup", "night": night, "run": run})
		}
	}
	b, err := vmbackup.FindVM(ctx, r, "latest", "ils-server")
	if err != nil {
		return err
	}
	file, _, err := vmbackup.RestoreDisk(ctx, r, b, 0, filepath.Join(dir, "vm-restore"))
	if err != nil {
		return err
	}
	got, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	want, err := os.ReadFile(sim.FlatPath("ils-server", 0))
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("demo: restored disk image %s differs from the VM's disk", file)
	}
	g.out("VM restore: disk 0 of ils-server to %s, byte-identical to the VM's disk\n", file)
	conn, err := vmbackup.ConnectionOf(configs.Job{Name: "demo-vms", Kind: "vmbackup", With: with})
	if err != nil {
		return err
	}
	s, err := vmbackup.Connect(ctx, conn, g.logger())
	if err != nil {
		return err
	}
	defer s.Logout(ctx)
	res, err := vmbackup.RestoreAsNew(ctx, s, r, b, vmbackup.NewVMOptions{Name: "ils-server-restored"})
	if err != nil {
		return err
	}
	g.out("VM restore: ils-server as new VM ils-server-restored (%s), %s uploaded in %s\n", res.Disks[0],
		humanBytes(res.Bytes), res.Duration.Round(time.Millisecond))
	return nil
}

// demoDisk looks like a used disk: free space (zeros), repeated blocks
// and incompressible data, in 64 KiB pieces.
func demoDisk(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	img := make([]byte, size)
	block := bytes.Repeat([]byte("ils library catalogue block "), 64<<10/28+1)[:64<<10]
	for off := 0; off < size; off += 64 << 10 {
		switch rng.IntN(4) {
		case 0:
		case 1:
			copy(img[off:], block)
		default:
			for i := off; i < off+64<<10; i += 8 {
				v := rng.Uint64()
				for k := 0; k < 8; k++ {
					img[i+k] = byte(v >> (8 * k))
				}
			}
		}
	}
	return img
}

func toInt64(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int:
		return int64(x)
	case float64:
		return int64(x)
	}
	return 0
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
