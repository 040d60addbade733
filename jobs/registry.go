// Package jobs is the explicit registry of job kinds: a kind name maps to
// a constructor. Nothing registers itself in init(); Default lists every
// kind this build knows, and tests build registries with only what they need.
package jobs

import (
	"fmt"
	"sort"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/check"
	"github.com/vigilops/vigil/jobs/command"
	"github.com/vigilops/vigil/jobs/configexport"
	"github.com/vigilops/vigil/jobs/filebackup"
	"github.com/vigilops/vigil/jobs/loganalyze"
	"github.com/vigilops/vigil/jobs/logrotate"
	"github.com/vigilops/vigil/jobs/prune"
	"github.com/vigilops/vigil/jobs/vmbackup"
	"github.com/vigilops/vigil/runner"
)

// Kind describes one job kind.
type Kind struct {
	Name string
	// DefaultSchedule applies when a job of this kind sets none ("" means
	// the job only runs when asked).
	DefaultSchedule string
	// NeedsRepository is true for kinds that store into the repository.
	NeedsRepository bool
	// New builds a job from its config. It must not do I/O: `vigil config
	// check` calls it to validate the with: section. Errors should be
	// configs.Errors or *configs.FieldError (see configs.With).
	New func(job configs.Job) (runner.Job, error)
}

// Registry maps kind names to kinds. It implements configs.KindChecker.
type Registry struct {
	kinds map[string]Kind
}

var _ configs.KindChecker = (*Registry)(nil)

// NewRegistry returns a registry of the given kinds.
func NewRegistry(kinds ...Kind) *Registry {
	r := &Registry{kinds: map[string]Kind{}}
	for _, k := range kinds {
		r.kinds[k.Name] = k
	}
	return r
}

// Default returns every kind of this build.
func Default() *Registry {
	return NewRegistry(
		Kind{Name: "command", New: command.New},
		Kind{Name: "logrotate", DefaultSchedule: "0 0 * * *", New: logrotate.New},
		Kind{Name: "loganalyze", DefaultSchedule: "30 6 * * *", New: loganalyze.New},
		Kind{Name: configexport.Kind, NeedsRepository: true, New: configexport.New},
		// files has no default schedule: when a backup runs is the admin's
		// call, and `vigil config check` shows a job without one as manual.
		Kind{Name: "files", NeedsRepository: true, New: filebackup.New},
		Kind{Name: "prune", NeedsRepository: true, DefaultSchedule: prune.DefaultSchedule, New: prune.New},
		Kind{Name: "check", NeedsRepository: true, DefaultSchedule: check.DefaultSchedule, New: check.New},
		Kind{Name: "vmbackup", NeedsRepository: true, New: vmbackup.New},
	)
}

// Kinds implements configs.KindChecker.
func (r *Registry) Kinds() []string {
	out := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// NeedsRepository implements configs.KindChecker.
func (r *Registry) NeedsRepository(kind string) bool { return r.kinds[kind].NeedsRepository }

// CheckJob implements configs.KindChecker.
func (r *Registry) CheckJob(job configs.Job) error {
	k, ok := r.kinds[job.Kind]
	if !ok {
		return fmt.Errorf("unknown kind %q", job.Kind)
	}
	_, err := k.New(job)
	return err
}

// Build turns a validated config into runner specs.
func (r *Registry) Build(cfg *configs.Config) ([]runner.Spec, error) {
	loc, err := cfg.Location()
	if err != nil {
		return nil, fmt.Errorf("build jobs: %w", err)
	}
	specs := make([]runner.Spec, 0, len(cfg.Jobs))
	for _, j := range cfg.Jobs {
		k, ok := r.kinds[j.Kind]
		if !ok {
			return nil, fmt.Errorf("build job %s: unknown kind %q", j.Name, j.Kind)
		}
		job, err := k.New(j)
		if err != nil {
			return nil, fmt.Errorf("build job %s: %w", j.Name, err)
		}
		spec := runner.Spec{
			Name: j.Name, Kind: j.Kind, Disabled: !j.Enabled, Job: job,
			Timeout: j.Timeout.D(), Retries: j.Retries, RetryBackoff: j.RetryBackoff.D(),
			ConcurrencyGroup: j.ConcurrencyGroup, CatchUp: runner.CatchUp(j.CatchUp), MaxLateness: j.MaxLateness.D(),
		}
		expr := j.Schedule
		if expr == "" {
			expr = k.DefaultSchedule
		}
		if expr != "" {
			if spec.Schedule, err = runner.ParseSchedule(expr, loc); err != nil {
				return nil, fmt.Errorf("build job %s: %w", j.Name, err)
			}
		}
		specs = append(specs, spec)
	}
	return specs, nil
}
