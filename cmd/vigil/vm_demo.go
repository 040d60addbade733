package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/filebackup"
	"github.com/vigilops/vigil/jobs/vmbackup"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/history"
	"github.com/vigilops/vigil/storage/repo"
)

// demoVM is one simulated VM of the demo.
type demoVM struct {
	name  string
	disks []int64
}

var demoVMs = []demoVM{
	{"ils-server", []int64{192 << 20, 32 << 20}},
	{"opac-web", []int64{96 << 20}},
	{"circ-db", []int64{128 << 20}},
}

// runDemo does the demo's work in dir (made fresh by freshDemoDir).
func runDemo(ctx context.Context, g *globals, dir string) error {
	start := time.Now()
	// govmomi's simulator keeps its datastore under os.TempDir(); point that
	// into the demo directory so nothing is written outside it.
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	old, had := os.LookupEnv("TMPDIR")
	os.Setenv("TMPDIR", tmp)
	defer func() {
		if had {
			os.Setenv("TMPDIR", old)
		} else {
			os.Unsetenv("TMPDIR")
		}
	}()

	repoDir, filesDir := filepath.Join(dir, "repo"), filepath.Join(dir, "files")
	st, err := local.Open(repoDir, true)
	if err != nil {
		return err
	}
	o := g.repoOptions()
	o.CacheDir = filepath.Join(dir, "cache")
	const password = "demo-password"
	r, err := repo.Init(ctx, st, password, repo.InitOptions{}, o)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "repo-password"), []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	histPath := filepath.Join(dir, "history.db")
	hist, err := history.Open(ctx, histPath, history.Options{})
	if err != nil {
		return err
	}
	defer hist.Close()
	if err := writeDemoData(filesDir, 1); err != nil {
		return err
	}

	sim, err := vmsim.Start(ctx)
	if err != nil {
		return err
	}
	defer sim.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	var names []string
	var total int64
	for _, vm := range demoVMs {
		if _, err := sim.CreateVM(ctx, vm.name, vmsim.VMOptions{DiskSizes: vm.disks, PoweredOn: true}); err != nil {
			return err
		}
		// Written in pieces so the demo's own memory stays small.
		for i, size := range vm.disks {
			for off := int64(0); off < size; off += 16 << 20 {
				if err := sim.WriteDisk(vm.name, i, off, demoDisk(rng, int(min(16<<20, size-off)))); err != nil {
					return err
				}
			}
			total += size
		}
		names = append(names, vm.name)
	}
	g.out("vigil demo in %s\n  vCenter simulator %s: %d VMs, %s of disks\n  repository %s (password in repo-password), history %s\n\n",
		dir, sim.URL, len(demoVMs), humanBytes(total), repoDir, histPath)

	pw := filepath.Join(dir, "vcenter-password")
	if err := os.WriteFile(pw, []byte(sim.Password), 0o600); err != nil {
		return err
	}
	vmWith, err := configs.ParseWith(fmt.Sprintf("url: %s\nuser: %s\npassword_file: %s\nthumbprint: %q\nvms: [%s]\nparallel: 2\n",
		sim.URL, sim.User, pw, vmbackup.Thumbprint(sim.Server.Certificate()), strings.Join(names, ", ")))
	if err != nil {
		return err
	}
	vmJob, err := vmbackup.New(configs.Job{Name: "vms", Kind: "vmbackup", With: vmWith})
	if err != nil {
		return err
	}
	fileWith, err := configs.ParseWith(fmt.Sprintf("paths: [%q]\n", filesDir))
	if err != nil {
		return err
	}
	fileJob, err := filebackup.New(configs.Job{Name: "files", Kind: "files", With: fileWith})
	if err != nil {
		return err
	}
	rn, err := runner.New([]runner.Spec{{Name: "vms", Kind: "vmbackup", Job: vmJob}, {Name: "files", Kind: "files", Job: fileJob}},
		runner.Options{History: hist, Logger: g.logger(), OpenRepository: func(context.Context) (any, error) { return r, nil }})
	if err != nil {
		return err
	}
	for night := 1; night <= 2; night++ {
		if night == 2 {
			if err := demoNightTwo(sim, filesDir); err != nil {
				return err
			}
		}
		for _, job := range []string{"vms", "files"} {
			run, err := rn.RunNow(ctx, job, runner.TriggerManual)
			if err != nil {
				return err
			}
			if run.Status != runner.StatusSuccess {
				return fmt.Errorf("night %d, job %s: %s: %s", night, job, run.Status, run.Error)
			}
			g.out("night %d: %-5s run %d %s in %s\n", night, job, run.ID, run.Status, run.Duration().Round(time.Millisecond))
		}
	}

	// Restores, recorded as manual runs like `vigil restore` does.
	b, err := vmbackup.FindVM(ctx, r, "latest", "ils-server")
	if err != nil {
		return err
	}
	t0 := time.Now()
	file, res, err := vmbackup.RestoreDisk(ctx, r, b, 0, filepath.Join(dir, "restore"))
	if err == nil {
		err = sameFile(file, sim.FlatPath("ils-server", 0))
	}
	var rb int64
	if res != nil {
		rb = res.Bytes
	}
	recordRestore(hist, "restore", "restore-disk", t0, err, runner.Summary{BytesRead: rb, Files: 1, SnapshotID: b.Snapshot.ID.String(),
		Extra: map[string]any{"vm": "ils-server", "disk": 0, "to": rel(dir, file)}}, g.logger())
	if err != nil {
		return fmt.Errorf("restore disk: %w", err)
	}
	g.out("restore: disk 0 of ils-server to %s, byte-identical to the VM's disk\n", rel(dir, file))
	s, err := vmbackup.Connect(ctx, vmbackup.Connection{URL: sim.URL.String(), User: sim.User, Password: configs.NewSecret(sim.Password),
		Thumbprint: vmbackup.Thumbprint(sim.Server.Certificate())}, g.logger())
	if err != nil {
		return err
	}
	defer s.Logout(ctx)
	t0 = time.Now()
	nres, err := vmbackup.RestoreAsNew(ctx, s, r, b, vmbackup.NewVMOptions{Name: "ils-server-restored"})
	sum := runner.Summary{SnapshotID: b.Snapshot.ID.String(), Extra: map[string]any{"vm": "ils-server", "new_vm": "ils-server-restored"}}
	if nres != nil {
		sum.BytesRead, sum.Files = nres.Bytes, int64(len(nres.Disks))
	}
	recordRestore(hist, "restore", "restore-vm", t0, err, sum, g.logger())
	if err != nil {
		return fmt.Errorf("restore VM: %w", err)
	}
	for i := range nres.Disks {
		if err := sameFile(sim.LocalPath(nres.Disks[i]), sim.FlatPath("ils-server", i)); err != nil {
			return fmt.Errorf("restored VM's disk %d: %w", i, err)
		}
	}
	g.out("restore: ils-server as new VM ils-server-restored, %d disks byte-identical\n", len(nres.Disks))
	chk, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		return err
	}
	if !chk.OK() {
		return fmt.Errorf("check failed: %v", chk.Errors)
	}
	g.out("check --read-data: %d packs verified, no errors\n\n", chk.PacksRead)

	runs, err := hist.Runs(ctx, runner.RunFilter{Limit: 50})
	if err != nil {
		return err
	}
	slices.Reverse(runs)
	printRunReport(g, runs, total)
	if g.json {
		_ = g.emit(map[string]any{"message_type": "summary", "dir": dir, "runs": runs})
	}
	cfgPath := filepath.Join(dir, "vigil.yaml")
	cfg := fmt.Sprintf("# Written by vigil demo: its repository, history and file backup job.\nrepository:\n  url: %q\n  password_file: %q\nhistory:\n  path: %q\njobs:\n  - name: files\n    kind: files\n    with:\n      paths: [%q]\n",
		repoDir, filepath.Join(dir, "repo-password"), histPath, filesDir)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	g.out("\n%d runs recorded in %s. Look again: vigil runs -c %s\ndone in %s\n",
		len(runs), rel(dir, histPath), rel(dir, cfgPath), time.Since(start).Round(100*time.Millisecond))
	return nil
}

