package repo

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/storage/blob/local"
)

// craftSnapshot stores raw tree JSON (bypassing validation) as a snapshot.
func craftSnapshot(t *testing.T, r *Repository, trees ...string) *Snapshot {
	t.Helper()
	ctx := context.Background()
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w := r.NewWriter(ctx, idx)
	fileID, _, err := w.SaveBlob(ctx, DataBlob, []byte("payload"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var last ID
	for _, tr := range trees {
		tr = strings.ReplaceAll(tr, "FILEID", fileID.String())
		tr = strings.ReplaceAll(tr, "PREV", last.String())
		last, _, err = w.SaveBlob(ctx, TreeBlob, []byte(tr), nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	sn := &Snapshot{Time: time.Now(), Tree: last, Paths: []string{"/x"}, Hostname: "h"}
	if _, err := w.Commit(ctx, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

func TestRestoreNeverWritesOutsideTarget(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	base := t.TempDir()
	target := filepath.Join(base, "target")
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	file := `{"name":%q,"type":"file","mode":420,"size":7,"content":["FILEID"]}`
	cases := map[string][]string{
		"dotdot":   {`{"nodes":[` + sprintf(file, "../outside/pwned") + `]}`},
		"dotdot2":  {`{"nodes":[` + sprintf(file, "..") + `]}`},
		"absolute": {`{"nodes":[` + sprintf(file, "/tmp/pwned") + `]}`},
		"slash":    {`{"nodes":[` + sprintf(file, "a/../../outside/pwned") + `]}`},
		// A symlink to outside, then a directory of the same name with a file in it.
		"symlink-dup": {
			`{"nodes":[` + sprintf(file, "f") + `]}`,
			`{"nodes":[{"name":"d","type":"symlink","mode":134218239,"link_target":` + jsonq(outside) + `},{"name":"d","type":"dir","mode":2147484141,"subtree":"PREV"}]}`,
		},
	}
	for name, trees := range cases {
		t.Run(name, func(t *testing.T) {
			sn := craftSnapshot(t, r, trees...)
			_, err := r.Restore(ctx, sn, RestoreOptions{Target: target})
			if err == nil {
				t.Fatalf("restore of crafted snapshot succeeded")
			}
			assertEmptyDir(t, outside)
		})
	}

	// A symlink planted in the target (by an earlier restore or an attacker)
	// must not redirect a restored directory outside.
	t.Run("symlink-in-target", func(t *testing.T) {
		tgt := filepath.Join(base, "target2")
		if err := os.MkdirAll(tgt, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(tgt, "d")); err != nil {
			t.Fatal(err)
		}
		sn := craftSnapshot(t, r, `{"nodes":[`+sprintf(file, "f")+`]}`,
			`{"nodes":[{"name":"d","type":"dir","mode":2147484141,"subtree":"PREV"}]}`)
		_, err := r.Restore(ctx, sn, RestoreOptions{Target: tgt})
		if err == nil {
			t.Fatalf("restore through a planted symlink succeeded")
		}
		assertEmptyDir(t, outside)
	})

	// A symlink entry is restored as a symlink, and a later file of another
	// name is not written through it.
	t.Run("symlink-stored", func(t *testing.T) {
		tgt := filepath.Join(base, "target3")
		sn := craftSnapshot(t, r, `{"nodes":[{"name":"a","type":"symlink","mode":134218239,"link_target":`+jsonq(filepath.Join(outside, "x"))+`},`+sprintf(file, "b")+`]}`)
		res, err := r.Restore(ctx, sn, RestoreOptions{Target: tgt})
		if err != nil {
			t.Fatal(err)
		}
		if res.Files != 1 {
			t.Fatalf("restored %d files", res.Files)
		}
		if l, err := os.Readlink(filepath.Join(tgt, "a")); err != nil || l != filepath.Join(outside, "x") {
			t.Fatalf("symlink: %q %v", l, err)
		}
		assertEmptyDir(t, outside)
	})
}

func sprintf(format string, name string) string {
	b, _ := json.Marshal(name)
	return strings.Replace(format, "%q", string(b), 1)
}

func jsonq(s string) string { b, _ := json.Marshal(s); return string(b) }

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Fatalf("something was written outside the target: %v", entries)
	}
	if _, err := os.Stat("/tmp/pwned"); err == nil {
		t.Fatalf("/tmp/pwned was written")
	}
}

func TestWrongPasswordAndMissingRepo(t *testing.T) {
	ctx := context.Background()
	_, dir := newTestRepo(t)
	st, _ := local.Open(dir, false)
	if _, err := Open(ctx, st, "wrong", Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	empty, _ := local.Open(t.TempDir(), false)
	if _, err := Open(ctx, empty, "secret", Options{}); !errors.Is(err, ErrNoRepository) {
		t.Fatalf("missing repo: %v", err)
	}
}

func TestKeysAddListRemove(t *testing.T) {
	ctx := context.Background()
	r, dir := newTestRepo(t)
	id, err := r.AddKey(ctx, "second")
	if err != nil {
		t.Fatal(err)
	}
	st, _ := local.Open(dir, false)
	r2, err := Open(ctx, st, "second", Options{})
	if err != nil {
		t.Fatalf("open with second key: %v", err)
	}
	keys, err := r2.ListKeys(ctx)
	if err != nil || len(keys) != 2 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	if err := r2.RemoveKey(ctx, id.String()[:10]); err == nil {
		t.Fatal("removed the key in use")
	}
	if err := r.RemoveKey(ctx, id.String()[:10]); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, st, "second", Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("removed key still opens: %v", err)
	}
}

func TestLocks(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	l1, err := r.Lock(ctx, false, "backup", 0)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := r.Lock(ctx, false, "backup", 0)
	if err != nil {
		t.Fatalf("two shared locks must coexist: %v", err)
	}
	if _, err := r.Lock(ctx, true, "prune", 0); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive beside shared: %v", err)
	}
	l1.Unlock()
	l2.Unlock()
	ex, err := r.Lock(ctx, true, "prune", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, false, "backup", 0); !errors.Is(err, ErrLocked) {
		t.Fatalf("shared beside exclusive: %v", err)
	}
	ex.Unlock()

	// A lock of a dead process on this host is stale at once.
	dead := LockInfo{Exclusive: true, Operation: "prune", Created: time.Now(), Heartbeat: time.Now(), Hostname: hostname(), PID: 1 << 30}
	if err := r.saveJSON(ctx, "locks/"+NewRandomID().String(), dead); err != nil {
		t.Fatal(err)
	}
	// A lock from another host with an old heartbeat is stale too.
	old := LockInfo{Exclusive: true, Operation: "backup", Created: time.Now().Add(-2 * time.Hour), Heartbeat: time.Now().Add(-time.Hour), Hostname: "elsewhere", PID: 1}
	if err := r.saveJSON(ctx, "locks/"+NewRandomID().String(), old); err != nil {
		t.Fatal(err)
	}
	// A live lock from another host is respected.
	live := LockInfo{Exclusive: true, Operation: "prune", Created: time.Now(), Heartbeat: time.Now(), Hostname: "elsewhere", PID: 1}
	liveID := NewRandomID()
	if err := r.saveJSON(ctx, "locks/"+liveID.String(), live); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, false, "backup", 0); !errors.Is(err, ErrLocked) {
		t.Fatalf("live foreign lock ignored: %v", err)
	}
	locks, err := r.Locks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 1 || locks[0].ID != liveID {
		t.Fatalf("stale locks not removed: %+v", locks)
	}
	r.store.Delete(ctx, "locks/"+liveID.String())
	l, err := r.Lock(ctx, true, "prune", 0)
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
}

func TestForgetPolicy(t *testing.T) {
	base := time.Date(2026, 1, 1, 2, 0, 0, 0, time.UTC)
	var sns []*Snapshot
	for i := 0; i < 100; i++ { // one snapshot a night for 100 nights
		sns = append(sns, &Snapshot{Time: base.Add(time.Duration(i) * 24 * time.Hour), ID: NewRandomID()})
	}
	ds := ApplyPolicy(sns, Policy{Last: 2, Daily: 7, Weekly: 4, Monthly: 3}, time.UTC)
	kept := 0
	for _, d := range ds {
		if d.Keep {
			kept++
			if len(d.Reasons) == 0 {
				t.Fatalf("kept without reason")
			}
		}
	}
	// Nights run Jan 1 .. Apr 10. daily 7 keeps Apr 4-10 (last 2 inside);
	// weekly 4 adds the Sundays Mar 22 and 29 (W14, W15 already kept);
	// monthly 3 adds Mar 31 and Feb 28 (April already kept): 11.
	if kept != 11 {
		for _, d := range ds {
			if d.Keep {
				t.Logf("%s %v", d.Time.Format("2006-01-02 Mon"), d.Reasons)
			}
		}
		t.Fatalf("kept %d, want 11", kept)
	}
	if !ds[0].Keep || ds[len(ds)-1].Keep {
		t.Fatalf("newest must be kept, oldest removed")
	}
	w := ApplyPolicy(sns, Policy{Within: 72 * time.Hour}, time.UTC)
	n := 0
	for _, d := range w {
		if d.Keep {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("keep-within 72h kept %d, want 4", n)
	}
}
