package repo

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

func listFiles(t *testing.T, dir, sub string) []string {
	t.Helper()
	var out []string
	filepath.Walk(filepath.Join(dir, sub), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if off < 0 {
		off += fi.Size()
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// dataPackOf returns the pack holding the first blob of a file in the snapshot.
func dataPackOf(t *testing.T, r *Repository, sn *Snapshot, path string) (ID, PackedBlob) {
	t.Helper()
	ctx := context.Background()
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found *Node
	r.Walk(ctx, idx, sn.Tree, func(p string, n *Node) error {
		if strings.HasSuffix(p, path) {
			found = n
		}
		return nil
	})
	if found == nil {
		t.Fatalf("%s not in snapshot", path)
	}
	content, err := r.FileContent(ctx, idx, found)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range content {
		if c.Zero == 0 {
			p, e, _ := idx.Lookup(BlobHandle{Type: DataBlob, ID: c.ID})
			return p, e
		}
	}
	t.Fatalf("%s has no data blob", path)
	return ID{}, PackedBlob{}
}

func TestCorruptPackIsNamedAndOtherFilesRestore(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t)
	src := t.TempDir()
	files := writeTree(t, src, 7)
	res, err := r.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	sn := res.Snapshot
	pack, e := dataPackOf(t, r, sn, "/sub/random.bin")
	flipByte(t, filepath.Join(dir, packName(pack)), int64(e.Offset)+100)

	r = reopen(t, dir)
	chk, err := r.Check(ctx, CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if chk.OK() || len(chk.DamagedPacks) != 1 || chk.DamagedPacks[0] != pack.String() {
		t.Fatalf("check must name pack %s: %+v", pack.Short(), chk)
	}
	if len(chk.AffectedSnapshots) != 1 || chk.AffectedSnapshots[0] != sn.ID.String() {
		t.Fatalf("check must name the affected snapshot: %+v", chk.AffectedSnapshots)
	}
	// Structure-only check does not read data and stays quiet.
	if chk2, err := r.Check(ctx, CheckOptions{}); err != nil || !chk2.OK() {
		t.Fatalf("structure check: %v %+v", err, chk2)
	}

	target := t.TempDir()
	rres, err := r.Restore(ctx, sn, RestoreOptions{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	failed := map[string]bool{}
	for _, fe := range rres.Errors {
		failed[filepath.Base(fe.Path)] = true
		if !strings.Contains(fe.Err.Error(), "authentication failed") {
			t.Errorf("unclear error: %v", fe.Err)
		}
	}
	if !failed["random.bin"] {
		t.Fatalf("damaged file restored silently; errors: %v", rres.Errors)
	}
	root := TargetPath(target, src)
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(root, name))
		if failed[filepath.Base(name)] {
			if err == nil {
				t.Errorf("%s: failed file left in target", name)
			}
			continue
		}
		if err != nil || string(got) != string(data) {
			t.Errorf("%s not restored intact (%v)", name, err)
		}
	}
}

func TestCorruptIndexAndSnapshotAreNamed(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t)
	src := t.TempDir()
	writeTree(t, src, 3)
	if _, err := r.Backup(ctx, BackupOptions{Paths: []string{src}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Backup(ctx, BackupOptions{Paths: []string{src}, Parent: "none", Tags: []string{"second"}}); err != nil {
		t.Fatal(err)
	}
	idxFiles := listFiles(t, dir, "index")
	snapFiles := listFiles(t, dir, "snapshots")
	flipByte(t, idxFiles[0], 40)
	flipByte(t, snapFiles[0], -5)
	r2, err := Open(ctx, mustLocal(t, dir), "secret", Options{KDF: testKDF})
	if err != nil {
		t.Fatal(err)
	}
	chk, err := r2.Check(ctx, CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if chk.OK() {
		t.Fatal("check passed a corrupted repository")
	}
	if len(chk.DamagedIndexes) != 1 || chk.DamagedIndexes[0] != filepath.Base(idxFiles[0]) {
		t.Fatalf("damaged index not named: %+v", chk.DamagedIndexes)
	}
	if len(chk.DamagedSnapshots) != 1 || chk.DamagedSnapshots[0] != filepath.Base(snapFiles[0]) {
		t.Fatalf("damaged snapshot not named: %+v", chk.DamagedSnapshots)
	}
	// Backups refuse to build on an index they cannot authenticate.
	if _, err := r2.Backup(ctx, BackupOptions{Paths: []string{src}}); err == nil || !strings.Contains(err.Error(), "repair index") {
		t.Fatalf("backup over a damaged index: %v", err)
	}
	// Prune refuses too: packs only the damaged index names would look unused.
	if _, err := r2.Prune(ctx, PruneOptions{}); err == nil {
		t.Fatal("prune over a damaged index succeeded")
	}
	// Restore goes on: what the damaged index listed fails per file, with a hint.
	sns, err := r2.Snapshots(ctx, func(ID, error) {})
	if err != nil || len(sns) != 1 {
		t.Fatalf("intact snapshots: %d %v", len(sns), err)
	}
	// Whether the root tree was listed in the damaged index object decides
	// between "nothing restorable" and "some files fail"; both must say what to do.
	rres, err := r2.Restore(ctx, sns[0], RestoreOptions{Target: t.TempDir()})
	if err != nil && !strings.Contains(err.Error(), "repair index") {
		t.Fatalf("restore with a damaged index object: %v", err)
	}
	for _, fe := range rres.errorsOrNil() {
		if !strings.Contains(fe.Err.Error(), "repair index") {
			t.Fatalf("restore error without a hint: %v", fe)
		}
	}
	// repair index rebuilds it from the pack headers, then check is clean
	// except for the damaged snapshot.
	if _, bad, err := r2.RepairIndex(ctx); err != nil || len(bad) != 0 {
		t.Fatalf("repair index: %v %v", err, bad)
	}
	os.Remove(snapFiles[0])
	chk, err = r2.Check(ctx, CheckOptions{ReadData: true})
	if err != nil || !chk.OK() {
		t.Fatalf("after repair: %v %+v", err, chk)
	}
	target := t.TempDir()
	if rres, err := r2.Restore(ctx, sns[0], RestoreOptions{Target: target}); err != nil || len(rres.Errors) > 0 {
		t.Fatalf("restore after repair: %v %v", err, rres)
	}
	got, want := treeDigest(t, TargetPath(target, src)), treeDigest(t, src)
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s differs after repair", k)
		}
	}
}

func TestForgetPruneKeepsRemainingSnapshotsRestorable(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t)
	src := t.TempDir()
	writeTree(t, src, 11)
	first, err := r.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	// Replace most content, back up again, forget the first.
	if err := os.RemoveAll(filepath.Join(src, "sub")); err != nil {
		t.Fatal(err)
	}
	writeTree(t, filepath.Join(src, "v2"), 12)
	second, err := r.Backup(ctx, BackupOptions{Paths: []string{src}})
	if err != nil {
		t.Fatal(err)
	}
	before := dirSize(t, filepath.Join(dir, "data"))
	if err := r.RemoveSnapshot(ctx, first.Snapshot.ID); err != nil {
		t.Fatal(err)
	}
	pres, err := r.Prune(ctx, PruneOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := dirSize(t, filepath.Join(dir, "data"))
	if after >= before || pres.BytesFreed == 0 {
		t.Fatalf("prune freed nothing: %d -> %d (%+v)", before, after, pres)
	}
	chk, err := reopen(t, dir).Check(ctx, CheckOptions{ReadData: true})
	if err != nil || !chk.OK() || len(chk.Warnings) != 0 {
		t.Fatalf("check after prune: %v %+v", err, chk)
	}
	target := t.TempDir()
	if _, err := r.Restore(ctx, second.Snapshot, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, want := treeDigest(t, TargetPath(target, src)), treeDigest(t, src)
	if len(got) != len(want) {
		t.Fatalf("restored %d files, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s differs after prune", k)
		}
	}
}

func dirSize(t *testing.T, dir string) int64 {
	var n int64
	for _, f := range listFiles(t, dir, "") {
		fi, _ := os.Stat(f)
		n += fi.Size()
	}
	return n
}

func (r *RestoreResult) errorsOrNil() []FileError {
	if r == nil {
		return nil
	}
	return r.Errors
}
