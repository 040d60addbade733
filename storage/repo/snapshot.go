package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Snapshot is the record of one backup, stored as "snapshots/<id>". It is
// written last, after every pack and index object it depends on.
type Snapshot struct {
	Time     time.Time        `json:"time"`
	Tree     ID               `json:"tree"`
	Paths    []string         `json:"paths"`
	Hostname string           `json:"hostname"`
	Username string           `json:"username,omitempty"`
	Tags     []string         `json:"tags,omitempty"`
	Job      string           `json:"job,omitempty"`
	Parent   *ID              `json:"parent,omitempty"`
	Summary  *SnapshotSummary `json:"summary,omitempty"`

	ID ID `json:"-"`
}

// SnapshotSummary records what the backup did.
type SnapshotSummary struct {
	Start          time.Time `json:"start"`
	End            time.Time `json:"end"`
	FilesNew       int       `json:"files_new"`
	FilesChanged   int       `json:"files_changed"`
	FilesUnchanged int       `json:"files_unchanged"`
	Dirs           int       `json:"dirs"`
	Errors         int       `json:"errors"`
	BytesRead      int64     `json:"bytes_read"`
	BytesTotal     int64     `json:"bytes_total"`
	BytesNew       int64     `json:"bytes_new"`    // plaintext of new blobs
	BytesStored    int64     `json:"bytes_stored"` // after compression and encryption
	BlobsNew       int       `json:"blobs_new"`
	Chunks         int       `json:"chunks"`
}

// HasTag reports whether the snapshot carries tag.
func (s *Snapshot) HasTag(tag string) bool {
	for _, t := range s.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// LoadSnapshot reads one snapshot.
// Snapshot objects never change, so their sealed bytes are cached locally
// (and still authenticated on every load): listing a repository with years
// of nightly snapshots over S3 then costs one LIST, not one GET each.
func (r *Repository) LoadSnapshot(ctx context.Context, id ID) (*Snapshot, error) {
	name := "snapshots/" + id.String()
	var sealed []byte
	cached := ""
	if r.cache != "" {
		cached = filepath.Join(r.cache, "snapshots", id.String())
		sealed, _ = os.ReadFile(cached)
	}
	plain, err := r.openObject(name, sealed)
	if sealed == nil || err != nil {
		// Not cached, or a damaged cache entry: read the repository's copy.
		if sealed, err = readObject(ctx, r, name); err != nil {
			return nil, err
		}
		if plain, err = r.openObject(name, sealed); err != nil {
			return nil, err
		}
		if cached != "" {
			r.writeCache(cached, sealed)
		}
	}
	var sn Snapshot
	if err := json.Unmarshal(plain, &sn); err != nil {
		return nil, fmt.Errorf("load %s: decode: %w", name, err)
	}
	sn.ID = id
	return &sn, nil
}

// Snapshots loads every snapshot, oldest first. A snapshot that cannot be
// read is reported through bad and skipped, so one damaged object does not
// hide the others.
func (r *Repository) Snapshots(ctx context.Context, bad func(ID, error)) ([]*Snapshot, error) {
	ids, err := r.listIDs(ctx, "snapshots/")
	if err != nil {
		return nil, err
	}
	r.pruneCacheDir("snapshots", ids)
	var out []*Snapshot
	for _, id := range ids {
		sn, err := r.LoadSnapshot(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if bad == nil {
				return nil, err
			}
			bad(id, err)
			continue
		}
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Time.Equal(out[j].Time) {
			return out[i].ID.String() < out[j].ID.String()
		}
		return out[i].Time.Before(out[j].Time)
	})
	return out, nil
}

// ErrAmbiguous is returned for a snapshot prefix matching several snapshots.
var ErrAmbiguous = errors.New("ambiguous snapshot prefix")

// FindSnapshot resolves "latest", a full ID or a unique ID prefix.
func (r *Repository) FindSnapshot(ctx context.Context, ref string) (*Snapshot, error) {
	if ref == "" {
		return nil, fmt.Errorf("find snapshot: empty reference")
	}
	if ref == "latest" {
		sns, err := r.Snapshots(ctx, func(ID, error) {})
		if err != nil {
			return nil, err
		}
		if len(sns) == 0 {
			return nil, fmt.Errorf("find snapshot: repository has no snapshots")
		}
		return sns[len(sns)-1], nil
	}
	ids, err := r.listIDs(ctx, "snapshots/")
	if err != nil {
		return nil, err
	}
	var match []ID
	for _, id := range ids {
		if strings.HasPrefix(id.String(), strings.ToLower(ref)) {
			match = append(match, id)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("find snapshot: no snapshot %q", ref)
	case 1:
		return r.LoadSnapshot(ctx, match[0])
	}
	return nil, fmt.Errorf("find snapshot %q: %w (%d matches)", ref, ErrAmbiguous, len(match))
}

// RemoveSnapshot deletes a snapshot object; its data stays until prune.
func (r *Repository) RemoveSnapshot(ctx context.Context, id ID) error {
	if err := r.store.Delete(ctx, "snapshots/"+id.String()); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", id.Short(), err)
	}
	return nil
}
