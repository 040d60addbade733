package check

import (
	"context"
	"crypto/rand"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/jobtest"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// filled returns a repository with a few snapshots spread over several packs.
func filled(t *testing.T) (*repo.Repository, string, []*repo.Snapshot) {
	t.Helper()
	r, dir := jobtest.NewRepo(t)
	src := t.TempDir()
	for i := 0; i < 4; i++ {
		data := make([]byte, 300<<10)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Backup(context.Background(), repo.BackupOptions{Paths: []string{src}, Job: "shares", Parent: "none"}); err != nil {
			t.Fatal(err)
		}
	}
	sns, err := r.Snapshots(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, dir, sns
}

func packFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(dir, "data"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil || len(out) < 4 {
		t.Fatalf("packs: %d, %v", len(out), err)
	}
	return out
}

func build(t *testing.T, with string) runner.Job {
	t.Helper()
	j, err := New(jobtest.Job(t, "verify", "check", with, configs.Retention{}))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestHealthyRepository(t *testing.T) {
	r, dir, _ := filled(t)
	packs := len(packFiles(t, dir))
	res := jobtest.Run(t, "verify", "check", build(t, ""), r)
	if res.Run.Status != runner.StatusSuccess || len(res.Findings) != 0 {
		t.Fatalf("status %s %s, findings %+v", res.Run.Status, res.Run.Error, res.Findings)
	}
	if x := res.Run.Summary.Extra; x["snapshots"] != 4 || x["packs"] != packs || x["packs_read"] != 0 {
		t.Errorf("structure check summary = %v (packs on disk %d)", x, packs)
	}
	// The N/M groups of two runs cover every pack exactly once.
	read := 0
	for _, sub := range []string{"1/2", "2/2"} {
		res := jobtest.Run(t, "verify", "check", build(t, "read_data_subset: "+sub+"\n"), r)
		if res.Run.Status != runner.StatusSuccess {
			t.Fatalf("subset %s: %s %s", sub, res.Run.Status, res.Run.Error)
		}
		read += res.Run.Summary.Extra["packs_read"].(int)
	}
	if read != packs {
		t.Errorf("subsets 1/2 + 2/2 read %d packs, want %d", read, packs)
	}
	res = jobtest.Run(t, "verify", "check", build(t, "read_data_subset: 100%\n"), r)
	if res.Run.Summary.Extra["packs_read"] != packs || res.Run.Summary.BytesRead <= 0 {
		t.Errorf("100%% read %v packs, %d bytes", res.Run.Summary.Extra["packs_read"], res.Run.Summary.BytesRead)
	}
}

func TestDamagedPackIsAnErrorFinding(t *testing.T) {
	r, dir, _ := filled(t)
	pack := packFiles(t, dir)[0]
	b, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0xff
	if err := os.WriteFile(pack, b, 0o600); err != nil {
		t.Fatal(err)
	}
	res := jobtest.Run(t, "verify", "check", build(t, "read_data: true\n"), r)
	if res.Run.Status != runner.StatusFailed || !strings.Contains(res.Run.Error, "error(s)") {
		t.Fatalf("status %s %q: want failed", res.Run.Status, res.Run.Error)
	}
	codes := map[string]string{}
	for _, f := range res.Findings {
		if f.Severity != runner.SeverityError {
			t.Errorf("finding %+v is not an error", f)
		}
		codes[f.Code] = f.Subject
	}
	if codes["check.pack_damaged"] != filepath.Base(pack) {
		t.Errorf("findings %+v do not name pack %s", res.Findings, filepath.Base(pack))
	}
	if _, ok := codes["check.snapshot_affected"]; !ok {
		t.Errorf("findings %+v name no affected snapshot", res.Findings)
	}
}

func TestDamagedSnapshotAndMissingPack(t *testing.T) {
	r, dir, sns := filled(t)
	id := sns[0].ID.String()
	if err := os.WriteFile(filepath.Join(dir, "snapshots", id), []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	res := jobtest.Run(t, "verify", "check", build(t, ""), r)
	if res.Run.Status != runner.StatusFailed {
		t.Fatalf("status %s, want failed", res.Run.Status)
	}
	if len(res.Findings) != 1 || res.Findings[0].Code != "check.snapshot_damaged" || res.Findings[0].Subject != id {
		t.Errorf("findings = %+v, want check.snapshot_damaged for %s", res.Findings, id)
	}

	// A pack deleted from storage is found by the structure check alone.
	r2, dir2, _ := filled(t)
	if err := os.Remove(packFiles(t, dir2)[1]); err != nil {
		t.Fatal(err)
	}
	res = jobtest.Run(t, "verify", "check", build(t, ""), r2)
	if res.Run.Status != runner.StatusFailed || len(res.Findings) == 0 || !strings.Contains(res.Messages(), "missing from storage") {
		t.Fatalf("status %s, findings %+v\n%s", res.Run.Status, res.Findings, res.Messages())
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ with, want string }{
		{"read_data_subset: 0/7\n", `with.read_data_subset: want N/M with 1 <= N <= M (e.g. 1/7) or P% with 0 < P <= 100 (e.g. 10%), got "0/7"`},
		{"read_data_subset: 8/7\n", `got "8/7"`},
		{"read_data_subset: 150%\n", `got "150%"`},
		{"read_data_subset: weekly\n", `got "weekly"`},
		{"read_data: true\nread_data_subset: 1/7\n", "with.read_data_subset: set either read_data (everything) or read_data_subset, not both"},
		{"lock_wait: -1h\n", "with.lock_wait: must not be negative"},
	} {
		_, err := New(jobtest.Job(t, "c", "check", tc.with, configs.Retention{}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %q: error %v, want %q", tc.with, err, tc.want)
		}
	}
	for _, ok := range []string{"read_data_subset: 1/7\n", "read_data_subset: 7/7\n", "read_data_subset: 2.5%\n", "read_data: true\n"} {
		if _, err := New(jobtest.Job(t, "c", "check", ok, configs.Retention{})); err != nil {
			t.Errorf("with %q: %v", ok, err)
		}
	}
}
