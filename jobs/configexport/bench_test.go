package configexport

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vigilops/vigil/runner"
)

// BenchmarkSSH200Targets exports 200 ProCurve-like targets (shell mode,
// pager on, ~1,500-line configs) from the in-process ssh server with a
// concurrency of 16, as the nightly run of a large site would. It reports
// the process's peak RSS (VmHWM) beside the time.
func BenchmarkSSH200Targets(b *testing.B) {
	d := procurve()
	d.ignoreNoPg = true
	d.pageLines = 60
	var cfg strings.Builder
	cfg.WriteString(procurveConfig)
	for i := 0; i < 300; i++ {
		fmt.Fprintf(&cfg, "interface A%d\n   name \"port %d\"\n   speed-duplex auto\n   exit\n", i, i)
	}
	d.config = cfg.String()
	f := startFakeSSH(b, d, nil)
	var with strings.Builder
	with.WriteString("concurrency: 16\ntargets:\n")
	for i := 0; i < 200; i++ {
		fmt.Fprintf(&with, "  - name: sw-%03d\n    ssh: {host: 127.0.0.1, port: %d, user: backup, password: %s, host_key_fingerprint: %q, profile: aruba-os-switch}\n",
			i, f.port(), f.password, f.fingerprint())
	}
	j := build(b, with.String())
	h := &harness{t: b, r: newRepoB(b), hist: runner.NewMemHistory()}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := h.run(j)
		if o.run.Status != runner.StatusSuccess {
			b.Fatalf("run: %+v %+v", o.run, o.findings)
		}
	}
	b.StopTimer()
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
