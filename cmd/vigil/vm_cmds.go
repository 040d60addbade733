package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs"
	"github.com/vigilops/vigil/jobs/vmbackup"
)

// newVMCmd groups the VM backup commands: list what the repository holds
// and restore a disk image or a whole VM.
func newVMCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "vm", Short: "List and restore VM backups (vmbackup jobs)"}
	c.AddCommand(newVMListCmd(g), newVMRestoreCmd(g))
	return c
}

func newVMListCmd(g *globals) *cobra.Command {
	var name string
	c := &cobra.Command{
		Use:   "list [--vm NAME]",
		Short: "List VM backups in the repository, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			list, err := vmbackup.List(ctx, r)
			if err != nil {
				return err
			}
			for _, b := range list {
				m := b.Manifest
				if name != "" && m.Name != name {
					continue
				}
				if g.json {
					if err := g.emit(map[string]any{"snapshot_id": b.Snapshot.ID.String(), "time": b.Snapshot.Time, "vm": m}); err != nil {
						return err
					}
					continue
				}
				var parts []string
				for _, d := range m.Disks {
					parts = append(parts, fmt.Sprintf("disk %d %s %s (%s)", d.Index, d.Label, humanBytes(d.Capacity), d.Read))
				}
				g.out("%s  %s  %-20s %-16s %s\n", b.Snapshot.ID.Short(), b.Snapshot.Time.Local().Format("2006-01-02 15:04"), m.Name, m.Consistency, strings.Join(parts, ", "))
			}
			return nil
		},
	}
	c.Flags().StringVar(&name, "vm", "", "only this VM")
	return c
}

type vmRestoreFlags struct {
	vm, asNew, target string
	disk              int
	o                 vmbackup.NewVMOptions
	config, job       string
	conn              vmbackup.Connection
	passwordFile      string
}

