package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/errgroup"
)

// An index object ("index/<random id>") lists, for packs that are completely
// stored, where each blob lives. Plaintext layout (then compressed and sealed
// like every object):
//
//	"VGIX" || version(1) || uint32 n_supersedes || n × 32-byte index IDs
//	       || uint32 n_packs || n × (pack ID || uint32 n_blobs || n × entry)
//	entry  = type(1) || flags(1) || blob ID(32) || offset(4) || length(4) || raw length(4)
//
// "supersedes" names index objects whose content this one includes, so a
// reader may ignore them; prune uses it to replace the index atomically.

const (
	indexMagic     = "VGIX"
	indexVersion   = 1
	indexEntrySize = 1 + 1 + 32 + 4 + 4 + 4
	// indexFlushBlobs bounds how many entries a backup keeps unsaved.
	indexFlushBlobs = 100_000
)

// IndexFile is the decoded content of one index object.
type IndexFile struct {
	Supersedes []ID
	Packs      []IndexPack
}

// IndexPack lists the blobs of one pack.
type IndexPack struct {
	ID    ID
	Blobs []PackedBlob
}

func encodeIndex(f *IndexFile) []byte {
	n := 0
	for _, p := range f.Packs {
		n += 36 + len(p.Blobs)*indexEntrySize
	}
	b := make([]byte, 0, 13+32*len(f.Supersedes)+n)
	b = append(b, indexMagic...)
	b = append(b, indexVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Supersedes)))
	for _, id := range f.Supersedes {
		b = append(b, id[:]...)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(f.Packs)))
	for _, p := range f.Packs {
		b = append(b, p.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Blobs)))
		for _, e := range p.Blobs {
			b = append(b, byte(e.Type), flags(e.Compressed))
			b = append(b, e.ID[:]...)
			b = binary.LittleEndian.AppendUint32(b, e.Offset)
			b = binary.LittleEndian.AppendUint32(b, e.Length)
			b = binary.LittleEndian.AppendUint32(b, e.RawLength)
		}
	}
	return b
}

var errBadIndex = errors.New("malformed index")

func decodeIndex(b []byte) (*IndexFile, error) {
	rd := byteReader{b: b}
	if string(rd.next(4)) != indexMagic {
		return nil, fmt.Errorf("%w: bad magic", errBadIndex)
	}
	if v := rd.next(1); v == nil || v[0] != indexVersion {
		return nil, fmt.Errorf("%w: unsupported version", errBadIndex)
	}
	f := &IndexFile{}
	ns := rd.u32()
	if rd.err || int64(ns)*32 > int64(rd.left()) {
		return nil, fmt.Errorf("%w: supersedes list truncated", errBadIndex)
	}
	for i := uint32(0); i < ns; i++ {
		var id ID
		copy(id[:], rd.next(32))
		f.Supersedes = append(f.Supersedes, id)
	}
	np := rd.u32()
	if rd.err || int64(np)*36 > int64(rd.left()) {
		return nil, fmt.Errorf("%w: pack list truncated", errBadIndex)
	}
	f.Packs = make([]IndexPack, 0, np)
	for i := uint32(0); i < np; i++ {
		var p IndexPack
		copy(p.ID[:], rd.next(32))
		nb := rd.u32()
		if rd.err || int64(nb)*indexEntrySize > int64(rd.left()) {
			return nil, fmt.Errorf("%w: pack %d truncated", errBadIndex, i)
		}
		p.Blobs = make([]PackedBlob, nb)
		for j := range p.Blobs {
			e := rd.next(indexEntrySize)
			t := BlobType(e[0])
			if t != DataBlob && t != TreeBlob || e[1]&^flagCompressed != 0 {
				return nil, fmt.Errorf("%w: pack %d entry %d: bad type or flags", errBadIndex, i, j)
			}
			pb := PackedBlob{Type: t, Compressed: e[1]&flagCompressed != 0}
			copy(pb.ID[:], e[2:34])
			pb.Offset = binary.LittleEndian.Uint32(e[34:38])
			pb.Length = binary.LittleEndian.Uint32(e[38:42])
			pb.RawLength = binary.LittleEndian.Uint32(e[42:46])
			if pb.Length < Overhead || uint64(pb.Offset)+uint64(pb.Length) > 1<<32-1 {
				return nil, fmt.Errorf("%w: pack %d entry %d: bad length", errBadIndex, i, j)
			}
			p.Blobs[j] = pb
		}
		f.Packs = append(f.Packs, p)
	}
	if rd.left() != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadIndex, rd.left())
	}
	return f, nil
}

type byteReader struct {
	b   []byte
	err bool
}

func (r *byteReader) left() int { return len(r.b) }

