package repo

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A pack is one stored object holding many blobs:
//
//	blob_0 || blob_1 || ... || blob_n-1 || sealed header || uint32le(len(sealed header))
//
// Each blob is nonce || AES-256-GCM(payload) with AAD "blob:" || type || blob ID,
// where payload is the plaintext, zstd-compressed when flag bit 0 is set.
// The header is sealed with AAD "object:" || pack object name and lists, in
// order, each blob's type, flags, ID, stored length and plaintext length;
// offsets follow from the lengths. The header alone lets the index be rebuilt.

const (
	packMagic       = "VGPK"
	packVersion     = 1
	packEntrySize   = 1 + 1 + 32 + 4 + 4
	packHeaderFixed = 4 + 1 + 4
	// maxHeaderEntries bounds what a corrupted header can make us allocate.
	maxHeaderEntries = 1 << 22
	flagCompressed   = 1
)

// PackedBlob is one blob's entry in a pack header or index.
type PackedBlob struct {
	Type       BlobType
	Compressed bool
	ID         ID
	Offset     uint32
	Length     uint32 // stored (sealed) length
	RawLength  uint32 // plaintext length
}

func encodePackHeader(entries []PackedBlob) []byte {
	b := make([]byte, 0, packHeaderFixed+len(entries)*packEntrySize)
	b = append(b, packMagic...)
	b = append(b, packVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	for _, e := range entries {
		b = append(b, byte(e.Type), flags(e.Compressed))
		b = append(b, e.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.RawLength)
	}
	return b
}

func flags(compressed bool) byte {
	if compressed {
		return flagCompressed
	}
	return 0
}

var errBadHeader = errors.New("malformed pack header")

// decodePackHeader parses a decrypted header; dataLen is the number of bytes
// before the sealed header, which the blobs must exactly fill.
func decodePackHeader(b []byte, dataLen int64) ([]PackedBlob, error) {
	if len(b) < packHeaderFixed || string(b[:4]) != packMagic {
		return nil, fmt.Errorf("%w: bad magic", errBadHeader)
	}
	if b[4] != packVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", errBadHeader, b[4])
	}
	n := binary.LittleEndian.Uint32(b[5:9])
	if n > maxHeaderEntries || int64(len(b)-packHeaderFixed) != int64(n)*packEntrySize {
		return nil, fmt.Errorf("%w: %d entries do not match %d bytes", errBadHeader, n, len(b))
	}
	out := make([]PackedBlob, n)
	var off int64
	p := b[packHeaderFixed:]
	for i := range out {
		e := &out[i]
		e.Type = BlobType(p[0])
		if e.Type != DataBlob && e.Type != TreeBlob {
			return nil, fmt.Errorf("%w: entry %d has unknown type %d", errBadHeader, i, p[0])
		}
		if p[1]&^flagCompressed != 0 {
			return nil, fmt.Errorf("%w: entry %d has unknown flags %#x", errBadHeader, i, p[1])
		}
		e.Compressed = p[1]&flagCompressed != 0
		copy(e.ID[:], p[2:34])
		e.Length = binary.LittleEndian.Uint32(p[34:38])
		e.RawLength = binary.LittleEndian.Uint32(p[38:42])
		if e.Length < Overhead {
			return nil, fmt.Errorf("%w: entry %d is shorter than its encryption overhead", errBadHeader, i)
		}
		e.Offset = uint32(off)
		off += int64(e.Length)
		if off > dataLen || off > 1<<32-1 {
			return nil, fmt.Errorf("%w: entry %d ends past the blob area", errBadHeader, i)
		}
		p = p[packEntrySize:]
	}
	if off != dataLen {
		return nil, fmt.Errorf("%w: blobs cover %d of %d bytes", errBadHeader, off, dataLen)
	}
	return out, nil
}

// packBuilder accumulates sealed blobs for one pack in memory.
type packBuilder struct {
	id      ID
	typ     BlobType
	buf     []byte
	entries []PackedBlob
}

// newPackBuilder starts a pack; the caller may swap in a reused buffer.
// Tree packs are often tiny, so they start small and grow.
func newPackBuilder(t BlobType) *packBuilder {
	return &packBuilder{id: NewRandomID(), typ: t, buf: make([]byte, 0, 256<<10)}
}

func (p *packBuilder) add(e PackedBlob, sealed []byte) {
	e.Offset = uint32(len(p.buf))
	e.Length = uint32(len(sealed))
	p.buf = append(p.buf, sealed...)
	p.entries = append(p.entries, e)
}

// finish appends the sealed header and its length, returning the whole pack.
func (p *packBuilder) finish(k *MasterKey) []byte {
	sealed := k.Seal(nil, encodePackHeader(p.entries), objectAAD(packName(p.id)))
	p.buf = append(p.buf, sealed...)
	return binary.LittleEndian.AppendUint32(p.buf, uint32(len(sealed)))
}

// parsePack authenticates the header at the end of a complete pack.
func parsePack(k *MasterKey, id ID, pack []byte) ([]PackedBlob, error) {
	if len(pack) < 4 {
		return nil, fmt.Errorf("pack %s: %w: %d bytes", id.Short(), errBadHeader, len(pack))
	}
	hl := int64(binary.LittleEndian.Uint32(pack[len(pack)-4:]))
	if hl > int64(len(pack))-4 || hl < Overhead {
		return nil, fmt.Errorf("pack %s: %w: header length %d", id.Short(), errBadHeader, hl)
	}
	start := int64(len(pack)) - 4 - hl
	plain, err := k.Open(nil, pack[start:len(pack)-4], objectAAD(packName(id)))
	if err != nil {
		return nil, fmt.Errorf("pack %s header: %w", id.Short(), err)
	}
	entries, err := decodePackHeader(plain, start)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", id.Short(), err)
	}
	return entries, nil
}

// scratch holds reusable buffers for opening blobs; readers of many blobs
// keep one per goroutine so that verification allocates nothing per blob.
type scratch struct {
	plain, out []byte
}

// openBlob authenticates, decrypts and decompresses one stored blob and
// checks that its plaintext hashes to the expected ID. With a scratch the
// result lives in its buffers and is valid until the next call.
func (r *Repository) openBlob(e PackedBlob, sealed []byte, s *scratch) ([]byte, error) {
	if s == nil {
		s = &scratch{}
	}
	plain, err := r.key.Open(s.plain[:0], sealed, blobAAD(e.Type, e.ID))
	if err != nil {
		return nil, fmt.Errorf("%s blob %s: %w", e.Type, e.ID.Short(), err)
	}
	s.plain = plain
	if e.Compressed {
		if cap(s.out) < int(e.RawLength) {
			s.out = make([]byte, 0, e.RawLength)
		}
		out, err := zDec.DecodeAll(plain, s.out[:0])
		if err != nil {
			return nil, fmt.Errorf("%s blob %s: decompress: %w", e.Type, e.ID.Short(), err)
		}
		s.out = out
		plain = out
	}
	if uint32(len(plain)) != e.RawLength {
		return nil, fmt.Errorf("%s blob %s: length %d, index says %d: %w", e.Type, e.ID.Short(), len(plain), e.RawLength, ErrAuth)
	}
	if r.key.BlobID(plain) != e.ID {
		return nil, fmt.Errorf("%s blob %s: content hash mismatch: %w", e.Type, e.ID.Short(), ErrAuth)
	}
	return plain, nil
}
