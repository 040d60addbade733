package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

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
	indexFlushBlobs = 25_000
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

// MasterIndex is the union of all index objects. It does not keep every
// entry in memory: full entries (52 bytes each) go to an unlinked temporary
// file, normally in the page cache, and memory holds only an open-addressing
// table of 8-byte ID prefixes and record numbers (about 16 bytes per blob).
// A prefix match is confirmed by reading the full record, so a lookup never
// trusts a truncated hash. Without a usable temporary file the records stay
// in memory, which is correct but larger.
type MasterIndex struct {
	mu      sync.RWMutex
	packs   []ID
	packNum map[ID]uint32
	files   map[ID]bool // index objects loaded

	keys []uint64 // ID prefix (0 = empty slot)
	vals []uint32 // record number + 1
	n    int

	f       *os.File // records [0, flushed) live here
	flushed int
	tail    []byte // records from flushed on, not yet written
	memOnly bool   // the file stopped accepting writes
	err     atomic.Pointer[error]
}

// Err reports a failure of the index's temporary file, if any.
func (mi *MasterIndex) Err() error {
	if e := mi.err.Load(); e != nil {
		return *e
	}
	return nil
}

const (
	recSize       = 52
	recTailFlush  = 256 << 10
	initTableSize = 1 << 12
)

func newMasterIndex(dir string) *MasterIndex {
	mi := &MasterIndex{packNum: map[ID]uint32{}, files: map[ID]bool{},
		keys: make([]uint64, initTableSize), vals: make([]uint32, initTableSize)}
	if dir == "" {
		dir = os.TempDir()
	}
	if f, err := os.CreateTemp(dir, ".vigil-index-*"); err == nil {
		// Unlinked at once: the space is freed however the process ends.
		os.Remove(f.Name())
		mi.f = f
	}
	return mi
}

// Close releases the index's temporary file.
func (mi *MasterIndex) Close() error {
	mi.mu.Lock()
	defer mi.mu.Unlock()
	if mi.f == nil {
		return nil
	}
	err := mi.f.Close()
	mi.f = nil
	// Keep records readable after Close by moving nothing: callers must not
	// use a closed index; an empty table makes misuse visible.
	mi.keys, mi.vals, mi.n, mi.tail, mi.flushed = make([]uint64, initTableSize), make([]uint32, initTableSize), 0, nil, 0
	return err
}

func slotKey(h BlobHandle) uint64 {
	k := binary.LittleEndian.Uint64(h.ID[:8]) ^ uint64(h.Type)<<56
	if k == 0 {
		k = 1
	}
	return k
}

type record struct {
	h    BlobHandle
	pack uint32
	e    PackedBlob
}

func encodeRecord(b []byte, h BlobHandle, pack uint32, e PackedBlob) []byte {
	b = append(b, h.ID[:]...)
	b = append(b, byte(h.Type), flags(e.Compressed), 0, 0)
	b = binary.LittleEndian.AppendUint32(b, pack)
	b = binary.LittleEndian.AppendUint32(b, e.Offset)
	b = binary.LittleEndian.AppendUint32(b, e.Length)
	return binary.LittleEndian.AppendUint32(b, e.RawLength)
}

func decodeRecord(b []byte) record {
	var r record
	copy(r.h.ID[:], b[:32])
	r.h.Type = BlobType(b[32])
	r.e = PackedBlob{Type: r.h.Type, ID: r.h.ID, Compressed: b[33]&flagCompressed != 0,
		Offset: binary.LittleEndian.Uint32(b[40:44]), Length: binary.LittleEndian.Uint32(b[44:48]),
		RawLength: binary.LittleEndian.Uint32(b[48:52])}
	r.pack = binary.LittleEndian.Uint32(b[36:40])
	return r
}

// readRecord returns record i; the caller holds mi.mu.
func (mi *MasterIndex) readRecord(i int) (record, error) {
	if i >= mi.flushed {
		off := (i - mi.flushed) * recSize
		return decodeRecord(mi.tail[off : off+recSize]), nil
	}
	var buf [recSize]byte
	if _, err := mi.f.ReadAt(buf[:], int64(i)*recSize); err != nil {
		return record{}, fmt.Errorf("index record %d: %w", i, err)
	}
	return decodeRecord(buf[:]), nil
}

// find returns the slot holding h, or the empty slot where it belongs.
func (mi *MasterIndex) find(h BlobHandle) (slot int, rec record, found bool) {
	key := slotKey(h)
	mask := len(mi.keys) - 1
	for i := int(key) & mask; ; i = (i + 1) & mask {
		switch mi.keys[i] {
		case 0:
			return i, record{}, false
		case key:
			r, err := mi.readRecord(int(mi.vals[i] - 1))
			if err != nil {
				// The temporary file failed (EIO): report "not indexed".
				// A backup then stores the blob again (harmless); a restore
				// reports the blob missing instead of writing wrong data.
				mi.err.CompareAndSwap(nil, &err)
				return i, record{}, false
			}
			if r.h == h {
				return i, r, true
			}
		}
	}
}

func (mi *MasterIndex) grow() {
	keys, vals := mi.keys, mi.vals
	mi.keys = make([]uint64, 2*len(keys))
	mi.vals = make([]uint32, 2*len(vals))
	mask := len(mi.keys) - 1
	for i, k := range keys {
		if k == 0 {
			continue
		}
		j := int(k) & mask
		for mi.keys[j] != 0 {
			j = (j + 1) & mask
		}
		mi.keys[j], mi.vals[j] = k, vals[i]
	}
}

