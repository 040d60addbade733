package repo

import (
	"bytes"
	"context"
	"fmt"
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

func TestAddImageExtentsEqualsFullChunking(t *testing.T) {
	old := segmentSize
	segmentSize = 1 << 20
	defer func() { segmentSize = old }()
	ctx := context.Background()
	r, _ := newTestRepo(t)
	rng := rand.New(rand.NewSource(17))
	img := mixedImage(rng, 6<<20+5000)
	meta := FileMeta{Mode: 0o600}

	b, err := r.NewBuilder(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	base, _, err := b.AddImage(ctx, "/vm/disk.img", bytes.NewReader(img), int64(len(img)), meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Commit(ctx, SnapshotMeta{Paths: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}

	next := append([]byte(nil), img...)
	changes := []Extent{
		{Off: 100, Len: 10},              // at the very start
		{Off: 2<<20 - 3000, Len: 6000},   // across a segment boundary
		{Off: 3<<20 + 70000, Len: 65536}, // a whole block in the middle
		{Off: int64(len(next)) - 20, Len: 20},
		{Off: 4<<20 + 1000, Len: 1}, // one byte
	}
	for _, c := range changes {
		rng.Read(next[c.Off : c.Off+c.Len])
	}
	b2, err := r.NewBuilder(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	inc, st, err := b2.AddImageExtents(ctx, "/vm/disk.img", bytes.NewReader(next), int64(len(next)), meta, base, changes)
	if err != nil {
		t.Fatal(err)
	}
	full, _, err := b2.AddImage(ctx, "/vm/full.img", bytes.NewReader(next), int64(len(next)), meta, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	idx := b2.Index()
	ci, err := r.FileContent(ctx, idx, inc)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := r.FileContent(ctx, idx, full)
	if err != nil {
		t.Fatal(err)
	}
	if len(ci) != len(cf) {
		t.Fatalf("incremental gives %d pieces, full chunking %d", len(ci), len(cf))
	}
	for k := range ci {
		if ci[k] != cf[k] {
			t.Fatalf("piece %d differs: %+v vs %+v", k, ci[k], cf[k])
		}
	}
	if st.BytesRead > int64(len(next))/4 || st.BytesRead+st.BytesReused != int64(len(next)) {
		t.Fatalf("read %d and reused %d of %d bytes", st.BytesRead, st.BytesReused, len(next))
	}
	sn, err := b2.Commit(ctx, SnapshotMeta{Paths: []string{"vm"}})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	if _, err := r.Restore(ctx, sn, RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(target, "vm", "disk.img"))
	if err != nil || !bytes.Equal(got, next) {
		t.Fatalf("incremental image does not restore to the new content (%v)", err)
	}
}

func TestAddImageExtentsRandomChanges(t *testing.T) {
	old := segmentSize
	segmentSize = 1 << 20
	defer func() { segmentSize = old }()
	ctx := context.Background()
	r, _ := newTestRepo(t)
	for seed := int64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewSource(seed))
		img := mixedImage(rng, 3<<20+rng.Intn(100000))
		if seed%2 == 0 {
			// A mostly empty disk: long zero runs with changes landing in them.
			clear(img[rng.Intn(1<<20) : 2<<20+rng.Intn(1<<20)])
		}
		b, err := r.NewBuilder(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		base, _, err := b.AddImage(ctx, "/d.img", bytes.NewReader(img), int64(len(img)), FileMeta{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		next := append([]byte(nil), img...)
		var changes []Extent
		for k := 0; k < 1+rng.Intn(30); k++ {
			e := Extent{Off: rng.Int63n(int64(len(next))), Len: 1 + rng.Int63n(100000)}
			if k%3 == 0 {
				e.Len = 1 + rng.Int63n(200) // small changes, often inside one zero run
			}
			e.Len = min(e.Len, int64(len(next))-e.Off)
			if rng.Intn(3) == 0 {
				clear(next[e.Off : e.Off+e.Len]) // changes to zeros happen too
			} else {
				rng.Read(next[e.Off : e.Off+e.Len])
			}
			changes = append(changes, e)
		}
		inc, _, err := b.AddImageExtents(ctx, "/i.img", bytes.NewReader(next), int64(len(next)), FileMeta{}, base, changes)
		if err != nil {
			t.Fatal(err)
		}
		full, _, err := b.AddImage(ctx, "/f.img", bytes.NewReader(next), int64(len(next)), FileMeta{}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Commit(ctx, SnapshotMeta{Paths: []string{"x"}}); err != nil {
			t.Fatal(err)
		}
		idx, err := r.LoadIndex(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer idx.Close()
		ci, _ := r.FileContent(ctx, idx, inc)
		cf, _ := r.FileContent(ctx, idx, full)
		if fmt.Sprint(ci) != fmt.Sprint(cf) {
			t.Fatalf("seed %d: incremental chunking differs from full chunking (%d vs %d pieces)", seed, len(ci), len(cf))
		}
		sum := func(refs []ContentRef) (n int64) {
			for _, c := range refs {
				if c.Zero > 0 {
					n += int64(c.Zero)
				} else {
					_, e, _ := idx.Lookup(BlobHandle{Type: DataBlob, ID: c.ID})
					n += int64(e.RawLength)
				}
			}
			return n
		}
		if sum(ci) != int64(len(next)) {
			t.Fatalf("seed %d: pieces cover %d of %d bytes", seed, sum(ci), len(next))
		}
	}
}
