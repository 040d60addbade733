package configexport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/vigilops/vigil/storage/repo"
)

// History reads a job's exports back from the repository: the versions of
// a target, their content, and which run wrote them. Trees are cached by
// ID; since unchanged exports reuse their trees, reading a long history
// costs about one tree per change.
type History struct {
	r     *repo.Repository
	idx   *repo.MasterIndex
	job   string
	snaps []*repo.Snapshot // this job's snapshots, oldest first
	trees map[repo.ID]*repo.Tree
}

// Version is one stored export of a target.
type Version struct {
	Snapshot repo.ID   `json:"snapshot"`
	Time     time.Time `json:"time"`
	RunID    int64     `json:"run_id,omitempty"`
	File     string    `json:"file"`
	Size     uint64    `json:"size"`
	// Changed is true when the content differs from the version before it
	// (always true for the first).
	Changed bool       `json:"changed"`
	Node    *repo.Node `json:"-"`
}

// OpenHistory loads the job's snapshot list. idx must stay open while the
// History is used.
func OpenHistory(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, job string) (*History, error) {
	all, err := r.Snapshots(ctx, func(repo.ID, error) {})
	if err != nil {
		return nil, fmt.Errorf("config history: %w", err)
	}
	h := &History{r: r, idx: idx, job: job, trees: map[repo.ID]*repo.Tree{}}
	for _, sn := range all {
		if sn.Job == job && sn.HasTag(Tag) {
			h.snaps = append(h.snaps, sn)
		}
	}
	return h, nil
}

// Snapshots returns the job's snapshots, oldest first.
func (h *History) Snapshots() []*repo.Snapshot { return h.snaps }

// LastSnapshot is the job's newest snapshot, or nil.
func (h *History) LastSnapshot() *repo.Snapshot {
	if len(h.snaps) == 0 {
		return nil
	}
	return h.snaps[len(h.snaps)-1]
}

// RunID returns the run that wrote sn (0 if unknown).
func RunID(sn *repo.Snapshot) int64 {
	for _, t := range sn.Tags {
		if v, ok := strings.CutPrefix(t, "run:"); ok {
			if id, err := strconv.ParseInt(v, 10, 64); err == nil {
				return id
			}
		}
	}
	return 0
}

func (h *History) tree(ctx context.Context, id repo.ID) (*repo.Tree, error) {
	if t, ok := h.trees[id]; ok {
		return t, nil
	}
	t, err := h.r.LoadTree(ctx, h.idx, id)
	if err != nil {
		return nil, err
	}
	h.trees[id] = t
	return t, nil
}

// dirs returns sn's /configs directory node and its per-target nodes.
func (h *History) dirs(ctx context.Context, sn *repo.Snapshot) (*repo.Node, map[string]*repo.Node, error) {
	root, err := h.tree(ctx, sn.Tree)
	if err != nil {
		return nil, nil, err
	}
	n := root.Find("configs")
	if n == nil || n.Type != repo.NodeDir || n.Subtree == nil {
		return nil, nil, nil
	}
	t, err := h.tree(ctx, *n.Subtree)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]*repo.Node{}
	for _, c := range t.Nodes {
		if c.Type == repo.NodeDir && c.Subtree != nil {
			out[c.Name] = c
		}
	}
	return n, out, nil
}

// in returns the target's file node in sn, or nil when sn does not hold it.
func (h *History) in(ctx context.Context, sn *repo.Snapshot, target string) (*repo.Node, error) {
	t, err := h.tree(ctx, sn.Tree)
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"configs", target} {
		n := t.Find(name)
		if n == nil || n.Type != repo.NodeDir || n.Subtree == nil {
			return nil, nil
		}
		if t, err = h.tree(ctx, *n.Subtree); err != nil {
			return nil, err
		}
	}
	for _, n := range t.Nodes {
		if n.Type == repo.NodeFile {
			return n, nil
		}
	}
	return nil, nil
}

func (h *History) version(sn *repo.Snapshot, n *repo.Node) *Version {
	return &Version{Snapshot: sn.ID, Time: sn.Time, RunID: RunID(sn), File: n.Name, Size: n.Size, Node: n}
}

