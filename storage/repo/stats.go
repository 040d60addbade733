package repo

import (
	"context"
	"fmt"
	"strings"

	"github.com/vigilops/vigil/storage/blob"
)

// Stats summarises the repository's size and deduplication.
type Stats struct {
	Snapshots   int   `json:"snapshots"`
	Packs       int   `json:"packs"`
	PackBytes   int64 `json:"pack_bytes"`
	Blobs       int   `json:"blobs"`
	DataBlobs   int   `json:"data_blobs"`
	TreeBlobs   int   `json:"tree_blobs"`
	RawBytes    int64 `json:"raw_bytes"`    // unique plaintext
	StoredBytes int64 `json:"stored_bytes"` // after compression and encryption
	// RestoreBytes is what restoring every snapshot would write.
	RestoreBytes int64 `json:"restore_bytes"`
}

// Stats computes repository statistics.
func (r *Repository) Stats(ctx context.Context) (*Stats, error) {
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	defer idx.Close()
	st := &Stats{}
	idx.Each(func(_ ID, b PackedBlob) {
		st.Blobs++
		st.RawBytes += int64(b.RawLength)
		st.StoredBytes += int64(b.Length)
		if b.Type == DataBlob {
			st.DataBlobs++
		} else {
			st.TreeBlobs++
		}
	})
	if err := r.store.List(ctx, "data/", func(i blob.Info) error {
		if !strings.Contains(i.Name, "/.") {
			st.Packs++
			st.PackBytes += i.Size
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	sns, err := r.Snapshots(ctx, func(ID, error) {})
	if err != nil {
		return nil, fmt.Errorf("stats: %w", err)
	}
	st.Snapshots = len(sns)
	for _, s := range sns {
		if s.Summary != nil {
			st.RestoreBytes += s.Summary.BytesTotal
		}
	}
	return st, nil
}
