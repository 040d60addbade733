package configexport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
)

// BenchmarkSSHD200Targets is the benchmark against a real sshd:
// 200 ProCurve targets (shell mode, a pty each, the pager left on, ~1,500
// lines of configuration) with a concurrency of 16, into a local
// repository. One op is one nightly run. It reports the test process's
// peak RSS (VmHWM: client and repository; sshd and the emulators are
// other processes) and its CPU time per run.
func BenchmarkSSHD200Targets(b *testing.B) {
	var cfg strings.Builder
	_, base := deviceConfig(b, "procurve-running-config.txt")
	cfg.WriteString(base)
	for i := 0; i < 350; i++ {
		fmt.Fprintf(&cfg, "interface A%d\n   name \"port %d\"\n   speed-duplex auto\n   exit\n", i, i)
	}
	path := filepath.Join(b.TempDir(), "big.cfg")
	writeFileTB(b, path, cfg.String())
	s := startSSHD(b, map[string][]string{"procurve": {"-device", "procurve", "-config", path, "-page", "60", "-ignore-no-page"}}, "INFO")
	var with strings.Builder
	with.WriteString("concurrency: 16\ntargets:\n")
	for i := 0; i < 200; i++ {
		with.WriteString(s.target(fmt.Sprintf("sw-%03d", i), "procurve", "aruba-os-switch", "60s", ""))
	}
	j := build(b, with.String())
	h := &harness{t: b, r: newRepoB(b), hist: runner.NewMemHistory()}
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := h.run(j)
		if o.run.Status != runner.StatusSuccess {
			b.Fatalf("run: %+v %+v", o.run, o.findings)
		}
	}
	b.StopTimer()
	b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "client-CPU-s/op")
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				var kb float64
				fmt.Sscan(strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")), &kb)
				b.ReportMetric(kb/1024, "peak-RSS-MiB")
			}
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
