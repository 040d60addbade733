package repo

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// ID names a blob (keyed hash of its plaintext) or an object (random).
type ID [32]byte

// String returns the lower-case hex form.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 8 hex digits, for display.
func (id ID) Short() string { return hex.EncodeToString(id[:4]) }

// IsNull reports whether id is the zero ID.
func (id ID) IsNull() bool { return id == ID{} }

// MarshalText encodes the ID as hex.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes a hex ID.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseID decodes a 64-digit hex ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 64 {
		return id, fmt.Errorf("invalid id %q: want 64 hex digits", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid id %q: %w", s, err)
	}
	return id, nil
}

// NewRandomID returns a random ID for objects that are not content-addressed.
func NewRandomID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return id
}

// BlobType separates file content from metadata so that metadata packs can
// be read without touching data packs.
type BlobType uint8

const (
	DataBlob BlobType = 1
	TreeBlob BlobType = 2
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// BlobHandle identifies a blob: type and content ID.
type BlobHandle struct {
	Type BlobType
	ID   ID
}
