package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

func newRestoreCmd(g *globals) *cobra.Command {
	var o repo.RestoreOptions
	c := &cobra.Command{
		Use:   "restore SNAPSHOT[:PATH] --target DIR",
		Short: "Restore a snapshot, or a path inside it, into a directory",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if o.Target == "" {
				return usageErr("restore: --target is required")
			}
			ref, sub, _ := strings.Cut(args[0], ":")
			o.Path = sub
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			sn, err := r.FindSnapshot(ctx, ref)
			if err != nil {
				return err
			}
			p := g.newProgress()
			if p.active() {
				o.Progress = func(pr repo.RestoreProgress) {
					p.update("restore", pr.BytesDone, pr.BytesTotal, map[string]any{"files_done": pr.Files, "errors": pr.Errors})
				}
			}
			res, err := r.Restore(ctx, sn, o)
			p.done()
			if err != nil {
				return err
			}
			g.fileErrors("failed to restore", res.Errors)
			if g.json {
				_ = g.emit(map[string]any{"message_type": "summary", "snapshot_id": sn.ID.String(), "files": res.Files,
					"dirs": res.Dirs, "bytes": res.Bytes, "errors": len(res.Errors), "target": o.Target})
			} else {
				g.out("restored %d files, %d dirs, %s from snapshot %s to %s\n", res.Files, res.Dirs, humanBytes(res.Bytes), sn.ID.Short(), o.Target)
			}
			if len(res.Errors) > 0 {
				return &partialError{msg: fmt.Sprintf("restore is partial: %d file(s) could not be restored", len(res.Errors))}
			}
			return nil
		},
	}
	// VM restores are subcommands; a snapshot ID is hex, so "vm" and
	// "disk" never shadow one.
	c.AddCommand(newRestoreVMCmd(g), newRestoreDiskCmd(g))
	f := c.Flags()
	f.StringVarP(&o.Target, "target", "t", "", "directory to restore into (created if missing)")
	f.StringArrayVar(&o.Includes, "include", nil, "restore only paths matching a pattern (repeatable)")
	f.StringArrayVar(&o.Excludes, "exclude", nil, "skip paths matching a pattern (repeatable)")
	return c
}
