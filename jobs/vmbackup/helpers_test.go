package vmbackup

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/jobs/vmbackup/vmsim"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// fakeRC is a RunContext that records what the job reports.
type fakeRC struct {
	r        *repo.Repository
	log      *slog.Logger
	logBuf   *syncBuf
	mu       sync.Mutex
	findings []runner.Finding
	summary  runner.Summary
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newRC(t *testing.T, r *repo.Repository) *fakeRC {
	buf := &syncBuf{}
	h := slog.NewTextHandler(io.MultiWriter(buf, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug})
	return &fakeRC{r: r, log: slog.New(h), logBuf: buf}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

func (f *fakeRC) RunID() int64                { return 7 }
func (f *fakeRC) JobName() string             { return "vms" }
func (f *fakeRC) Attempt() int                { return 1 }
func (f *fakeRC) Log() *slog.Logger           { return f.log }
func (f *fakeRC) Progress(runner.Progress)    {}
func (f *fakeRC) SetSummary(s runner.Summary) { f.mu.Lock(); f.summary = s; f.mu.Unlock() }
func (f *fakeRC) AddFinding(x runner.Finding) {
	f.mu.Lock()
	f.findings = append(f.findings, x)
	f.mu.Unlock()
}
func (f *fakeRC) Repository(context.Context) (any, error) {
	if f.r == nil {
		return nil, runner.ErrNoRepository
	}
	return f.r, nil
}

func (f *fakeRC) finding(code string) *runner.Finding {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.findings {
		if f.findings[i].Code == code {
			return &f.findings[i]
		}
	}
	return nil
}

var testKDF = repo.KDFParams{N: 1 << 10, R: 8, P: 1}

func newRepo(t *testing.T) *repo.Repository {
	t.Helper()
	st, err := local.Open(filepath.Join(t.TempDir(), "repo"), true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), st, "secret", repo.InitOptions{PackSize: 4 << 20}, repo.Options{KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startSim(t *testing.T) *vmsim.Sim {
	t.Helper()
	s, err := vmsim.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// params builds job parameters for the simulator from YAML lines.
func params(t *testing.T, s *vmsim.Sim, extra string) Params {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(s.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf("url: %s\nuser: %s\npassword_file: %s\ninsecure: true\n%s", s.URL, s.User, pw, extra)
	w, err := configs.ParseWith(src)
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseParams(w)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// diskData is a mix of zero runs, random and repeated data.
func diskData(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, size)
	for off := 0; off < size; off += 1 << 20 {
		end := min(off+1<<20, size)
		switch rng.IntN(3) {
		case 0: // zeros
		case 1:
			copy(b[off:end], bytes.Repeat([]byte("library catalogue record "), (end-off)/25+1))
		default:
			for i := off; i < end; i++ {
				b[i] = byte(rng.Uint32())
			}
		}
	}
	return b
}

// countingReader counts bytes read through the job's disk reader and can
// fail after a number of bytes.
type countingReader struct {
	DiskReader
	n      *atomic.Int64
	failAt int64 // 0: never
}

func (c countingReader) ReadAt(p []byte, off int64) (int, error) {
	if c.failAt > 0 && c.n.Load()+int64(len(p)) > c.failAt {
		return 0, fmt.Errorf("injected read failure at offset %d", off)
	}
	n, err := c.DiskReader.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// snapshotsOf lists the names of a VM's snapshots.
func snapshotsOf(t *testing.T, s *vmsim.Sim, vm *object.VirtualMachine) []string {
	t.Helper()
	tree, err := snapshotTree(context.Background(), &Session{Client: s.Client().Client}, vm.Reference())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	walkSnapshots(tree, func(x types.VirtualMachineSnapshotTree) { names = append(names, x.Name) })
	return names
}

// manifestOf loads the newest manifest of a VM from the repository.
func manifestOf(t *testing.T, r *repo.Repository, name string) (*repo.Snapshot, *Manifest) {
	t.Helper()
	ctx := context.Background()
	b, err := FindVM(ctx, r, "latest", name)
	if err != nil {
		t.Fatal(err)
	}
	return b.Snapshot, b.Manifest
}

func configsSecret(s string) configs.Secret { return configs.NewSecret(s) }
