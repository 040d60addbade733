package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// newDemoCmd runs vigil end to end on an embedded default: generated sample
// data (a disk-image-like file, logs, configs) into a local repository,
// twice (the second night changes a little), then check and restore.
func newDemoCmd(g *globals) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Run a backup, a second night, a check and a restore on generated data in a local repository",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if dir == "" {
				d, err := os.MkdirTemp("", "vigil-demo-")
				if err != nil {
					return err
				}
				dir = d
			}
			src, repoDir, target := filepath.Join(dir, "source"), filepath.Join(dir, "repo"), filepath.Join(dir, "restore")
			if err := writeDemoData(src, 1); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			st, err := local.Open(repoDir, true)
			if err != nil {
				return err
			}
			o := g.repoOptions()
			o.CacheDir = filepath.Join(dir, "cache")
			r, err := repo.Init(ctx, st, "demo-password", repo.InitOptions{}, o)
			if err != nil {
				return err
			}
			g.out("repository: %s (password: demo-password)\n", repoDir)
			for night := 1; night <= 2; night++ {
				if night == 2 {
					if err := changeDemoData(src); err != nil {
						return fmt.Errorf("demo: %w", err)
					}
				}
				res, err := r.Backup(ctx, repo.BackupOptions{Paths: []string{src}, Job: "demo-files", Tags: []string{"demo"}})
				if err != nil {
					return err
				}
				s := res.Snapshot.Summary
				g.out("night %d: snapshot %s: read %s, new %s, stored %s (%d new, %d changed, %d unchanged files)\n", night,
					res.Snapshot.ID.Short(), humanBytes(s.BytesRead), humanBytes(s.BytesNew), humanBytes(s.BytesStored),
					s.FilesNew, s.FilesChanged, s.FilesUnchanged)
				if g.json {
					_ = g.emit(map[string]any{"message_type": "backup", "night": night, "snapshot_id": res.Snapshot.ID.String(), "summary": s})
				}
			}
			chk, err := r.Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil {
				return err
			}
			if !chk.OK() {
				return fmt.Errorf("demo: check failed: %v", chk.Errors)
			}
			g.out("check --read-data: %d packs verified, no errors\n", chk.PacksRead)
			sn, err := r.FindSnapshot(ctx, "latest")
			if err != nil {
				return err
			}
			rres, err := r.Restore(ctx, sn, repo.RestoreOptions{Target: target})
			if err != nil {
				return err
			}
			if err := compareTrees(src, repo.TargetPath(target, src)); err != nil {
				return fmt.Errorf("demo: restored data differs: %w", err)
			}
			g.out("restore: %d files, %s, byte-identical to the source\n", rres.Files, humanBytes(rres.Bytes))
			// VM backups: a vCenter simulator in process, two nights, restores.
			if err := runVMDemo(ctx, g, r, dir); err != nil {
				return fmt.Errorf("demo: VM backup: %w", err)
			}
			if g.json {
				_ = g.emit(map[string]any{"message_type": "summary", "dir": dir, "restored_files": rres.Files, "check_ok": true})
			}
			g.out("everything is in %s\n", dir)
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "working directory (default: a new temporary directory)")
	return c
}

func writeDemoData(dir string, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, seed))
	img := make([]byte, 32<<20)
	for off := 0; off < len(img); off += 64 << 10 {
		switch rng.IntN(4) {
		case 0: // zeros: unused disk space
		case 1:
			copy(img[off:], bytes.Repeat([]byte("kernel module block "), 64<<10/20))
		default:
			for i := off; i < off+64<<10; i += 8 {
				v := rng.Uint64()
				for k := 0; k < 8; k++ {
					img[i+k] = byte(v >> (8 * k))
				}
			}
		}
	}
	files := map[string][]byte{
		"vm/ils-server.img":            img,
		"logs/auth.log":                demoLog(rng, 3000),
		"logs/syslog":                  demoLog(rng, 5000),
		"configs/switch-core-1.cfg":    []byte("hostname \"switch-core-1\"\nvlan 10\n   name \"staff\"\n   untagged 1-24\n"),
		"configs/ruckus-smartzone.txt": []byte("zone Library\n  wlan Patrons open\n  wlan Staff wpa2\n"),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func demoLog(rng *rand.Rand, lines int) []byte {
	var b bytes.Buffer
	users := []string{"root", "admin", "circ", "backup"}
	for i := 0; i < lines; i++ {
		fmt.Fprintf(&b, "Nov 27 02:%02d:%02d ils sshd[%d]: Failed password for %s from 10.0.%d.%d port %d ssh2\n",
			i/60%60, i%60, 1000+rng.IntN(9000), users[rng.IntN(len(users))], rng.IntN(255), rng.IntN(255), 1024+rng.IntN(60000))
	}
	return b.Bytes()
}

// changeDemoData simulates the next night: a few disk blocks rewritten and
// log lines appended.
func changeDemoData(dir string) error {
	p := filepath.Join(dir, "vm/ils-server.img")
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	for _, off := range []int64{1 << 20, 9 << 20, 20 << 20} {
		if _, err := f.WriteAt(bytes.Repeat([]byte("night two "), 6554), off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(dir, "logs/auth.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer lf.Close()
	_, err = lf.WriteString("Nov 28 02:00:00 ils sshd[1]: Accepted publickey for admin from 10.0.0.5 port 5000 ssh2\n")
	return err
}

// compareTrees checks that every regular file below a exists in b with the
// same bytes.
func compareTrees(a, b string) error {
	return filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		x, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil {
			return err
		}
		if !bytes.Equal(x, y) {
			return fmt.Errorf("%s differs", rel)
		}
		return nil
	})
}