func (r *byteReader) next(n int) []byte {
	if r.err || len(r.b) < n {
		r.err = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *byteReader) u32() uint32 {
	b := r.next(4)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// location is the compact in-memory form of an index entry: 20 bytes plus
// the 33-byte key, instead of a full PackedBlob per blob.
type location struct {
	pack   uint32 // position in MasterIndex.packs
	offset uint32
	length uint32
	raw    uint32
	comp   bool
}

// MasterIndex is the union of all index objects, in memory.
type MasterIndex struct {
	mu      sync.RWMutex
	packs   []ID
	packNum map[ID]uint32
	blobs   map[BlobHandle]location
	files   map[ID]bool // index objects loaded
}

func newMasterIndex() *MasterIndex {
	return &MasterIndex{packNum: map[ID]uint32{}, blobs: map[BlobHandle]location{}, files: map[ID]bool{}}
}

func (mi *MasterIndex) addPack(p IndexPack) {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	n, ok := mi.packNum[p.ID]
	if !ok {
		n = uint32(len(mi.packs))
		mi.packs = append(mi.packs, p.ID)
		mi.packNum[p.ID] = n
	}
	for _, b := range p.Blobs {
		h := BlobHandle{Type: b.Type, ID: b.ID}
		if _, dup := mi.blobs[h]; dup {
			continue // the same blob in two packs: either copy serves
		}
		mi.blobs[h] = location{pack: n, offset: b.Offset, length: b.Length, raw: b.RawLength, comp: b.Compressed}
	}
}

// Has reports whether a blob is indexed.
func (mi *MasterIndex) Has(h BlobHandle) bool {
	mi.mu.RLock()
	_, ok := mi.blobs[h]
	mi.mu.RUnlock()
	return ok
}

// Lookup returns the pack and entry of a blob.
func (mi *MasterIndex) Lookup(h BlobHandle) (ID, PackedBlob, bool) {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	l, ok := mi.blobs[h]
	if !ok {
		return ID{}, PackedBlob{}, false
	}
	return mi.packs[l.pack], PackedBlob{Type: h.Type, ID: h.ID, Compressed: l.comp, Offset: l.offset, Length: l.length, RawLength: l.raw}, true
}

// Len returns the number of indexed blobs.
func (mi *MasterIndex) Len() int {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	return len(mi.blobs)
}

// Packs returns the set of packs referenced by the index.
func (mi *MasterIndex) Packs() map[ID]bool {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	out := make(map[ID]bool, len(mi.packs))
	for _, p := range mi.packs {
		out[p] = true
	}
	return out
}

// Each calls fn for every indexed blob.
func (mi *MasterIndex) Each(fn func(pack ID, b PackedBlob)) {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	for h, l := range mi.blobs {
		fn(mi.packs[l.pack], PackedBlob{Type: h.Type, ID: h.ID, Compressed: l.comp, Offset: l.offset, Length: l.length, RawLength: l.raw})
	}
}

// IndexIDs returns the index objects loaded.
func (mi *MasterIndex) IndexIDs() []ID {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	out := make([]ID, 0, len(mi.files))
	for id := range mi.files {
		out = append(out, id)
	}
	return out
}

// LoadIndex reads every index object (from the local cache when it has a
// copy; cached copies are authenticated like downloaded ones).
func (r *Repository) LoadIndex(ctx context.Context) (*MasterIndex, error) {
	ids, err := r.listIDs(ctx, "index/")
	if err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	mi := newMasterIndex()
	files := make([]*IndexFile, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for i, id := range ids {
		g.Go(func() error {
			f, err := r.LoadIndexFile(gctx, id)
			if err != nil {
				return err
			}
			files[i] = f
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("load index: %w", err)
	}
	superseded := map[ID]bool{}
	for _, f := range files {
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	for i, f := range files {
		if superseded[ids[i]] {
			continue
		}
		mi.files[ids[i]] = true
		for _, p := range f.Packs {
			mi.addPack(p)
		}
	}
	r.pruneCache(ids)
	return mi, nil
}

// LoadIndexFile reads and decodes one index object.
func (r *Repository) LoadIndexFile(ctx context.Context, id ID) (*IndexFile, error) {
	name := "index/" + id.String()
	var sealed []byte
	cached := ""
	if r.cache != "" {
		cached = filepath.Join(r.cache, "index", id.String())
		if b, err := os.ReadFile(cached); err == nil {
			sealed = b
		}
	}
	fromCache := sealed != nil
	if !fromCache {
		var err error
		if sealed, err = readObject(ctx, r, name); err != nil {
			return nil, err
		}
	}
	plain, err := r.openObject(name, sealed)
	if err != nil && fromCache {
		// A damaged cache entry is not a damaged repository: fetch it again.
		os.Remove(cached)
		return r.LoadIndexFile(ctx, id)
	}
	if err != nil {
		return nil, err
	}
	f, err := decodeIndex(plain)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !fromCache && cached != "" {
		r.writeCache(cached, sealed)
	}
	return f, nil
}

func (r *Repository) writeCache(path string, b []byte) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		r.log.Debug("index cache write failed", "err", err)
		return
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
	}
}

// pruneCache drops cached index objects that no longer exist in the repository.
func (r *Repository) pruneCache(live []ID) {
	if r.cache == "" {
		return
	}
	keep := map[string]bool{}
	for _, id := range live {
		keep[id.String()] = true
	}
	entries, _ := os.ReadDir(filepath.Join(r.cache, "index"))
	for _, e := range entries {
		if !keep[e.Name()] {
			os.Remove(filepath.Join(r.cache, "index", e.Name()))
		}
	}
}

// saveIndexFile writes an index object; callers must only list packs that
// are completely stored.
func (r *Repository) saveIndexFile(ctx context.Context, f *IndexFile) (ID, error) {
	id := NewRandomID()
	name := "index/" + id.String()
	sealed := r.sealObject(name, encodeIndex(f))
	if err := r.store.Put(ctx, name, bytesPayload(sealed)); err != nil {
		return ID{}, fmt.Errorf("save index: %w", err)
	}
	if r.cache != "" {
		r.writeCache(filepath.Join(r.cache, "index", id.String()), sealed)
	}
	return id, nil
}