// demoNightTwo changes 2 % of ils-server's first disk in 4 clustered
// regions, 40 scattered 64 KiB blocks of circ-db, and some files.
func demoNightTwo(sim *vmsim.Sim, filesDir string) error {
	size := demoVMs[0].disks[0]
	for i, off := range []int64{3 << 20, 50 << 20, 100 << 20, 150 << 20} {
		if err := sim.WriteDisk("ils-server", 0, off, bytes.Repeat([]byte{byte('a' + i)}, int(size/50/4))); err != nil {
			return err
		}
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 40; i++ {
		off := rng.Int64N(demoVMs[2].disks[0]/(64<<10)) * (64 << 10)
		if err := sim.WriteDisk("circ-db", 0, off, demoDisk(rng, 64<<10)); err != nil {
			return err
		}
	}
	return changeDemoData(filesDir)
}

// printRunReport prints the runs as the history recorded them.
func printRunReport(g *globals, runs []runner.Run, diskTotal int64) {
	g.out("run report (from the history)\n")
	g.out("%4s  %-8s %-13s %-8s %8s %10s %10s %10s  %s\n", "run", "job", "kind", "status", "time", "read", "new", "stored", "notes")
	for _, run := range runs {
		s := run.Summary
		note := ""
		switch run.Kind {
		case "vmbackup":
			note = fmt.Sprintf("%v VMs ok; read %.1f %% of %s of disks; chunked %s", s.Extra["vms_ok"],
				100*float64(s.BytesRead)/float64(diskTotal), humanBytes(diskTotal), humanBytes(anyInt(s.Extra["bytes_chunked"])))
		case "files":
			note = fmt.Sprintf("%d files, snapshot %s", s.Files, shortID(s.SnapshotID))
		case "restore-disk":
			note = fmt.Sprintf("%v disk %v → %v at %.0f MB/s", s.Extra["vm"], s.Extra["disk"], s.Extra["to"], anyFloat(s.Extra["mb_per_s"]))
		case "restore-vm":
			note = fmt.Sprintf("%v → new VM %v at %.0f MB/s", s.Extra["vm"], s.Extra["new_vm"], anyFloat(s.Extra["mb_per_s"]))
		}
		if run.Error != "" {
			note = run.Error
		}
		g.out("%4d  %-8s %-13s %-8s %8s %10s %10s %10s  %s\n", run.ID, run.Job, run.Kind, run.Status,
			run.Duration().Round(10*time.Millisecond), humanBytes(s.BytesRead), humanBytes(s.BytesNew), humanBytes(s.BytesStored), note)
	}
}

// anyInt and anyFloat read numbers from a summary's Extra, which holds
// float64 after a round trip through the history's JSON.
func anyInt(v any) int64 {
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

func anyFloat(v any) float64 {
	if f, ok := v.(float64); ok {
		return f
	}
	return float64(anyInt(v))
}

func rel(base, p string) string {
	if r, err := filepath.Rel(filepath.Dir(base), p); err == nil {
		return r
	}
	return p
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
