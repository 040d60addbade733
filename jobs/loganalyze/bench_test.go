package loganalyze

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// writeSyslog writes size bytes of syslog with the mix a busy host has:
// mostly routine lines, some sshd failures, sudo, kernel and systemd.
func writeSyslog(tb testing.TB, path string, size int64) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	var n int64
	for sec := 0; n < size; sec++ {
		ts := fmt.Sprintf("Mar %2d %02d:%02d:%02d", 1+sec/86400%28, sec/3600%24, sec/60%60, sec%60)
		for range 4 {
			var line string
			switch k := rng.IntN(100); {
			case k < 5:
				line = fmt.Sprintf("%s host-%d sshd[%d]: Failed password for root from 203.0.113.%d port %d ssh2\n", ts, rng.IntN(9), rng.IntN(60000), rng.IntN(250), rng.IntN(65000))
			case k < 7:
				line = fmt.Sprintf("%s host-%d sshd[%d]: Invalid user admin%d from 198.51.100.%d port %d\n", ts, rng.IntN(9), rng.IntN(60000), rng.IntN(50), rng.IntN(250), rng.IntN(65000))
			case k < 8:
				line = fmt.Sprintf("%s host-%d sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/usr/bin/systemctl restart app\n", ts, rng.IntN(9))
			case k < 9:
				line = fmt.Sprintf("%s host-%d systemd[1]: app%d.service: Scheduled restart job, restart counter is at %d.\n", ts, rng.IntN(9), rng.IntN(5), rng.IntN(9))
			case k < 10:
				line = fmt.Sprintf("%s host-%d kernel: [%d.%06d] e1000e 0000:00:1f.6 eno1: NIC Link is Up 1000 Mbps Full Duplex\n", ts, rng.IntN(9), sec, rng.IntN(999999))
			default:
				line = fmt.Sprintf("%s host-%d app[%d]: request id=%08x handled in %dms status=ok user=u%d path=/api/v1/items/%d\n", ts, rng.IntN(9), rng.IntN(60000), rng.Uint32(), rng.IntN(900), rng.IntN(1000), rng.IntN(100000))
			}
			w.WriteString(line)
			n += int64(len(line))
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	f.Close()
}

func benchAnalyze(b *testing.B, with string) {
	w, err := configs.ParseWith(with)
	if err != nil {
		b.Fatal(err)
	}
	j, err := New(configs.Job{Name: "bench", Kind: "loganalyze", With: w})
	if err != nil {
		b.Fatal(err)
	}
	var bytes, lines int64
	b.ResetTimer()
	for range b.N {
		r, _ := runner.New([]runner.Spec{{Name: "bench", Job: j}}, runner.Options{History: runner.NewMemHistory()})
		run, err := r.RunNow(context.Background(), "bench", runner.TriggerManual)
		if err != nil || run.Status != runner.StatusSuccess {
			b.Fatalf("%+v %v", run, err)
		}
		bytes, lines = run.Summary.BytesRead, run.Summary.Extra["lines"].(int64)
	}
	b.SetBytes(bytes)
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkAnalyzeSyslog: all built-in rules over 64 MiB of syslog.
func BenchmarkAnalyzeSyslog(b *testing.B) {
	path := filepath.Join(b.TempDir(), "syslog")
	writeSyslog(b, path, 64<<20)
	benchAnalyze(b, fmt.Sprintf(`{since: 0, inputs: [{paths: [%s]}]}`, path))
}

// BenchmarkAnalyzeCorpus reads the shared corpus generator's logs:
//
//	go run ../shared/bench/gen -out DIR -seed 1 -logs-mb 200 -only d
//	VIGIL_BENCH_LOGS=DIR/logs-day1 go test -bench AnalyzeCorpus ./jobs/loganalyze
//
// Without VIGIL_BENCH_LOGS it runs on a generated 16 MiB tree of the same shape.
func BenchmarkAnalyzeCorpus(b *testing.B) {
	dir := os.Getenv("VIGIL_BENCH_LOGS")
	if dir == "" {
		dir = b.TempDir()
		os.MkdirAll(filepath.Join(dir, "var/log/app"), 0o755)
		writeSyslog(b, filepath.Join(dir, "var/log/app/app.log"), 16<<20)
	}
	// The generator gives each service syslog or combined lines at random.
	benchAnalyze(b, fmt.Sprintf(`{since: 0, inputs: [{paths: ["%[1]s/var/log/*/*.log*", "%[1]s/var/log/*.log*"], format: auto}]}`, dir))
}