// Latest is the newest stored version of target, or nil.
func (h *History) Latest(ctx context.Context, target string) (*Version, error) {
	for i := len(h.snaps) - 1; i >= 0; i-- {
		n, err := h.in(ctx, h.snaps[i], target)
		if err != nil {
			return nil, fmt.Errorf("config history %s: %w", target, err)
		}
		if n != nil {
			return h.version(h.snaps[i], n), nil
		}
	}
	return nil, nil
}

// Versions lists every snapshot holding target, oldest first, with
// Changed set where the content differs from the one before.
func (h *History) Versions(ctx context.Context, target string) ([]Version, error) {
	var out []Version
	var last string
	for _, sn := range h.snaps {
		n, err := h.in(ctx, sn, target)
		if err != nil {
			return nil, fmt.Errorf("config history %s: %w", target, err)
		}
		if n == nil {
			continue
		}
		v := h.version(sn, n)
		key := contentKey(n)
		v.Changed = len(out) == 0 || key != last
		last = key
		out = append(out, *v)
	}
	return out, nil
}

// contentKey identifies a file's content: equal content chunks to equal
// blobs, so equal keys mean equal bytes.
func contentKey(n *repo.Node) string {
	var b strings.Builder
	for _, c := range n.Content {
		b.WriteString(c.ID.String())
		b.WriteString(strconv.FormatUint(c.Zero, 10))
	}
	for _, id := range n.ContentLists {
		b.WriteString(id.String())
	}
	return b.String()
}

// Find resolves a reference to one of the job's snapshots: a run ID
// (digits), "latest", or a snapshot ID prefix.
func (h *History) Find(ref string) (*repo.Snapshot, error) {
	if ref == "latest" {
		if sn := h.LastSnapshot(); sn != nil {
			return sn, nil
		}
		return nil, fmt.Errorf("job %s has no config exports yet", h.job)
	}
	if id, err := strconv.ParseInt(ref, 10, 64); err == nil && len(ref) < 12 {
		for _, sn := range h.snaps {
			if RunID(sn) == id {
				return sn, nil
			}
		}
		return nil, fmt.Errorf("run %d of job %s stored no config export", id, h.job)
	}
	var match []*repo.Snapshot
	for _, sn := range h.snaps {
		if strings.HasPrefix(sn.ID.String(), strings.ToLower(ref)) {
			match = append(match, sn)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("no config export snapshot %q in job %s", ref, h.job)
	case 1:
		return match[0], nil
	}
	return nil, fmt.Errorf("snapshot prefix %q: %w", ref, repo.ErrAmbiguous)
}

// At returns target's version stored in sn, or an error saying it is not
// there (that run failed to export it).
func (h *History) At(ctx context.Context, sn *repo.Snapshot, target string) (*Version, error) {
	n, err := h.in(ctx, sn, target)
	if err != nil {
		return nil, fmt.Errorf("config history %s: %w", target, err)
	}
	if n == nil {
		return nil, fmt.Errorf("%w: %s in snapshot %s", ErrNoVersion, target, sn.ID.Short())
	}
	return h.version(sn, n), nil
}

// ErrNoVersion means a snapshot holds no export of the target.
var ErrNoVersion = errors.New("no export of this target")

// maxRead bounds what Read loads; exports are cut far below it.
const maxRead = 1 << 30

// Read returns the stored bytes of v.
func (h *History) Read(ctx context.Context, v *Version) ([]byte, error) {
	if v.Node.Size > maxRead {
		return nil, fmt.Errorf("read %s: %d bytes is more than an export can be", v.File, v.Node.Size)
	}
	refs, err := h.r.FileContent(ctx, h.idx, v.Node)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", v.File, err)
	}
	var buf bytes.Buffer
	buf.Grow(int(v.Node.Size))
	for _, c := range refs {
		if c.Zero > 0 {
			buf.Write(make([]byte, c.Zero))
			continue
		}
		b, err := h.r.LoadBlob(ctx, h.idx, repo.BlobHandle{Type: repo.DataBlob, ID: c.ID}, nil)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", v.File, err)
		}
		buf.Write(b)
	}
	if uint64(buf.Len()) != v.Node.Size {
		return nil, fmt.Errorf("read %s: got %d bytes, the tree says %d", v.File, buf.Len(), v.Node.Size)
	}
	return buf.Bytes(), nil
}
