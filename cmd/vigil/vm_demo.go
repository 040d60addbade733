package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
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
	// Written in pieces so the demo's own memory stays small.
	rng := rand.New(rand.NewPCG(7, 7))
	for off := 0; off < demoVMDisk; off += 16 << 20 {
		if err := sim.WriteDisk("ils-server", 0, int64(off), demoDisk(rng, 16<<20)); err != nil {
			return err
		}
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
		g.out("VM night %d: run %s in %s: read %s of %s from vCenter, new %s, stored %s, snapshot %s\n", night, run.Status,
			run.Duration().Round(time.Millisecond), humanBytes(s.BytesRead), humanBytes(demoVMDisk),
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
	if err := sameFile(file, sim.FlatPath("ils-server", 0)); err != nil {
		return fmt.Errorf("demo: restored disk image: %w", err)
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
func demoDisk(rng *rand.Rand, size int) []byte {
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

// sameFile compares two files in pieces.
func sameFile(a, b string) error {
	fa, err := os.Open(a)
	if err != nil {
		return err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return err
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return fmt.Errorf("%s differs from %s near offset %d", a, b, off)
		}
		if ea != nil || eb != nil {
			if (ea == nil) != (eb == nil) {
				return fmt.Errorf("%s and %s differ in length", a, b)
			}
			return nil
		}
	}
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
