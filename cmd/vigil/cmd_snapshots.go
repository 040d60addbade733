package main

import (
	"fmt"
	"path"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

type snapshotFilter struct {
	hosts, tags, jobs []string
}

func (f *snapshotFilter) register(c *cobra.Command) {
	c.Flags().StringArrayVar(&f.hosts, "host", nil, "only snapshots of this host (repeatable)")
	c.Flags().StringArrayVar(&f.tags, "tag", nil, "only snapshots with this tag (repeatable)")
	c.Flags().StringArrayVar(&f.jobs, "job", nil, "only snapshots of this job (repeatable)")
}

func (f *snapshotFilter) match(s *repo.Snapshot) bool {
	in := func(v string, list []string) bool {
		if len(list) == 0 {
			return true
		}
		for _, x := range list {
			if x == v {
				return true
			}
		}
		return false
	}
	if !in(s.Hostname, f.hosts) || !in(s.Job, f.jobs) {
		return false
	}
	for _, t := range f.tags {
		if !s.HasTag(t) {
			return false
		}
	}
	return true
}

func snapshotJSON(s *repo.Snapshot) map[string]any {
	return map[string]any{"id": s.ID.String(), "short_id": s.ID.Short(), "time": s.Time, "hostname": s.Hostname,
		"username": s.Username, "paths": s.Paths, "tags": s.Tags, "job": s.Job, "parent": s.Parent, "tree": s.Tree, "summary": s.Summary}
}

func newSnapshotsCmd(g *globals) *cobra.Command {
	var f snapshotFilter
	c := &cobra.Command{
		Use:   "snapshots",
		Short: "List snapshots",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			var bad int
			sns, err := r.Snapshots(ctx, func(id repo.ID, err error) {
				bad++
				fmt.Fprintf(g.stderr, "vigil: snapshot %s unreadable: %v\n", id.Short(), err)
			})
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 2, 2, ' ', 0)
			if !g.json {
				fmt.Fprintln(tw, "ID\tTime\tHost\tJob\tTags\tSize\tPaths")
			}
			n := 0
			for _, s := range sns {
				if !f.match(s) {
					continue
				}
				n++
				if g.json {
					if err := g.emit(snapshotJSON(s)); err != nil {
						return err
					}
					continue
				}
				size := ""
				if s.Summary != nil {
					size = humanBytes(s.Summary.BytesTotal)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID.Short(), s.Time.Local().Format("2006-01-02 15:04:05"),
					s.Hostname, s.Job, strings.Join(s.Tags, ","), size, strings.Join(s.Paths, ","))
			}
			if !g.json {
				tw.Flush()
				fmt.Fprintf(g.stdout, "%d snapshots\n", n)
			}
			if bad > 0 {
				return &partialError{msg: fmt.Sprintf("%d snapshot(s) could not be read; run vigil check", bad)}
			}
			return nil
		},
	}
	f.register(c)
	return c
}

func newLsCmd(g *globals) *cobra.Command {
	var long bool
	c := &cobra.Command{
		Use:   "ls SNAPSHOT [PATH]",
		Short: "List the files of a snapshot",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			sn, err := r.FindSnapshot(ctx, args[0])
			if err != nil {
				return err
			}
			idx, err := r.LoadIndex(ctx)
			if err != nil {
				return err
			}
			prefix := "/"
			if len(args) == 2 {
				prefix = path.Clean("/" + args[1])
			}
			return r.Walk(ctx, idx, sn.Tree, func(p string, n *repo.Node) error {
				if p != prefix && !strings.HasPrefix(p, strings.TrimSuffix(prefix, "/")+"/") {
					return nil
				}
				if g.json {
					return g.emit(map[string]any{"path": p, "type": n.Type, "mode": n.Mode.String(), "size": n.Size,
						"mtime": n.ModTime, "uid": n.UID, "gid": n.GID, "link_target": n.LinkTarget})
				}
				if long {
					fmt.Fprintf(g.stdout, "%s %8s %10d %s %s\n", n.Mode, n.User, n.Size, n.ModTime.Local().Format("2006-01-02 15:04"), p)
				} else {
					fmt.Fprintln(g.stdout, p)
				}
				return nil
			})
		},
	}
	c.Flags().BoolVarP(&long, "long", "l", false, "show mode, owner, size and mtime")
	return c
}
