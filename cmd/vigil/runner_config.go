package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/configs"
)

func newConfigCmd(rf *runnerFlags) *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Work with the config file"}
	c.AddCommand(&cobra.Command{
		Use:   "check [FILE]",
		Short: "Validate a config; print every problem (exit 2) or each job's next three runs",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g := rf.g
			path := rf.configPath()
			if len(args) == 1 {
				path = args[0]
			}
			cfg, reg, err := rf.load(path)
			var es configs.Errors
			if errors.As(err, &es) {
				if g.json {
					list := make([]map[string]any, len(es))
					for i, e := range es {
						list[i] = map[string]any{"file": e.File, "line": e.Line, "path": e.Path, "message": e.Msg}
					}
					if err := g.emit(map[string]any{"valid": false, "errors": list}); err != nil {
						return err
					}
				} else {
					for _, e := range es {
						fmt.Fprintln(g.stdout, e)
					}
				}
				return withCode(exitUsage, fmt.Errorf("%s: %d problem(s)", path, len(es)))
			}
			if err != nil {
				return err
			}
			specs, err := reg.Build(cfg)
			if err != nil {
				return withCode(exitUsage, err)
			}
			now := time.Now()
			if g.json {
				list := make([]map[string]any, 0, len(specs))
				for _, s := range specs {
					list = append(list, map[string]any{"job": s.Name, "kind": s.Kind, "schedule": scheduleText(s), "disabled": s.Disabled, "next_runs": nextRuns(s.Schedule, now, 3)})
				}
				return g.emit(map[string]any{"valid": true, "file": path, "jobs": list})
			}
			fmt.Fprintf(g.stdout, "%s: ok, %d job(s)\n", path, len(specs))
			for _, s := range specs {
				fmt.Fprintf(g.stdout, "  %s (%s) %s\n", s.Name, s.Kind, scheduleText(s))
				if next := nextRuns(s.Schedule, now, 3); len(next) > 0 && !s.Disabled {
					fmt.Fprintf(g.stdout, "    next: %s\n", joinTimes(next))
				}
			}
			return nil
		},
	})
	return c
}
