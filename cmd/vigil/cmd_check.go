package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

func newCheckCmd(g *globals) *cobra.Command {
	var o repo.CheckOptions
	c := &cobra.Command{
		Use:   "check",
		Short: "Verify the repository structure and, with --read-data, every stored byte",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if o.Subset != "" {
				if err := repo.ValidateSubset(o.Subset); err != nil {
					return withCode(exitUsage, err)
				}
				o.ReadData = true
			}
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			p := g.newProgress()
			if p.active() {
				o.Progress = func(done, total int64) { p.update("check", done, total, nil) }
			}
			res, err := r.Check(ctx, o)
			p.done()
			if err != nil {
				return err
			}
			if g.json {
				_ = g.emit(map[string]any{"message_type": "summary", "ok": res.OK(), "result": res})
			} else {
				for _, w := range res.Warnings {
					fmt.Fprintf(g.stdout, "warning: %s\n", w)
				}
				for _, e := range res.Errors {
					fmt.Fprintf(g.stdout, "error: %s\n", e)
				}
				for _, p := range res.DamagedPacks {
					fmt.Fprintf(g.stdout, "damaged pack: %s\n", p)
				}
				for _, s := range res.DamagedSnapshots {
					fmt.Fprintf(g.stdout, "damaged snapshot: %s\n", s)
				}
				for _, s := range res.AffectedSnapshots {
					fmt.Fprintf(g.stdout, "affected snapshot: %s\n", s)
				}
				g.out("%d snapshots, %d packs, %d blobs", res.Snapshots, res.Packs, res.Blobs)
				if o.ReadData {
					g.out(", read %d packs (%s)", res.PacksRead, humanBytes(res.BytesRead))
				}
				g.out("\n")
			}
			if !res.OK() {
				return fmt.Errorf("check found %d error(s); damaged packs: %d, affected snapshots: %d", len(res.Errors), len(res.DamagedPacks), len(res.AffectedSnapshots)+len(res.DamagedSnapshots))
			}
			g.out("no errors found\n")
			return nil
		},
	}
	c.Flags().BoolVar(&o.ReadData, "read-data", false, "download, decrypt and verify all data")
	c.Flags().StringVar(&o.Subset, "read-data-subset", "", "verify only N% or the N/M-th part of the packs")
	return c
}
