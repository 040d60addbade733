package jobs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vigilops/vigil/configs"
)

// TestExampleConfigs loads every example config with the real registry:
// the examples are what admins copy, so they must stay valid, and
// library.yaml must show every kind this build has.
func TestExampleConfigs(t *testing.T) {
	files, err := filepath.Glob("../configs/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	reg := Default()
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := configs.Load(f, configs.Options{
				Kinds: reg,
				// Secrets live on the admin's machine, not in the test.
				ReadFile: func(p string) ([]byte, error) {
					if filepath.Dir(p) == "/etc/vigil" {
						return []byte("example-secret\n"), nil
					}
					return os.ReadFile(p)
				},
				LookupEnv: func(string) (string, bool) { return "example", true },
			})
			if err != nil {
				var es configs.Errors
				if errors.As(err, &es) {
					for _, e := range es {
						t.Error(e)
					}
					return
				}
				t.Fatal(err)
			}
			specs, err := reg.Build(cfg)
			if err != nil {
				t.Fatal(err)
			}
			from := time.Date(2026, 3, 7, 12, 0, 0, 0, time.UTC)
			for _, s := range specs {
				if s.Schedule != nil && s.Schedule.Next(from).IsZero() {
					t.Errorf("job %s: schedule %s never runs", s.Name, s.Schedule)
				}
			}
			if filepath.Base(f) != "library.yaml" {
				return
			}
			used := map[string]bool{}
			for _, j := range cfg.Jobs {
				used[j.Kind] = true
			}
			for _, k := range reg.Kinds() {
				if !used[k] {
					t.Errorf("library.yaml uses no job of kind %q: the example must show every kind (add one, commented if it needs hardware)", k)
				}
			}
			for k := range used {
				if !slices.Contains(reg.Kinds(), k) {
					t.Errorf("library.yaml uses kind %q that the registry does not know", k)
				}
			}
		})
	}
}
