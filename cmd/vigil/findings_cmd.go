package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// newFindingsCmd lists findings across jobs and runs (issue 6).
func newFindingsCmd(rf *runnerFlags) *cobra.Command {
	var since, severity, job, code string
	var limit int
	c := &cobra.Command{
		Use:   "findings",
		Short: "List findings across jobs, newest run first",
		Long: "List what runs noticed (failed logins, disk errors, unreadable files...), newest run first.\n" +
			"--severity is a minimum: warn shows warnings, errors and critical findings.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			f := runner.FindingFilter{Job: job, Code: code, Limit: limit}
			if since != "" {
				d, err := configs.ParseDuration(since)
				if err != nil || d <= 0 {
					return usageErr("--since: want a positive duration like 24h or 7d, got %q", since)
				}
				f.Since = time.Now().Add(-d.D())
			}
			if severity != "" {
				s, err := runner.ParseSeverity(severity)
				if err != nil {
					return usageErr("--severity: %v", err)
				}
				f.MinSeverity = s
			}
			h, err := rf.openReader(cmd)
			if err != nil {
				return err
			}
			defer h.Close()
			fl, ok := h.(runner.FindingLister)
			if !ok {
				return fmt.Errorf("findings: the history %T cannot list findings", h)
			}
			list, err := fl.ListFindings(cmd.Context(), f)
			if err != nil {
				return err
			}
			if g.json {
				for _, rec := range list {
					if err := g.emit(rec); err != nil {
						return err
					}
				}
				return nil
			}
			if len(list) == 0 {
				fmt.Fprintln(g.stdout, "no findings")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tJOB\tWHEN\tSEVERITY\tCODE\tSUBJECT\tCOUNT\tMESSAGE")
			for _, r := range list {
				count := "-"
				if r.Count > 0 {
					count = fmt.Sprint(r.Count)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.RunID, r.Job, age(now, r.At), r.Severity, r.Code,
					truncate(r.Subject, 40), count, truncate(strings.ReplaceAll(r.Message, "\n", " "), 100))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if limit > 0 && len(list) == limit {
				fmt.Fprintf(g.stdout, "(first %d; raise --limit for more)\n", limit)
			}
			return nil
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&since, "since", "24h", "only findings of runs in this period, e.g. 24h or 7d")
	c.Flags().StringVar(&severity, "severity", "", "minimum severity: info, warn, error or critical")
	c.Flags().StringVar(&job, "job", "", "only findings of this job")
	c.Flags().StringVar(&code, "code", "", "only this code, or a prefix ending in a dot (ssh.)")
	c.Flags().IntVar(&limit, "limit", 200, "at most this many findings")
	return c
}
