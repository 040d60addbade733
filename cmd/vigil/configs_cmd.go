package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/jobs/configexport"
	"github.com/vigilops/vigil/storage/repo"
)

// newConfigsCmd is `vigil configs` and its subcommands: what the
// configexport jobs stored, their history, diffs and stored copies. Every
// text shown is redacted with the target's rules, except `show --secrets`.
func newConfigsCmd(g *globals) *cobra.Command {
	rf := &runnerFlags{g: g}
	var job string
	c := &cobra.Command{
		Use:   "configs",
		Short: "List exported configurations: each target's last export and last change",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return rf.configsList(cmd.Context(), job)
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&job, "job", "", "only targets of this configexport job")
	c.AddCommand(newConfigsHistoryCmd(rf), newConfigsDiffCmd(rf), newConfigsShowCmd(rf))
	return c
}

// exportJob is one configured configexport job.
type exportJob struct {
	name string
	job  *configexport.Job
}

// configsSession is an open repository with the config jobs of the config file.
type configsSession struct {
	jobs []exportJob
	r    *repo.Repository
	idx  *repo.MasterIndex
}

func (s *configsSession) Close() {
	if s.idx != nil {
		s.idx.Close()
	}
}

// openConfigs loads the config, its configexport jobs (only one when job
// is set) and the repository index.
func (rf *runnerFlags) openConfigs(ctx context.Context, job string) (*configsSession, error) {
	cfg, _, err := rf.load(rf.configPath())
	if err != nil {
		return nil, err
	}
	s := &configsSession{}
	for _, j := range cfg.Jobs {
		if j.Kind != configexport.Kind || (job != "" && j.Name != job) {
			continue
		}
		cj, err := configexport.Load(j)
		if err != nil {
			return nil, withCode(exitUsage, fmt.Errorf("job %s: %w", j.Name, err))
		}
		s.jobs = append(s.jobs, exportJob{name: j.Name, job: cj})
	}
	if len(s.jobs) == 0 {
		if job != "" {
			return nil, usageErr("no configexport job %q in %s", job, rf.configPath())
		}
		return nil, usageErr("%s has no configexport job", rf.configPath())
	}
	open := rf.repoOpener(cfg)
	if open == nil {
		return nil, withCode(exitNoRepo, fmt.Errorf("%s configures no repository", rf.configPath()))
	}
	h, err := open(ctx)
	if err != nil {
		return nil, err
	}
	s.r = h.(*repo.Repository)
	if s.idx, err = s.r.LoadIndex(ctx); err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	return s, nil
}

// history finds the job that exports target and opens its export history.
func (s *configsSession) history(ctx context.Context, target string) (exportJob, *configexport.History, error) {
	j, err := s.find(target)
	if err != nil {
		return j, nil, err
	}
	h, err := configexport.OpenHistory(ctx, s.r, s.idx, j.name)
	return j, h, err
}

// find returns the job that exports target (usage error if none or
// several do).
func (s *configsSession) find(target string) (exportJob, error) {
	var found []exportJob
	for _, j := range s.jobs {
		if slices.Contains(j.job.Targets(), target) {
			found = append(found, j)
		}
	}
	switch len(found) {
	case 0:
		return exportJob{}, usageErr("no configexport job has a target %q", target)
	case 1:
		return found[0], nil
	}
	names := make([]string, len(found))
	for i, j := range found {
		names[i] = j.name
	}
	return exportJob{}, usageErr("target %q is in several jobs (%s): pick one with --job", target, strings.Join(names, ", "))
}

// targetRow is one line of `vigil configs`.
type targetRow struct {
	Job        string                `json:"job"`
	Target     string                `json:"target"`
	Source     string                `json:"source"`
	Versions   int                   `json:"versions"`
	Changes    int                   `json:"changes"`
	LastExport *configexport.Version `json:"last_export,omitempty"`
	LastChange *configexport.Version `json:"last_change,omitempty"`
	// MissingFromLastRun is true when the job's last run did not export
	// this target (it failed): the last export is older.
	MissingFromLastRun bool `json:"missing_from_last_run,omitempty"`
}

