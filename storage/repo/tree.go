package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vigilops/vigil/storage/blob"
)

// Node types.
const (
	NodeFile    = "file"
	NodeDir     = "dir"
	NodeSymlink = "symlink"
	NodeOther   = "other" // devices, fifos, sockets: metadata only
)

// ContentRef is one piece of a file: a data blob, or a run of zero bytes
// that is not stored at all (restored as a hole). In JSON a blob is its hex
// ID and a zero run is its length as a number, which keeps trees small.
type ContentRef struct {
	ID   ID
	Zero uint64
}

// MarshalJSON implements json.Marshaler.
func (c ContentRef) MarshalJSON() ([]byte, error) {
	if c.Zero > 0 {
		return []byte(strconv.FormatUint(c.Zero, 10)), nil
	}
	return []byte(`"` + c.ID.String() + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (c *ContentRef) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		id, err := ParseID(s)
		if err != nil {
			return err
		}
		*c = ContentRef{ID: id}
		return nil
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil || n == 0 {
		return fmt.Errorf("content ref %q: want a blob ID or a positive zero-run length", b)
	}
	*c = ContentRef{Zero: n}
	return nil
}

// Node is one entry of a directory tree.
type Node struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Mode       fs.FileMode `json:"mode"`
	UID        uint32      `json:"uid"`
	GID        uint32      `json:"gid"`
	User       string      `json:"user,omitempty"`
	Group      string      `json:"group,omitempty"`
	ModTime    time.Time   `json:"mtime"`
	ChangeTime time.Time   `json:"ctime"`
	Inode      uint64      `json:"inode,omitempty"`
	DeviceID   uint64      `json:"device_id,omitempty"`
	Links      uint64      `json:"links,omitempty"`
	Size       uint64      `json:"size,omitempty"`
	LinkTarget string      `json:"link_target,omitempty"`
	// Content lists the file's pieces in order. Files with very many pieces
	// keep them in ContentLists instead: tree blobs each holding a
	// contentList, so no single tree grows without bound.
	Content      []ContentRef `json:"content,omitempty"`
	ContentLists []ID         `json:"content_lists,omitempty"`
	Subtree      *ID          `json:"subtree,omitempty"`
}

// Tree is a directory listing, sorted by name.
type Tree struct {
	Nodes []*Node `json:"nodes"`
}

type contentList struct {
	Content []ContentRef `json:"content"`
}

// maxInlineContent is the most pieces kept inline in a node (~70 KiB of JSON).
const maxInlineContent = 1024

// ValidName reports whether a node name is safe to use as one path element.
func ValidName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// decodeTree parses and validates a tree: names must be single, unique path
// elements so that no entry can address anything outside its directory.
func decodeTree(b []byte) (*Tree, error) {
	var t Tree
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("decode tree: %w", err)
	}
	seen := make(map[string]bool, len(t.Nodes))
	for i, n := range t.Nodes {
		if n == nil {
			return nil, fmt.Errorf("decode tree: node %d is null", i)
		}
		if !ValidName(n.Name) {
			return nil, fmt.Errorf("decode tree: invalid entry name %q", n.Name)
		}
		if seen[n.Name] {
			return nil, fmt.Errorf("decode tree: duplicate entry %q", n.Name)
		}
		seen[n.Name] = true
		switch n.Type {
		case NodeFile, NodeDir, NodeSymlink, NodeOther:
		default:
			return nil, fmt.Errorf("decode tree: entry %q has unknown type %q", n.Name, n.Type)
		}
		if n.Type == NodeDir && n.Subtree == nil {
			return nil, fmt.Errorf("decode tree: directory %q has no subtree", n.Name)
		}
	}
	return &t, nil
}

func encodeTree(t *Tree) ([]byte, error) {
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
	return json.Marshal(t)
}

// Find returns the node with the given name.
func (t *Tree) Find(name string) *Node {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return t.Nodes[i]
	}
	return nil
}

// LoadTree reads a tree blob.
func (r *Repository) LoadTree(ctx context.Context, idx *MasterIndex, id ID) (*Tree, error) {
	b, err := r.LoadBlob(ctx, idx, BlobHandle{Type: TreeBlob, ID: id}, nil)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Short(), err)
	}
	t, err := decodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
	return t, nil
}

// FileContent returns a file node's pieces, following content lists.
func (r *Repository) FileContent(ctx context.Context, idx *MasterIndex, n *Node) ([]ContentRef, error) {
	if len(n.ContentLists) == 0 {
		return n.Content, nil
	}
	var out []ContentRef
	for _, id := range n.ContentLists {
		b, err := r.LoadBlob(ctx, idx, BlobHandle{Type: TreeBlob, ID: id}, nil)
		if err != nil {
			return nil, fmt.Errorf("content list %s of %q: %w", id.Short(), n.Name, err)
		}
		var cl contentList
		if err := json.Unmarshal(b, &cl); err != nil {
			return nil, fmt.Errorf("content list %s of %q: %w", id.Short(), n.Name, err)
		}
		out = append(out, cl.Content...)
	}
	return out, nil
}

// LoadBlob reads one blob through the index, verifying it.
func (r *Repository) LoadBlob(ctx context.Context, idx *MasterIndex, h BlobHandle, buf []byte) ([]byte, error) {
	pack, e, ok := idx.Lookup(h)
	if !ok {
		return nil, fmt.Errorf("%s blob %s is not in the index", h.Type, h.ID.Short())
	}
	rc, err := r.store.Get(ctx, packName(pack), int64(e.Offset), int64(e.Length))
	if err != nil {
		return nil, fmt.Errorf("read pack %s: %w", pack.Short(), err)
	}
	defer rc.Close()
	sealed := make([]byte, e.Length)
	if _, err := io.ReadFull(rc, sealed); err != nil {
		return nil, fmt.Errorf("read pack %s: %w", pack.Short(), err)
	}
	return r.openBlob(e, sealed, nil)
}

func readObject(ctx context.Context, r *Repository, name string) ([]byte, error) {
	b, err := blob.ReadAll(ctx, r.store, name)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return b, nil
}

// Walk calls fn for every node below tree, depth first in name order, with
// its absolute path inside the snapshot.
func (r *Repository) Walk(ctx context.Context, idx *MasterIndex, tree ID, fn func(path string, n *Node) error) error {
	return r.walk(ctx, idx, tree, "", fn)
}

func (r *Repository) walk(ctx context.Context, idx *MasterIndex, tree ID, dir string, fn func(string, *Node) error) error {
	t, err := r.LoadTree(ctx, idx, tree)
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := dir + "/" + n.Name
		if err := fn(p, n); err != nil {
			return err
		}
		if n.Type == NodeDir {
			if err := r.walk(ctx, idx, *n.Subtree, p, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
