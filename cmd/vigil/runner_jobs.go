package main

import (
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/runner"
)

func newJobsCmd(rf *runnerFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "jobs",
		Short: "List configured jobs: schedule, next run, last run status and age",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			cfg, reg, err := rf.load(rf.configPath())
			if err != nil {
				return err
			}
			specs, err := reg.Build(cfg)
			if err != nil {
				return withCode(exitUsage, err)
			}
			last := map[string]runner.Run{}
			if h, err := openHistory(cmd.Context(), cfg, slog.New(slog.DiscardHandler), true); err != nil {
				g.logger().Warn("history unavailable: last runs are not shown", "err", err)
			} else {
				defer h.Close()
				if last, err = h.LastRuns(cmd.Context()); err != nil {
					return err
				}
			}
			now := time.Now()
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			if !g.json {
				fmt.Fprintln(tw, "JOB\tKIND\tSCHEDULE\tNEXT RUN\tLAST STATUS\tLAST RUN")
			}
			for _, s := range specs {
				var next time.Time
				if !s.Disabled {
					if n := nextRuns(s.Schedule, now, 1); len(n) > 0 {
						next = n[0]
					}
				}
				l, ok := last[s.Name]
				if g.json {
					row := map[string]any{"job": s.Name, "kind": s.Kind, "schedule": scheduleText(s), "disabled": s.Disabled}
					if !next.IsZero() {
						row["next_run"] = next
					}
					if ok {
						row["last_run"] = l
					}
					if err := g.emit(row); err != nil {
						return err
					}
					continue
				}
				status, when := "-", "-"
				if ok {
					status, when = string(l.Status), age(now, l.StartedAt)
					if l.StartedAt.IsZero() {
						when = age(now, l.ScheduledAt)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Kind, scheduleText(s), fmtTime(next), status, when)
			}
			return tw.Flush()
		},
	}
	rf.addConfigFlag(c)
	return c
}
