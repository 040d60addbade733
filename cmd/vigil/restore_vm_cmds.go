package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs"
	"github.com/vigilops/vigil/jobs/vmbackup"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/history"
	"github.com/vigilops/vigil/storage/repo"
)

// restoreTarget is what `vigil restore vm` and `vigil restore disk` share:
// which VM backup, and the config whose history records the restore.
type restoreTarget struct {
	vm     string
	config string
}

func (t *restoreTarget) flags(c *cobra.Command) {
	c.Flags().StringVar(&t.vm, "vm", "", `VM name in the backup (required with "latest"; a snapshot ID names one VM already)`)
	c.Flags().StringVarP(&t.config, "config", "c", "", "config file: its history records the restore, its jobs give the vCenter connection (env VIGIL_CONFIG)")
}

// find opens the repository and loads the VM backup that SNAPSHOT (an ID
// prefix or "latest") names.
func (t *restoreTarget) find(ctx context.Context, g *globals, ref, cmd string) (*repo.Repository, *vmbackup.Backup, error) {
	if (ref == "latest" || ref == "") && t.vm == "" {
		return nil, nil, usageErr("%s: with SNAPSHOT latest, --vm NAME says which VM", cmd)
	}
	r, err := g.openRepo(ctx)
	if err != nil {
		return nil, nil, err
	}
	b, err := vmbackup.FindVM(ctx, r, ref, t.vm)
	return r, b, err
}

// history opens the history of the config, if one is given (flag or env).
// A history that does not open is logged: the restore matters more.
func (t *restoreTarget) history(ctx context.Context, g *globals) (*configs.Config, runner.Recorder, func()) {
	path := t.config
	if path == "" {
		path = os.Getenv("VIGIL_CONFIG")
	}
	if path == "" {
		return nil, nil, func() {}
	}
	cfg, err := configs.Load(path, configs.Options{Kinds: jobs.Default()})
	if err != nil {
		g.logger().Warn("config not loaded; the restore is not recorded", "config", path, "err", err)
		return nil, nil, func() {}
	}
	h, err := history.Open(ctx, cfg.History.Path, history.Options{})
	if err != nil {
		g.logger().Error("history not opened; the restore is not recorded", "path", cfg.History.Path, "err", err)
		return cfg, nil, func() {}
	}
	return cfg, h, func() { h.Close() }
}

func newRestoreDiskCmd(g *globals) *cobra.Command {
	var t restoreTarget
	var disk int
	var to string
	c := &cobra.Command{
		Use:   "disk SNAPSHOT --vm V --disk N --to FILE",
		Short: "Write one disk of a VM backup as a raw, sparse image file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if disk < 0 || to == "" {
				return usageErr("restore disk: --disk N and --to FILE are required")
			}
			r, b, err := t.find(ctx, g, args[0], "restore disk")
			if err != nil {
				return err
			}
			_, h, closeH := t.history(ctx, g)
			defer closeH()
			start := time.Now()
			n, err := vmbackup.RestoreDiskTo(ctx, r, b, disk, to)
			recordRestore(h, "restore", "restore-disk", start, err, runner.Summary{BytesRead: n, Files: 1, SnapshotID: b.Snapshot.ID.String(),
				Extra: map[string]any{"vm": b.Manifest.Name, "disk": disk, "to": to}}, g.logger())
			if err != nil {
				return err
			}
			secs := time.Since(start).Seconds()
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "snapshot_id": b.Snapshot.ID.String(), "vm": b.Manifest.Name,
					"disk": disk, "file": to, "bytes": n, "seconds": secs})
			}
			g.out("restored disk %d of %s (snapshot %s, %s) to %s: %s in %.1fs\n", disk, b.Manifest.Name, b.Snapshot.ID.Short(),
				b.Manifest.Consistency, to, humanBytes(n), secs)
			return nil
		},
	}
	t.flags(c)
	c.Flags().IntVar(&disk, "disk", -1, "disk number (see vigil vm list)")
	c.Flags().StringVar(&to, "to", "", "image file to write (raw; zero runs stay holes); an existing file is an error")
	return c
}

