package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// newBenchCmd measures vigil on the given files: each is backed up in order
// into a fresh local repository (like nights of a job), then the last
// snapshot is restored and the repository checked with --read-data.
func newBenchCmd(g *globals) *cobra.Command {
	var dir, chunking string
	c := &cobra.Command{
		Use:   "bench FILE_OR_DIR...",
		Short: "Measure backup, restore and check throughput on your own data",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if dir == "" {
				d, err := os.MkdirTemp("", "vigil-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(d)
				dir = d
			}
			st, err := local.Open(filepath.Join(dir, "repo"), true)
			if err != nil {
				return err
			}
			o := g.repoOptions()
			o.CacheDir = filepath.Join(dir, "cache")
			r, err := repo.Init(ctx, st, "bench", repo.InitOptions{}, o)
			if err != nil {
				return err
			}
			report := func(step string, bytes int64, d time.Duration, extra string) {
				var ru syscall.Rusage
				_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				mbps := float64(bytes) / 1e6 / d.Seconds()
				if g.json {
					_ = g.emit(map[string]any{"step": step, "bytes": bytes, "seconds": d.Seconds(), "mb_per_s": mbps, "max_rss_kib": ru.Maxrss, "note": extra})
					return
				}
				fmt.Fprintf(g.stdout, "%-28s %10s %8.2fs %8.0f MB/s  maxrss %6d MiB  %s\n", step, humanBytes(bytes), d.Seconds(), mbps, ru.Maxrss/1024, extra)
			}
			var last *repo.Snapshot
			for _, a := range args {
				t0 := time.Now()
				res, err := r.Backup(ctx, repo.BackupOptions{Paths: []string{a}, Chunking: chunking, Parent: "none"})
				if err != nil {
					return err
				}
				s := res.Snapshot.Summary
				report("backup "+filepath.Base(a), s.BytesRead, time.Since(t0), fmt.Sprintf("new %s stored %s", humanBytes(s.BytesNew), humanBytes(s.BytesStored)))
				last = res.Snapshot
			}
			t0 := time.Now()
			rres, err := r.Restore(ctx, last, repo.RestoreOptions{Target: filepath.Join(dir, "restore")})
			if err != nil {
				return err
			}
			report("restore", rres.Bytes, time.Since(t0), "")
			t0 = time.Now()
			chk, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil {
				return err
			}
			report("check --read-data", chk.BytesRead, time.Since(t0), fmt.Sprintf("ok=%v", chk.OK()))
			stats, err := r.Stats(ctx)
			if err != nil {
				return err
			}
			report("repository", stats.PackBytes, time.Since(t0)*0+time.Nanosecond, fmt.Sprintf("%d packs", stats.Packs))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "working directory (default: temporary, removed afterwards)")
	c.Flags().StringVar(&chunking, "chunking", "auto", "chunking profile")
	return c
}
