package repo

import (
	"bytes"
	"encoding/json"
	"testing"
)

func FuzzPackHeader(f *testing.F) {
	entries := []PackedBlob{{Type: DataBlob, Compressed: true, ID: NewRandomID(), Length: 100, RawLength: 300},
		{Type: TreeBlob, ID: NewRandomID(), Length: 50, RawLength: 22}}
	f.Add(encodePackHeader(entries), int64(150))
	f.Add([]byte("VGPK\x01\x00\x00\x00\x00"), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, dataLen int64) {
		out, err := decodePackHeader(b, dataLen)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the same bytes and fit the pack.
		if !bytes.Equal(encodePackHeader(out), b) {
			t.Fatalf("round trip differs")
		}
		var end int64
		for _, e := range out {
			end = int64(e.Offset) + int64(e.Length)
		}
		if end != dataLen && len(out) > 0 {
			t.Fatalf("entries end at %d, data is %d", end, dataLen)
		}
	})
}

func FuzzIndex(f *testing.F) {
	f.Add(encodeIndex(&IndexFile{Supersedes: []ID{NewRandomID()}, Packs: []IndexPack{{ID: NewRandomID(), Blobs: []PackedBlob{
		{Type: DataBlob, ID: NewRandomID(), Offset: 0, Length: 40, RawLength: 12}}}}}))
	f.Add([]byte("VGIX\x01\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ix, err := decodeIndex(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeIndex(ix), b) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzTreeAndSnapshot(f *testing.F) {
	id := NewRandomID()
	tr, _ := encodeTree(&Tree{Nodes: []*Node{{Name: "a", Type: NodeFile, Content: []ContentRef{{ID: id}, {Zero: 4096}}},
		{Name: "d", Type: NodeDir, Subtree: &id}}})
	f.Add(tr)
	sn, _ := json.Marshal(Snapshot{Tree: id, Paths: []string{"/x"}, Hostname: "h"})
	f.Add(sn)
	f.Add([]byte(`{"nodes":[{"name":"..","type":"file"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if tree, err := decodeTree(b); err == nil {
			for _, n := range tree.Nodes {
				if !ValidName(n.Name) {
					t.Fatalf("accepted unsafe name %q", n.Name)
				}
			}
		}
		var s Snapshot
		_ = json.Unmarshal(b, &s)
	})
}