func newRestoreVMCmd(g *globals) *cobra.Command {
	var t restoreTarget
	f := &vmRestoreFlags{}
	var yes bool
	c := &cobra.Command{
		Use:   "vm SNAPSHOT --name NEW [--datastore DS] [--folder F] [--pool P] [--network N] [--power-on] [--replace [--yes]]",
		Short: "Create a VM from a VM backup: upload its disks and its saved configuration",
		Long: `Uploads each disk of the backup to a datastore and creates a new VM from the saved
configuration (new UUIDs and MAC addresses). An existing VM of that name is an error
(exit 2) unless --replace is given and confirmed (typing the VM's name, or --yes in
scripts); the old VM is destroyed only after the new disks are uploaded.
The vCenter connection comes from a vmbackup job of the config (--config, --job) or
from the --vcenter flags. With a config, the restore is recorded in its run history.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if f.o.Name == "" {
				return usageErr("restore vm: --name NEW is required")
			}
			r, b, err := t.find(ctx, g, args[0], "restore vm")
			if err != nil {
				return err
			}
			f.config = t.config
			conn, err := f.connection()
			if err != nil {
				return err
			}
			if f.o.Replace && !yes {
				fmt.Fprintf(cmd.ErrOrStderr(), "--replace destroys the existing VM %q after the restored disks are uploaded.\nType its name to confirm: ", f.o.Name)
				line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != f.o.Name {
					return usageErr("restore vm: replacing %s not confirmed (type the name, or pass --yes)", f.o.Name)
				}
			}
			_, h, closeH := t.history(ctx, g)
			defer closeH()
			s, err := vmbackup.Connect(ctx, conn, g.logger())
			if err != nil {
				return err
			}
			defer s.Logout(ctx)
			start := time.Now()
			res, err := vmbackup.RestoreAsNew(ctx, s, r, b, f.o)
			sum := runner.Summary{SnapshotID: b.Snapshot.ID.String(), Extra: map[string]any{"vm": b.Manifest.Name, "new_vm": f.o.Name}}
			if res != nil {
				sum.BytesRead, sum.Files = res.Bytes, int64(len(res.Disks))
				sum.Extra["replaced"] = res.Replaced
			}
			recordRestore(h, "restore", "restore-vm", start, err, sum, g.logger())
			if err != nil {
				if errors.Is(err, vmbackup.ErrVMExists) {
					return withCode(exitUsage, fmt.Errorf("%w (add --replace to overwrite it)", err))
				}
				return err
			}
			secs := res.Duration.Seconds()
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "snapshot_id": b.Snapshot.ID.String(), "vm": b.Manifest.Name,
					"new_vm": f.o.Name, "moref": res.VM.Reference().Value, "disks": res.Disks, "bytes": res.Bytes, "seconds": secs, "replaced": res.Replaced})
			}
			verb := "as new VM"
			if res.Replaced {
				verb = "replacing VM"
			}
			g.out("restored %s (snapshot %s) %s %s: %d disk(s), %s uploaded in %.1fs (%.0f MB/s)\n", b.Manifest.Name,
				b.Snapshot.ID.Short(), verb, f.o.Name, len(res.Disks), humanBytes(res.Bytes), secs, float64(res.Bytes)/1e6/max(secs, 1e-3))
			return nil
		},
	}
	t.flags(c)
	fl := c.Flags()
	fl.StringVar(&f.o.Name, "name", "", "name of the VM to create")
	fl.StringVar(&f.o.Datastore, "datastore", "", "datastore for the VM (default: the original's)")
	fl.StringVar(&f.o.Folder, "folder", "", "VM folder inventory path (default: the datacenter's VM folder)")
	fl.StringVar(&f.o.Pool, "pool", "", "resource pool inventory path (default: the original's)")
	fl.StringVar(&f.o.Network, "network", "", "network for every NIC (default: the original networks)")
	fl.BoolVar(&f.o.PowerOn, "power-on", false, "power the VM on")
	fl.BoolVar(&f.o.Replace, "replace", false, "replace an existing VM of that name (asks for confirmation)")
	fl.BoolVar(&yes, "yes", false, "confirm --replace without asking (scripts)")
	fl.StringVar(&f.job, "job", "", "vmbackup job of the config whose vCenter connection to use")
	fl.StringVar(&f.conn.URL, "vcenter", "", "vCenter URL (instead of --job)")
	fl.StringVar(&f.conn.User, "vcenter-user", "", "vCenter user")
	fl.StringVar(&f.passwordFile, "vcenter-password-file", "", "file holding the vCenter password")
	fl.StringVar(&f.conn.CAFile, "vcenter-ca-file", "", "PEM roots that verify vCenter's certificate")
	fl.StringVar(&f.conn.Thumbprint, "vcenter-thumbprint", "", "pinned SHA-256 of vCenter's certificate")
	fl.BoolVar(&f.conn.Insecure, "vcenter-insecure", false, "do not verify vCenter's certificate (warns)")
	return c
}