func (mi *MasterIndex) appendRecord(h BlobHandle, pack uint32, e PackedBlob) {
	mi.tail = encodeRecord(mi.tail, h, pack, e)
	if mi.f != nil && !mi.memOnly && len(mi.tail) >= recTailFlush {
		if _, err := mi.f.WriteAt(mi.tail, int64(mi.flushed)*recSize); err == nil {
			mi.flushed += len(mi.tail) / recSize
			mi.tail = mi.tail[:0]
		} else {
			// Disk full or similar: records written so far stay readable
			// in the file; new ones stay in memory.
			mi.memOnly = true
		}
	}
}

func (mi *MasterIndex) total() int { return mi.flushed + len(mi.tail)/recSize }

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
		slot, _, dup := mi.find(h)
		if dup {
			continue // the same blob in two packs: either copy serves
		}
		mi.keys[slot] = slotKey(h)
		mi.vals[slot] = uint32(mi.total() + 1)
		mi.appendRecord(h, n, b)
		mi.n++
		if mi.n*4 >= len(mi.keys)*3 {
			mi.grow()
		}
	}
}

// Has reports whether a blob is indexed.
func (mi *MasterIndex) Has(h BlobHandle) bool {
	mi.mu.RLock()
	_, _, ok := mi.find(h)
	mi.mu.RUnlock()
	return ok
}

// Lookup returns the pack and entry of a blob.
func (mi *MasterIndex) Lookup(h BlobHandle) (ID, PackedBlob, bool) {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	_, r, ok := mi.find(h)
	if !ok {
		return ID{}, PackedBlob{}, false
	}
	return mi.packs[r.pack], r.e, true
}

// Len returns the number of indexed blobs.
func (mi *MasterIndex) Len() int {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	return mi.n
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

// Each calls fn for every indexed blob, reading the records sequentially.
func (mi *MasterIndex) Each(fn func(pack ID, b PackedBlob)) {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	buf := make([]byte, 4096*recSize)
	for i := 0; i < mi.flushed; {
		k := min(4096, mi.flushed-i)
		if _, err := mi.f.ReadAt(buf[:k*recSize], int64(i)*recSize); err != nil {
			err = fmt.Errorf("index records: %w", err)
			mi.err.CompareAndSwap(nil, &err)
			return
		}
		for j := 0; j < k; j++ {
			r := decodeRecord(buf[j*recSize:])
			fn(mi.packs[r.pack], r.e)
		}
		i += k
	}
	for off := 0; off < len(mi.tail); off += recSize {
		r := decodeRecord(mi.tail[off:])
		fn(mi.packs[r.pack], r.e)
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
// copy; cached copies are authenticated like downloaded ones). Any damaged
// index object is an error: writers and prune must see the whole index.
func (r *Repository) LoadIndex(ctx context.Context) (*MasterIndex, error) {
	mi, damaged, err := r.loadIndex(ctx)
	if err != nil {
		return nil, err
	}
	if len(damaged) > 0 {
		mi.Close()
		return nil, fmt.Errorf("load index: %w (run vigil repair index)", damaged[0])
	}
	return mi, nil
}

// LoadIndexTolerant is LoadIndex for readers (restore, ls): damaged index
// objects are skipped and returned, so everything else stays readable; the
// blobs they listed appear missing.
func (r *Repository) LoadIndexTolerant(ctx context.Context) (*MasterIndex, []error, error) {
	return r.loadIndex(ctx)
}

func (r *Repository) loadIndex(ctx context.Context) (*MasterIndex, []error, error) {
	ids, err := r.listIDs(ctx, "index/")
	if err != nil {
		return nil, nil, fmt.Errorf("load index: %w", err)
	}
	mi := newMasterIndex(r.cache)
	files := make([]*IndexFile, len(ids))
	errs := make([]error, len(ids))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for i, id := range ids {
		g.Go(func() error {
			f, err := r.LoadIndexFile(gctx, id)
			if err != nil {
				if gctx.Err() != nil || !errors.Is(err, ErrAuth) && !errors.Is(err, errBadIndex) {
					return err
				}
				errs[i] = fmt.Errorf("index %s is damaged: %w", id.Short(), err)
				return nil
			}
			files[i] = f
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		mi.Close()
		return nil, nil, fmt.Errorf("load index: %w", err)
	}
	var damaged []error
	for _, e := range errs {
		if e != nil {
			damaged = append(damaged, e)
			r.log.Warn("skipping damaged index object", "err", e)
		}
	}
	superseded := map[ID]bool{}
	for _, f := range files {
		if f == nil {
			continue
		}
		for _, s := range f.Supersedes {
			superseded[s] = true
		}
	}
	for i, f := range files {
		if f == nil || superseded[ids[i]] {
			continue
		}
		mi.files[ids[i]] = true
		for _, p := range f.Packs {
			mi.addPack(p)
		}
	}
	r.pruneCache(ids)
	return mi, damaged, nil
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
func (r *Repository) pruneCache(live []ID) { r.pruneCacheDir("index", live) }

func (r *Repository) pruneCacheDir(dir string, live []ID) {
	if r.cache == "" {
		return
	}
	keep := map[string]bool{}
	for _, id := range live {
		keep[id.String()] = true
	}
	entries, _ := os.ReadDir(filepath.Join(r.cache, dir))
	for _, e := range entries {
		if !keep[e.Name()] {
			os.Remove(filepath.Join(r.cache, dir, e.Name()))
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