func newVMRestoreCmd(g *globals) *cobra.Command {
	f := &vmRestoreFlags{disk: -1}
	c := &cobra.Command{
		Use:        "restore SNAPSHOT --vm NAME (--disk N --target DIR | --as-new NAME [--config FILE --job JOB | --vcenter URL ...])",
		Short:      "Restore one disk of a VM backup as an image file, or the whole VM as a new VM",
		Deprecated: "use vigil restore disk SNAPSHOT --vm V --disk N --to FILE, or vigil restore vm SNAPSHOT --name NEW",
		Long: `SNAPSHOT is a snapshot ID (prefix) or "latest" (the newest backup of --vm).
--disk N --target DIR writes disk N as a raw, sparse image file into DIR.
--as-new NAME uploads every disk to a datastore and creates a new VM from the saved
configuration; it never replaces an existing VM. The vCenter connection comes from a
vmbackup job of the config (--config, --job) or from the --vcenter flags.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if f.vm == "" {
				return usageErr("vm restore: --vm is required")
			}
			if (f.asNew == "") == (f.disk < 0) {
				return usageErr("vm restore: give either --disk N with --target DIR, or --as-new NAME")
			}
			if f.disk >= 0 && f.target == "" {
				return usageErr("vm restore: --disk needs --target DIR")
			}
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			b, err := vmbackup.FindVM(ctx, r, args[0], f.vm)
			if err != nil {
				return err
			}
			start := time.Now()
			if f.disk >= 0 {
				file, res, err := vmbackup.RestoreDisk(ctx, r, b, f.disk, f.target)
				if err != nil {
					return err
				}
				secs := time.Since(start).Seconds()
				if g.json {
					return g.emit(map[string]any{"message_type": "summary", "snapshot_id": b.Snapshot.ID.String(), "vm": b.Manifest.Name,
						"disk": f.disk, "file": file, "bytes": res.Bytes, "seconds": secs})
				}
				g.out("restored disk %d of %s (snapshot %s, %s) to %s: %s in %.1fs\n", f.disk, b.Manifest.Name, b.Snapshot.ID.Short(),
					b.Manifest.Consistency, file, humanBytes(res.Bytes), secs)
				return nil
			}
			conn, err := f.connection()
			if err != nil {
				return err
			}
			s, err := vmbackup.Connect(ctx, conn, g.logger())
			if err != nil {
				return err
			}
			defer s.Logout(ctx)
			f.o.Name = f.asNew
			res, err := vmbackup.RestoreAsNew(ctx, s, r, b, f.o)
			if err != nil {
				if errors.Is(err, vmbackup.ErrVMExists) {
					return withCode(exitUsage, err)
				}
				return err
			}
			secs := res.Duration.Seconds()
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "snapshot_id": b.Snapshot.ID.String(), "vm": b.Manifest.Name,
					"new_vm": f.asNew, "moref": res.VM.Reference().Value, "disks": res.Disks, "bytes": res.Bytes, "seconds": secs})
			}
			g.out("restored %s (snapshot %s) as new VM %s: %d disk(s), %s uploaded in %.1fs (%.0f MB/s)\n", b.Manifest.Name,
				b.Snapshot.ID.Short(), f.asNew, len(res.Disks), humanBytes(res.Bytes), secs, float64(res.Bytes)/1e6/max(secs, 1e-3))
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.vm, "vm", "", "VM name in the backup")
	fl.IntVar(&f.disk, "disk", -1, "disk number to restore as an image file (see vigil vm list)")
	fl.StringVarP(&f.target, "target", "t", "", "directory for the disk image")
	fl.StringVar(&f.asNew, "as-new", "", "create a new VM with this name")
	fl.StringVar(&f.o.Datastore, "datastore", "", "datastore for the new VM (default: the original's)")
	fl.StringVar(&f.o.Folder, "folder", "", "VM folder inventory path (default: the datacenter's VM folder)")
	fl.StringVar(&f.o.Pool, "pool", "", "resource pool inventory path (default: the original's)")
	fl.StringVar(&f.o.Network, "network", "", "network for every NIC (default: the original networks)")
	fl.BoolVar(&f.o.PowerOn, "power-on", false, "power the new VM on")
	fl.StringVarP(&f.config, "config", "c", "", "config file holding the vmbackup job (env VIGIL_CONFIG)")
	fl.StringVar(&f.job, "job", "", "vmbackup job whose vCenter connection to use")
	fl.StringVar(&f.conn.URL, "vcenter", "", "vCenter URL (instead of --job)")
	fl.StringVar(&f.conn.User, "vcenter-user", "", "vCenter user")
	fl.StringVar(&f.passwordFile, "vcenter-password-file", "", "file holding the vCenter password")
	fl.StringVar(&f.conn.CAFile, "vcenter-ca-file", "", "PEM roots that verify vCenter's certificate")
	fl.StringVar(&f.conn.Thumbprint, "vcenter-thumbprint", "", "pinned SHA-256 of vCenter's certificate")
	fl.BoolVar(&f.conn.Insecure, "vcenter-insecure", false, "do not verify vCenter's certificate (warns)")
	return c
}

// connection comes from the job when one is named, else from the flags.
func (f *vmRestoreFlags) connection() (vmbackup.Connection, error) {
	if f.job != "" {
		path := f.config
		if path == "" {
			path = os.Getenv("VIGIL_CONFIG")
		}
		if path == "" {
			path = defaultConfigPath
		}
		cfg, err := configs.Load(path, configs.Options{Kinds: jobs.Default()})
		if err != nil {
			return vmbackup.Connection{}, withCode(exitUsage, err)
		}
		for _, j := range cfg.Jobs {
			if j.Name == f.job {
				if j.Kind != "vmbackup" {
					return vmbackup.Connection{}, usageErr("vm restore: job %s is a %s job, not vmbackup", j.Name, j.Kind)
				}
				return vmbackup.ConnectionOf(j)
			}
		}
		return vmbackup.Connection{}, usageErr("vm restore: %s has no job %q", path, f.job)
	}
	if f.conn.URL == "" || f.conn.User == "" || f.passwordFile == "" {
		return vmbackup.Connection{}, usageErr("vm restore: --as-new needs --job, or --vcenter, --vcenter-user and --vcenter-password-file")
	}
	pw, err := os.ReadFile(f.passwordFile)
	if err != nil {
		return vmbackup.Connection{}, usageErr("vm restore: %v", err)
	}
	c := f.conn
	c.Password = configs.NewSecret(strings.TrimRight(string(pw), "\r\n"))
	return c, nil
}
