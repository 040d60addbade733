package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// newDemoCmd runs vigil end to end in ./vigil-demo/: a vCenter simulator in
// process with a few VMs holding realistic data, a local repository and a
// SQLite run history, two nights of VM and file backups through the runner
// (the second night incremental), a restore of one VM as a new VM and of a
// disk as an image file, and a report read back from the history.
func newDemoCmd(g *globals) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "demo",
		Short: "Back up simulated VMs and files twice, restore a VM, and print the run report (in ./vigil-demo/)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			if err := freshDemoDir(abs); err != nil {
				return withCode(exitUsage, fmt.Errorf("demo: %w", err))
			}
			if err := runDemo(cmd.Context(), g, abs); err != nil {
				return fmt.Errorf("demo: %w", err)
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "vigil-demo", "working directory; everything the demo writes stays in it")
	return c
}

// demoMarker marks a directory the demo made, so a second run may empty it
// without ever deleting a directory of the user's that has the same name.
const demoMarker = ".vigil-demo"

// freshDemoDir empties a directory an earlier demo made, or creates it.
func freshDemoDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(dir, demoMarker)); err != nil {
			return fmt.Errorf("%s exists and was not made by vigil demo; remove it or pass --dir", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("start afresh: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, demoMarker), []byte("made by vigil demo; the next demo run empties this directory\n"), 0o644)
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
