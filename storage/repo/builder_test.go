package repo

import (
	"bytes"
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBuilderImageReusesUnchangedSegments(t *testing.T) {
	old := segmentSize
	segmentSize = 1 << 20
	defer func() { segmentSize = old }()
	ctx := context.Background()
	r, _ := newTestRepo(t)
	rng := rand.New(rand.NewSource(9))
	img := mixedImage(rng, 4<<20+12345) // five segments, the last one short

	b, err := r.NewBuilder(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	meta := FileMeta{Mode: 0o600, ModTime: time.Unix(1700000000, 0)}
	n1, st, err := b.AddImage(ctx, "/vms/ils/disk-0.img", bytes.NewReader(img), int64(len(img)), meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesRead != int64(len(img)) || st.BytesReused != 0 {
		t.Fatalf("first night: %+v", st)
	}
	if _, err := b.AddBytes(ctx, "/vms/ils/ils.vmx", []byte("displayName = \"ils\"\n"), meta); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, SnapshotMeta{Paths: []string{"vm:ils"}, Job: "vm"}); err != nil {
		t.Fatal(err)
	}

	// Next night: only segment 2 changed, and "change tracking" says so.
	next := append([]byte(nil), img...)
	copy(next[2<<20+100:], bytes.Repeat([]byte("changed!"), 1000))
	b2, err := r.NewBuilder(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var reads int64
	src := countingReaderAt{r: bytes.NewReader(next), n: &reads}
	unchanged := func(off, n int64) bool { return off+n <= 2<<20 || off >= 3<<20 }
	n2, st2, err := b2.AddImage(ctx, "/vms/ils/disk-0.img", src, int64(len(next)), meta, n1, unchanged)
	if err != nil {
		t.Fatal(err)
	}
	if st2.BytesRead != 1<<20 || reads != 1<<20 || st2.BytesReused != int64(len(next))-1<<20 {
		t.Fatalf("second night read %d (%d through the source), reused %d", st2.BytesRead, reads, st2.BytesReused)
	}
	sn2, err := b2.Commit(ctx, SnapshotMeta{Paths: []string{"vm:ils"}, Job: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	_ = n2
	target := t.TempDir()
	if _, err := r.Restore(ctx, sn2, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "vms", "ils", "disk-0.img"))
	if err != nil || !bytes.Equal(got, next) {
		t.Fatalf("incremental image does not restore to the new content (%v)", err)
	}
	if chk, err := r.Check(ctx, CheckOptions{ReadData: true}); err != nil || !chk.OK() {
		t.Fatalf("check: %v %+v", err, chk)
	}
}

type countingReaderAt struct {
	r *bytes.Reader
	n *int64
}

func (c countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	*c.n += int64(n)
	return n, err
}

func TestBuilderRejectsBadPaths(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	b, err := r.NewBuilder(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, p := range []string{"/", "", "/a/../..", "/a/\x00b"} {
		if _, err := b.AddBytes(ctx, p, []byte("x"), FileMeta{}); err == nil {
			t.Errorf("path %q accepted", p)
		}
	}
	if _, err := b.AddBytes(ctx, "/cfg/a", []byte("x"), FileMeta{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddBytes(ctx, "/cfg/a", []byte("y"), FileMeta{}); err == nil {
		t.Error("duplicate path accepted")
	}
}