func (rf *runnerFlags) configsList(ctx context.Context, job string) error {
	g := rf.g
	s, err := rf.openConfigs(ctx, job)
	if err != nil {
		return err
	}
	defer s.Close()
	var rows []targetRow
	for _, j := range s.jobs {
		hist, err := configexport.OpenHistory(ctx, s.r, s.idx, j.name)
		if err != nil {
			return err
		}
		last := hist.LastSnapshot()
		for _, t := range j.job.Targets() {
			vs, err := hist.Versions(ctx, t)
			if err != nil {
				return err
			}
			row := targetRow{Job: j.name, Target: t, Source: j.job.Source(t), Versions: len(vs)}
			for i := range vs {
				if vs[i].Changed {
					row.Changes++
					row.LastChange = &vs[i]
				}
			}
			if len(vs) > 0 {
				row.LastExport = &vs[len(vs)-1]
				row.MissingFromLastRun = last != nil && row.LastExport.Snapshot != last.ID
			}
			rows = append(rows, row)
		}
	}
	if g.json {
		for _, r := range rows {
			if err := g.emit(r); err != nil {
				return err
			}
		}
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tTARGET\tSOURCE\tLAST EXPORT\tRUN\tLAST CHANGE\tRUN\tVERSIONS")
	for _, r := range rows {
		exp, expRun, chg, chgRun := "never", "-", "-", "-"
		if v := r.LastExport; v != nil {
			exp, expRun = fmtTime(v.Time)+" ("+age(now, v.Time)+")", runText(v)
			if r.MissingFromLastRun {
				exp += " [failed since]"
			}
		}
		if v := r.LastChange; v != nil {
			chg, chgRun = fmtTime(v.Time)+" ("+age(now, v.Time)+")", runText(v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", r.Job, r.Target, r.Source, exp, expRun, chg, chgRun, r.Changes)
	}
	return tw.Flush()
}

// runText names the run that stored v, or its snapshot when the run is
// unknown (a run without history).
func runText(v *configexport.Version) string {
	if v.RunID > 0 {
		return fmt.Sprint(v.RunID)
	}
	return v.Snapshot.Short()
}

func newConfigsHistoryCmd(rf *runnerFlags) *cobra.Command {
	var job string
	var all bool
	c := &cobra.Command{
		Use:   "history TARGET",
		Short: "List a target's versions, oldest first, with lines added and removed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			ctx := cmd.Context()
			s, err := rf.openConfigs(ctx, job)
			if err != nil {
				return err
			}
			defer s.Close()
			j, hist, err := s.history(ctx, args[0])
			if err != nil {
				return err
			}
			vs, err := hist.Versions(ctx, args[0])
			if err != nil {
				return err
			}
			type entry struct {
				configexport.Version
				Added   int `json:"added"`
				Removed int `json:"removed"`
			}
			var entries []entry
			var prev string
			for i := range vs {
				v := vs[i]
				e := entry{Version: v}
				if v.Changed {
					b, err := hist.Read(ctx, &v)
					if err != nil {
						return err
					}
					cur := j.job.Redact(args[0], string(b))
					e.Added, e.Removed = configexport.Counts(configexport.DiffLines(configexport.SplitLines(prev), configexport.SplitLines(cur)))
					prev = cur
				}
				if v.Changed || all {
					entries = append(entries, e)
				}
			}
			if g.json {
				for _, e := range entries {
					if err := g.emit(e); err != nil {
						return err
					}
				}
				return nil
			}
			if len(entries) == 0 {
				fmt.Fprintf(g.stdout, "%s: no exports stored yet\n", args[0])
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tRUN\tSNAPSHOT\tSIZE\tCHANGE")
			for _, e := range entries {
				change := fmt.Sprintf("+%d −%d", e.Added, e.Removed)
				switch {
				case !e.Changed:
					change = "unchanged"
				case e.Added == 0 && e.Removed == 0:
					change = "secrets only"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", fmtTime(e.Time), runText(&e.Version), e.Snapshot.Short(), humanBytes(int64(e.Size)), change)
			}
			return tw.Flush()
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&job, "job", "", "the configexport job (when several export TARGET)")
	c.Flags().BoolVar(&all, "all", false, "list unchanged exports too")
	return c
}
