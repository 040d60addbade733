package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newStatsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show repository size and deduplication",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			st, err := r.Stats(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "stats": st})
			}
			ratio := func(a, b int64) float64 {
				if b == 0 {
					return 0
				}
				return float64(a) / float64(b)
			}
			g.out("snapshots:            %d\n", st.Snapshots)
			g.out("restore size (all):   %s\n", humanBytes(st.RestoreBytes))
			g.out("unique data:          %s in %d blobs (%d data, %d tree)\n", humanBytes(st.RawBytes), st.Blobs, st.DataBlobs, st.TreeBlobs)
			g.out("stored:               %s in %d packs\n", humanBytes(st.PackBytes), st.Packs)
			g.out("dedup ratio:          %.2fx\n", ratio(st.RestoreBytes, st.RawBytes))
			g.out("compression ratio:    %.2fx\n", ratio(st.RawBytes, st.StoredBytes))
			return nil
		},
	}
}

func newKeyCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "key", Short: "Manage the passwords (key files) that open the repository"}
	var newPwFile string
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a key with a new password (from --new-password-file or VIGIL_NEW_PASSWORD)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			pw := os.Getenv("VIGIL_NEW_PASSWORD")
			if newPwFile != "" {
				b, err := os.ReadFile(newPwFile)
				if err != nil {
					return usageErr("read new password file: %v", err)
				}
				pw = strings.TrimRight(string(b), "\r\n")
			}
			if pw == "" {
				return usageErr("key add: no new password: use --new-password-file or VIGIL_NEW_PASSWORD")
			}
			id, err := r.AddKey(cmd.Context(), pw)
			if err != nil {
				return err
			}
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "id": id.String()})
			}
			g.out("added key %s\n", id.Short())
			return nil
		},
	}
	add.Flags().StringVar(&newPwFile, "new-password-file", "", "file holding the new password")
	list := &cobra.Command{
		Use:   "list",
		Short: "List keys",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			keys, err := r.ListKeys(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 2, 2, ' ', 0)
			if !g.json {
				fmt.Fprintln(tw, " ID\tUser\tHost\tCreated")
			}
			for _, k := range keys {
				if g.json {
					if err := g.emit(k); err != nil {
						return err
					}
					continue
				}
				cur := " "
				if k.Current {
					cur = "*"
				}
				fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", cur, k.ID[:8], k.Username, k.Host, k.Created.Local().Format("2006-01-02 15:04:05"))
			}
			return tw.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a key (not the one in use)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			if err := r.RemoveKey(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "removed": args[0]})
			}
			g.out("removed key %s\n", args[0])
			return nil
		},
	}
	c.AddCommand(add, list, remove)
	return c
}

func newLocksCmd(g *globals) *cobra.Command {
	var removeStale, removeAll bool
	c := &cobra.Command{
		Use:   "locks",
		Short: "List repository locks (stale ones are removed automatically by the next run)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			if removeStale || removeAll {
				n, err := r.RemoveStaleLocks(ctx, removeAll)
				if err != nil {
					return err
				}
				if g.json {
					return g.emit(map[string]any{"message_type": "summary", "removed": n})
				}
				g.out("removed %d locks\n", n)
				return nil
			}
			locks, err := r.Locks(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 2, 2, ' ', 0)
			if !g.json {
				fmt.Fprintln(tw, "ID\tKind\tOperation\tHost\tPID\tCreated\tHeartbeat\tState")
			}
			for _, l := range locks {
				kind := "shared"
				if l.Exclusive {
					kind = "exclusive"
				}
				state := "live"
				if l.Stale {
					state = "stale: " + l.StaleReason
				}
				if g.json {
					if err := g.emit(map[string]any{"id": l.ID.String(), "exclusive": l.Exclusive, "operation": l.Operation, "hostname": l.Hostname,
						"pid": l.PID, "username": l.Username, "created": l.Created, "heartbeat": l.Heartbeat, "stale": l.Stale, "stale_reason": l.StaleReason}); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", l.ID.Short(), kind, l.Operation, l.Hostname, l.PID,
					l.Created.Local().Format("2006-01-02 15:04:05"), l.Heartbeat.Local().Format("15:04:05"), state)
			}
			if !g.json {
				tw.Flush()
				fmt.Fprintf(g.stdout, "%d locks\n", len(locks))
			}
			return nil
		},
	}
	c.Flags().BoolVar(&removeStale, "remove-stale", false, "remove stale locks now")
	c.Flags().BoolVar(&removeAll, "remove-all", false, "remove every lock, even live ones (only when you know no vigil runs)")
	return c
}

func newRepairCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "repair", Short: "Repair repository metadata"}
	c.AddCommand(&cobra.Command{
		Use:   "index",
		Short: "Rebuild the index from the pack headers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.openRepo(cmd.Context())
			if err != nil {
				return err
			}
			n, bad, err := r.RepairIndex(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				_ = g.emit(map[string]any{"message_type": "summary", "packs": n, "unreadable": bad})
			} else {
				for _, b := range bad {
					fmt.Fprintf(g.stderr, "vigil: skipped %s\n", b)
				}
				g.out("rebuilt index from %d packs\n", n)
			}
			if len(bad) > 0 {
				return &partialError{msg: fmt.Sprintf("%d pack(s) had unreadable headers and were left out", len(bad))}
			}
			return nil
		},
	})
	return c
}
