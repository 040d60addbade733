package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

func newForgetCmd(g *globals) *cobra.Command {
	var (
		p       repo.Policy
		f       snapshotFilter
		groupBy string
		dryRun  bool
		prune   bool
	)
	c := &cobra.Command{
		Use:   "forget [SNAPSHOT...]",
		Short: "Remove snapshots by ID or by retention policy, printing why each is kept",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) == 0 && p.Empty() {
				return usageErr("forget: give snapshot IDs or at least one --keep-* rule")
			}
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			var remove []*repo.Snapshot
			if len(args) > 0 {
				for _, a := range args {
					sn, err := r.FindSnapshot(ctx, a)
					if err != nil {
						return err
					}
					remove = append(remove, sn)
				}
			} else {
				sns, err := r.Snapshots(ctx, nil)
				if err != nil {
					return err
				}
				var sel []*repo.Snapshot
				for _, s := range sns {
					if f.match(s) {
						sel = append(sel, s)
					}
				}
				groups, err := repo.GroupSnapshots(sel, strings.Split(groupBy, ","))
				if err != nil {
					return usageErr("%v", err)
				}
				for key, gs := range groups {
					ds := repo.ApplyPolicy(gs, p, time.Local)
					if g.json {
						_ = g.emit(map[string]any{"message_type": "group", "group": key, "snapshots": ds})
					} else {
						fmt.Fprintf(g.stdout, "group %s:\n", key)
					}
					for _, d := range ds {
						if d.Keep {
							g.out("  keep   %s %s  (%s)\n", d.Snapshot.ID.Short(), d.Time.Local().Format("2006-01-02 15:04"), strings.Join(d.Reasons, ", "))
						} else {
							g.out("  remove %s %s\n", d.Snapshot.ID.Short(), d.Time.Local().Format("2006-01-02 15:04"))
							remove = append(remove, d.Snapshot)
						}
					}
				}
			}
			if dryRun {
				g.out("dry run: would remove %d snapshots\n", len(remove))
				return nil
			}
			if len(remove) > 0 {
				// Exclusive, like prune: nothing may read a snapshot we delete.
				lock, err := r.Lock(ctx, true, "forget", 0)
				if err != nil {
					return err
				}
				for _, s := range remove {
					if err := r.RemoveSnapshot(ctx, s.ID); err != nil {
						lock.Unlock()
						return err
					}
				}
				lock.Unlock()
			}
			if g.json {
				ids := make([]string, 0, len(remove))
				for _, s := range remove {
					ids = append(ids, s.ID.String())
				}
				_ = g.emit(map[string]any{"message_type": "summary", "removed": ids})
			} else {
				g.out("removed %d snapshots\n", len(remove))
			}
			if prune {
				return runPrune(cmd, g, r, repo.PruneOptions{})
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.IntVar(&p.Last, "keep-last", 0, "keep the last N snapshots")
	fl.IntVar(&p.Hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last N hours")
	fl.IntVar(&p.Daily, "keep-daily", 0, "keep the newest snapshot of each of the last N days")
	fl.IntVar(&p.Weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last N weeks")
	fl.IntVar(&p.Monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last N months")
	fl.IntVar(&p.Yearly, "keep-yearly", 0, "keep the newest snapshot of each of the last N years")
	fl.DurationVar(&p.Within, "keep-within", 0, "keep snapshots younger than this (relative to the newest), e.g. 720h")
	fl.StringArrayVar(&p.Tags, "keep-tag", nil, "keep snapshots with this tag")
	fl.StringVar(&groupBy, "group-by", "host,job", "apply the policy per group of: host, job, tags, paths")
	fl.BoolVarP(&dryRun, "dry-run", "n", false, "print what would be removed")
	fl.BoolVar(&prune, "prune", false, "prune unreferenced data afterwards")
	f.register(c)
	return c
}

func newPruneCmd(g *globals) *cobra.Command {
	var o repo.PruneOptions
	c := &cobra.Command{
		Use:   "prune",
		Short: "Remove data no snapshot references and repack mostly-empty packs (exclusive lock)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			return runPrune(cmd, g, r, o)
		},
	}
	c.Flags().Float64Var(&o.RepackUnused, "repack-unused", 0.3, "repack packs whose unused share is at least this fraction")
	c.Flags().BoolVarP(&o.DryRun, "dry-run", "n", false, "print what would be done")
	return c
}

func runPrune(cmd *cobra.Command, g *globals, r *repo.Repository, o repo.PruneOptions) error {
	res, err := r.Prune(cmd.Context(), o)
	if err != nil {
		return err
	}
	if g.json {
		return g.emit(map[string]any{"message_type": "summary", "prune": res})
	}
	verb := "deleted"
	if o.DryRun {
		verb = "would delete"
	}
	g.out("%s %d packs (%d left by interrupted runs), repacked %d into %d, freed %s\n",
		verb, res.PacksDeleted, res.StrayPacks, res.PacksRepacked, res.PacksWritten, humanBytes(res.BytesFreed))
	return nil
}
