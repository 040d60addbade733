package configs

import (
	"errors"
	"io/fs"
	"testing"
)

// FuzzLoad feeds arbitrary bytes to the loader: it must never panic, and
// whenever it fails it must say why with an Errors value.
func FuzzLoad(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("jobs:\n  - name: j\n    kind: command\n    schedule: \"CRON_TZ=UTC\"\n"))
	f.Add([]byte("a: &a [x, x]\nb: &b [*a, *a]\njobs: [*b, *b]\n"))
	f.Add([]byte("jobs:\n  - <<: [*x]\n"))
	f.Add([]byte("repository: {password_file: ${X:-/p}, chunking: {min_size: 9999999999TiB}}\n"))
	f.Add([]byte("defaults: {timeout: 99999999999999999999h, retention: {keep_last: 1e9}}\n"))
	opts := Options{
		Kinds:     fakeKinds{},
		LookupEnv: func(k string) (string, bool) { return "v", k == "SET" },
		ReadFile: func(name string) ([]byte, error) {
			if name == "/ok" {
				return []byte("pw"), nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data, opts)
		if c == nil {
			t.Fatal("Parse returned a nil config")
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
			}
			for _, e := range es {
				if e.Msg == "" {
					t.Fatalf("empty message in %v", e)
				}
			}
		}
	})
}
