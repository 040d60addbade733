package repo

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestBackupRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t)
	src := t.TempDir()
	writeTree(t, src, 1)
	if err := os.Symlink("sub/random.bin", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hardlink.txt")); err != nil {
		t.Fatal(err)
	}
	mtime := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "sub", "random.bin"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	res, err := r.Backup(ctx, BackupOptions{Paths: []string{src}, Tags: []string{"t1"}, Job: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) > 0 {
		t.Fatalf("backup errors: %v", res.Errors)
	}
	sum := res.Snapshot.Summary
	// random.bin and its copy share content: stored once.
	if sum.BytesNew >= sum.BytesRead-3<<20 {
		t.Fatalf("no dedup across files: read %d, new %d", sum.BytesRead, sum.BytesNew)
	}

	// Reopen from scratch (no cache) and restore.
	r2 := reopen(t, dir)
	target := t.TempDir()
	sn, err := r2.FindSnapshot(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	rres, err := r2.Restore(ctx, sn, RestoreOptions{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	if len(rres.Errors) > 0 {
		t.Fatalf("restore errors: %v", rres.Errors)
	}
	got := treeDigest(t, TargetPath(target, src))
	want := treeDigest(t, src)
	if len(got) != len(want) {
		t.Fatalf("restored %d entries, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s differs after restore", k)
		}
	}
	fi, err := os.Stat(filepath.Join(TargetPath(target, src), "sub", "random.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(mtime) || fi.Mode().Perm() != 0o640 {
		t.Errorf("metadata not restored: mtime %v mode %v", fi.ModTime(), fi.Mode())
	}
	a, _ := os.Stat(filepath.Join(TargetPath(target, src), "a.txt"))
	b, _ := os.Stat(filepath.Join(TargetPath(target, src), "hardlink.txt"))
	if !os.SameFile(a, b) {
		t.Errorf("hard link not restored as a link")
	}

	// Second backup: unchanged files are skipped via the parent, and
	// nothing new but trees is stored.
	res2, err := r2.Backup(ctx, BackupOptions{Paths: []string{src}, Job: "test"})
	if err != nil {
		t.Fatal(err)
	}
	s2 := res2.Snapshot.Summary
	if s2.FilesUnchanged == 0 || s2.FilesNew != 0 || s2.BytesRead != s2.BytesTotal && s2.BytesTotal != 0 {
		t.Logf("summary: %+v", s2)
	}
	if s2.FilesUnchanged != sum.FilesNew || s2.Chunks != 0 {
		t.Fatalf("second backup re-read files: unchanged %d of %d, chunks %d", s2.FilesUnchanged, sum.FilesNew, s2.Chunks)
	}
	if res2.Snapshot.Parent == nil || *res2.Snapshot.Parent != res.Snapshot.ID {
		t.Fatalf("parent not recorded")
	}
}

func TestSegmentedChunkingIsDeterministic(t *testing.T) {
	old := segmentSize
	segmentSize = 1 << 20 // files of 2 MiB and more are split
	defer func() { segmentSize = old }()
	ctx := context.Background()
	r, _ := newTestRepo(t)
	src := t.TempDir()
	writeTree(t, src, 5)
	res, err := r.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// Without the parent every file is read again, and chunks identically.
	res2, err := r.Backup(ctx, BackupOptions{Paths: []string{src}, Parent: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if s := res2.Snapshot.Summary; s.Chunks != res.Snapshot.Summary.Chunks {
		t.Fatalf("re-reading the same files made %d chunks, first time %d", s.Chunks, res.Snapshot.Summary.Chunks)
	}
	// Every file's pieces are identical. (Tree blobs may differ: the
	// ancestors of a temp dir, like /tmp, change mtime under other tests.)
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	pieces := func(sn *Snapshot) map[string]string {
		out := map[string]string{}
		r.Walk(ctx, idx, sn.Tree, func(p string, n *Node) error {
			if n.Type == NodeFile {
				c, err := r.FileContent(ctx, idx, n)
				if err != nil {
					t.Fatal(err)
				}
				out[p] = fmt.Sprint(c)
			}
			return nil
		})
		return out
	}
	p1, p2 := pieces(res.Snapshot), pieces(res2.Snapshot)
	if len(p1) == 0 || len(p1) != len(p2) {
		t.Fatalf("%d vs %d files", len(p1), len(p2))
	}
	for k, v := range p1 {
		if p2[k] != v {
			t.Fatalf("%s chunked differently the second time", k)
		}
	}
	target := t.TempDir()
	if _, err := r.Restore(ctx, res2.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, want := treeDigest(t, TargetPath(target, src)), treeDigest(t, src)
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s differs", k)
		}
	}
}

func TestRestoreHolesAndFilters(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	src := t.TempDir()
	writeTree(t, src, 21)
	res, err := r.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	rres, err := r.Restore(ctx, res.Snapshot, RestoreOptions{Target: target, Path: src + "/sub", Includes: []string{"*.log", "zeros"}, Excludes: []string{"random.bin"}})
	if err != nil {
		t.Fatal(err)
	}
	if rres.Files != 2 {
		t.Fatalf("restored %d files, want 2 (log.log and zeros)", rres.Files)
	}
	// SNAPSHOT:PATH puts the directory's contents directly into the target.
	zeros := filepath.Join(target, "deeper", "zeros")
	fi, err := os.Stat(zeros)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 2<<20 {
		t.Fatalf("zeros: size %d", fi.Size())
	}
	// A zero run is a hole: almost no blocks allocated.
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 > 64<<10 {
		t.Fatalf("zero file not sparse: %d bytes allocated", st.Blocks*512)
	}
	if _, err := os.Stat(filepath.Join(target, "random.bin")); err == nil {
		t.Fatal("excluded file restored")
	}
	if _, err := os.Stat(filepath.Join(target, "deeper", "x", "y", "z.md")); err == nil {
		t.Fatal("file outside the includes restored")
	}
}
