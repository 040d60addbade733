package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vigilops/vigil/storage/blob"
	"github.com/vigilops/vigil/storage/blob/blobtest"
)

func TestContract(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		s, err := Open(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestRejectsEscapingNames(t *testing.T) {
	s, err := Open(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../x", "/etc/passwd", "data/../../x", "data/.tmp-1", ""} {
		if err := s.Put(context.Background(), name, bytes.NewReader(nil)); err == nil {
			t.Errorf("put %q accepted", name)
		}
	}
}

func TestListSkipsTemporaryFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data", "00"), 0o700); err != nil {
		t.Fatal(err)
	}
	// What a killed Put leaves behind must be invisible.
	if err := os.WriteFile(filepath.Join(dir, "data", "00", ".tmp-dead"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := s.List(context.Background(), "data/", func(blob.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("listed %d objects, want 0", n)
	}
}
