package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/jobs/configexport"
)

// versionAt resolves a run reference (run ID, snapshot ID prefix or
// "latest") to target's version there; "" means the latest version.
func versionAt(ctx context.Context, hist *configexport.History, target, ref string) (*configexport.Version, error) {
	if ref == "" {
		v, err := hist.Latest(ctx, target)
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, fmt.Errorf("%s: no exports stored yet", target)
		}
		return v, nil
	}
	sn, err := hist.Find(ref)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	v, err := hist.At(ctx, sn, target)
	if errors.Is(err, configexport.ErrNoVersion) {
		return nil, fmt.Errorf("%s was not exported by run %s (it failed then): %w", target, ref, err)
	}
	return v, err
}

// previousChange is the newest version before to whose content differs.
func previousChange(ctx context.Context, hist *configexport.History, target string, to *configexport.Version) (*configexport.Version, error) {
	vs, err := hist.Versions(ctx, target)
	if err != nil {
		return nil, err
	}
	// Versions are oldest first; find to, then the change that made it.
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].Snapshot != to.Snapshot {
			continue
		}
		for k := i; k >= 0; k-- {
			if vs[k].Changed {
				if k == 0 {
					return nil, nil
				}
				return &vs[k-1], nil
			}
		}
	}
	return nil, nil
}

func newConfigsDiffCmd(rf *runnerFlags) *cobra.Command {
	var job, from, to string
	c := &cobra.Command{
		Use:   "diff TARGET",
		Short: "Show what changed in a target's config (redacted unified diff)",
		Long: "Show what changed between two exports of TARGET. RUN is a run ID, a snapshot ID prefix or latest.\n" +
			"Without --to the latest export is used; without --from the version before the last change up to --to.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			ctx := cmd.Context()
			target := args[0]
			s, err := rf.openConfigs(ctx, job)
			if err != nil {
				return err
			}
			defer s.Close()
			j, hist, err := s.history(ctx, target)
			if err != nil {
				return err
			}
			toV, err := versionAt(ctx, hist, target, to)
			if err != nil {
				return err
			}
			var fromV *configexport.Version
			if from != "" {
				fromV, err = versionAt(ctx, hist, target, from)
			} else {
				fromV, err = previousChange(ctx, hist, target, toV)
			}
			if err != nil {
				return err
			}
			var before string
			fromName := target + " (nothing)"
			if fromV != nil {
				b, err := hist.Read(ctx, fromV)
				if err != nil {
					return err
				}
				before = j.job.Redact(target, string(b))
				fromName = fmt.Sprintf("%s run %s %s", target, runText(fromV), fromV.Time.UTC().Format("2006-01-02T15:04:05Z"))
			}
			b, err := hist.Read(ctx, toV)
			if err != nil {
				return err
			}
			after := j.job.Redact(target, string(b))
			toName := fmt.Sprintf("%s run %s %s", target, runText(toV), toV.Time.UTC().Format("2006-01-02T15:04:05Z"))
			edits := configexport.DiffLines(configexport.SplitLines(before), configexport.SplitLines(after))
			added, removed := configexport.Counts(edits)
			diff := configexport.Unified(fromName, toName, edits, 3)
			if g.json {
				return g.emit(map[string]any{"target": target, "job": j.name, "from": fromV, "to": toV, "added": added, "removed": removed, "diff": diff})
			}
			if diff == "" {
				fmt.Fprintf(g.stdout, "%s: no shown changes between %s and %s\n", target, fromName, toName)
				return nil
			}
			fmt.Fprint(g.stdout, diff)
			return nil
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&job, "job", "", "the configexport job (when several export TARGET)")
	c.Flags().StringVar(&from, "from", "", "older RUN (default: before the last change)")
	c.Flags().StringVar(&to, "to", "", "newer RUN (default: latest)")
	return c
}

func newConfigsShowCmd(rf *runnerFlags) *cobra.Command {
	var job, at string
	var secrets bool
	c := &cobra.Command{
		Use:   "show TARGET",
		Short: "Print a stored config (redacted unless --secrets), e.g. to paste back by hand",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			ctx := cmd.Context()
			target := args[0]
			s, err := rf.openConfigs(ctx, job)
			if err != nil {
				return err
			}
			defer s.Close()
			j, hist, err := s.history(ctx, target)
			if err != nil {
				return err
			}
			v, err := versionAt(ctx, hist, target, at)
			if err != nil {
				return err
			}
			b, err := hist.Read(ctx, v)
			if err != nil {
				return err
			}
			text := string(b)
			if !secrets {
				text = j.job.Redact(target, text)
			}
			if g.json {
				return g.emit(map[string]any{"target": target, "job": j.name, "version": v, "redacted": !secrets, "content": text})
			}
			fmt.Fprint(g.stdout, text)
			return nil
		},
	}
	rf.addConfigFlag(c)
	c.Flags().StringVar(&job, "job", "", "the configexport job (when several export TARGET)")
	c.Flags().StringVar(&at, "at", "", "RUN to show: a run ID, a snapshot ID prefix or latest (default: latest)")
	c.Flags().BoolVar(&secrets, "secrets", false, "print the stored copy as it is, secrets included")
	return c
}
