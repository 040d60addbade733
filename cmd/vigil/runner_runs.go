package main

import (
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

func newRunsCmd(rf *runnerFlags) *cobra.Command {
	var job, status, since string
	var limit int
	c := &cobra.Command{
		Use:   "runs",
		Short: "List recorded runs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			f := runner.RunFilter{Job: job, Status: runner.Status(status), Limit: limit}
			if status != "" && !slices.Contains(runner.Statuses, f.Status) {
				return usageErr("--status must be one of %v, got %q", runner.Statuses, status)
			}
			if since != "" {
				d, err := configs.ParseDuration(since)
				if err != nil || d <= 0 {
					return usageErr("--since: want a positive duration like 7d or 12h, got %q", since)
				}
				f.Since = time.Now().Add(-d.D())
			}
			h, err := rf.openReader(cmd)
			if err != nil {
				return err
			}
			defer h.Close()
			runs, err := h.Runs(cmd.Context(), f)
			if err != nil {
				return err
			}
			if g.json {
				for _, r := range runs {
					if err := g.emit(r); err != nil {
						return err
					}
				}
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tJOB\tTRIGGER\tSTATUS\tSTARTED\tDURATION\tATTEMPTS\tERROR")
			for _, r := range runs {
				started := r.StartedAt
				if started.IsZero() {
					started = r.ScheduledAt
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s (%s)\t%s\t%d\t%s\n", r.ID, r.Job, r.Trigger, r.Status, fmtTime(started), age(now, started),
					r.Duration().Round(time.Second), r.Attempt, truncate(r.Error, 80))
			}
			return tw.Flush()
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&job, "job", "", "only runs of this job")
	c.Flags().StringVar(&status, "status", "", "only runs with this status (running, success, partial, failed, skipped, missed, cancelled)")
	c.Flags().StringVar(&since, "since", "", "only runs of the last period, e.g. 7d or 12h")
	c.Flags().IntVar(&limit, "limit", 50, "at most this many runs")
	c.AddCommand(newRunsShowCmd(rf))
	return c
}

func newRunsShowCmd(rf *runnerFlags) *cobra.Command {
	c := &cobra.Command{
		Use:   "show ID",
		Short: "Show one run: figures, findings and its log",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return usageErr("run id must be a positive number, got %q", args[0])
			}
			h, err := rf.openReader(cmd)
			if err != nil {
				return err
			}
			defer h.Close()
			ctx := cmd.Context()
			r, err := h.Get(ctx, id)
			if err != nil {
				return err
			}
			findings, err := h.Findings(ctx, id)
			if err != nil {
				return err
			}
			logs, err := h.Logs(ctx, id)
			if err != nil {
				return err
			}
			if g.json {
				return g.emit(map[string]any{"run": r, "findings": findings, "log": logs})
			}
			w := g.stdout
			fmt.Fprintf(w, "run %d: %s (%s, kind %s)\n", r.ID, r.Job, r.Trigger, r.Kind)
			fmt.Fprintf(w, "  status:     %s", r.Status)
			if r.Error != "" {
				fmt.Fprintf(w, ": %s", r.Error)
			}
			fmt.Fprintln(w)
			fmt.Fprintf(w, "  scheduled:  %s\n  started:    %s\n  finished:   %s (%s)\n  attempts:   %d\n",
				fmtTime(r.ScheduledAt), fmtTime(r.StartedAt), fmtTime(r.FinishedAt), r.Duration().Round(time.Millisecond), r.Attempt)
			s := r.Summary
			fmt.Fprintf(w, "  files:      %d\n  read:       %s\n  new:        %s\n  stored:     %s\n", s.Files, humanBytes(s.BytesRead), humanBytes(s.BytesNew), humanBytes(s.BytesStored))
			if s.SnapshotID != "" {
				fmt.Fprintf(w, "  snapshot:   %s\n", s.SnapshotID)
			}
			for k, v := range s.Extra {
				fmt.Fprintf(w, "  %-11s %v\n", k+":", v)
			}
			if len(findings) > 0 {
				fmt.Fprintf(w, "findings (%d):\n", len(findings))
				for _, f := range findings {
					fmt.Fprintf(w, "  [%s] %s: %s", f.Severity, f.Code, f.Message)
					if f.Subject != "" {
						fmt.Fprintf(w, " (%s)", f.Subject)
					}
					fmt.Fprintln(w)
				}
			}
			fmt.Fprintf(w, "log (%d lines):\n", len(logs))
			for _, l := range logs {
				fmt.Fprintf(w, "  %s %-5s %s %s\n", l.At.Local().Format("15:04:05.000"), l.Level, l.Message, l.Attrs)
			}
			return nil
		},
	}
	rf.addConfigFlag(c)
	return c
}

// openReader opens the history for reading.
func (rf *runnerFlags) openReader(cmd *cobra.Command) (runner.History, error) {
	cfg, _, err := rf.load(rf.configPath())
	if err != nil {
		return nil, err
	}
	h, err := openHistory(cmd.Context(), cfg, slog.New(slog.DiscardHandler), true)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
