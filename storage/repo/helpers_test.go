package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigilops/vigil/storage/blob/local"
)

var testKDF = KDFParams{N: 1 << 10, R: 8, P: 1}

func newTestRepo(t testing.TB) (*Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Init(context.Background(), st, "secret", InitOptions{PackSize: 1 << 20}, Options{KDF: testKDF, CacheDir: filepath.Join(t.TempDir(), "cache")})
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

func reopen(t testing.TB, dir string) *Repository {
	t.Helper()
	st, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(context.Background(), st, "secret", Options{KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writeTree creates a small file tree with a mix of content.
func writeTree(t testing.TB, dir string, seed int64) map[string][]byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	files := map[string][]byte{
		"a.txt":               []byte("hello world\n"),
		"empty":               nil,
		"sub/random.bin":      randBytes(rng, 3<<20+123),
		"sub/deeper/zeros":    make([]byte, 2<<20),
		"sub/deeper/log.log":  bytes.Repeat([]byte("Nov 27 02:00:01 host sshd[123]: Failed password for root\n"), 20000),
		"sub/copy-of-random":  nil,
		"disk.img":            mixedImage(rng, 5<<20),
		"sub/deeper/x/y/z.md": []byte("# nested\n"),
	}
	files["sub/copy-of-random"] = files["sub/random.bin"]
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	rng.Read(b)
	return b
}

// mixedImage looks like a disk: zero runs, repeated blocks and random data.
func mixedImage(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	block := randBytes(rng, 64<<10)
	for off := 0; off < n; off += 64 << 10 {
		end := min(off+64<<10, n)
		switch rng.Intn(3) {
		case 0: // zeros
		case 1:
			copy(b[off:end], block)
		default:
			rng.Read(b[off:end])
		}
	}
	return b
}

// treeDigest hashes every regular file and symlink below dir by relative path.
func treeDigest(t testing.TB, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = sha256.Sum256(b)
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = sha256.Sum256([]byte("link:" + l))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustLocal(t testing.TB, dir string) *local.Store {
	st, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
