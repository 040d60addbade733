package repo

import (
	"encoding/binary"
	"testing"
)

func TestMasterIndexSpillsToFileAndFindsEverything(t *testing.T) {
	mi := newMasterIndex(t.TempDir())
	defer mi.Close()
	if mi.f == nil {
		t.Fatal("no temporary file for index records")
	}
	const packs, perPack = 40, 1000 // 40,000 entries: many tail flushes and table growths
	id := func(p, i int) ID {
		var x ID
		binary.LittleEndian.PutUint64(x[8:], uint64(p*perPack+i))
		// Same 8-byte prefix for pairs of IDs: prefix collisions must be
		// told apart by the full ID read back from the record file.
		binary.LittleEndian.PutUint64(x[:8], uint64((p*perPack+i)/2))
		return x
	}
	for p := 0; p < packs; p++ {
		ip := IndexPack{ID: NewRandomID()}
		for i := 0; i < perPack; i++ {
			ip.Blobs = append(ip.Blobs, PackedBlob{Type: DataBlob, ID: id(p, i), Offset: uint32(i * 100), Length: 100, RawLength: uint32(i)})
		}
		mi.addPack(ip)
	}
	if mi.Len() != packs*perPack {
		t.Fatalf("len %d", mi.Len())
	}
	if mi.flushed == 0 {
		t.Fatal("records never went to the file")
	}
	for p := 0; p < packs; p++ {
		for i := 0; i < perPack; i++ {
			_, e, ok := mi.Lookup(BlobHandle{Type: DataBlob, ID: id(p, i)})
			if !ok || e.RawLength != uint32(i) || e.Offset != uint32(i*100) {
				t.Fatalf("entry %d/%d: ok=%v %+v", p, i, ok, e)
			}
		}
	}
	if mi.Has(BlobHandle{Type: TreeBlob, ID: id(3, 3)}) {
		t.Fatal("type is part of the key")
	}
	var missing ID
	missing[0] = 0xff
	if mi.Has(BlobHandle{Type: DataBlob, ID: missing}) {
		t.Fatal("found a blob that was never added")
	}
	n := 0
	mi.Each(func(ID, PackedBlob) { n++ })
	if n != packs*perPack || mi.Err() != nil {
		t.Fatalf("Each saw %d entries (%v)", n, mi.Err())
	}
}

// BenchmarkIndexMemory reports heap bytes per indexed blob.
func BenchmarkIndexMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		mi := newMasterIndex(b.TempDir())
		ip := IndexPack{ID: NewRandomID()}
		for j := 0; j < 300_000; j++ {
			ip.Blobs = append(ip.Blobs, PackedBlob{Type: DataBlob, ID: NewRandomID(), Length: 100})
		}
		mi.addPack(ip)
		b.ReportMetric(float64(len(mi.keys)*12+len(mi.tail))/300_000, "bytes/blob")
		mi.Close()
	}
}
