package vmbackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/vigilops/vigil/storage/repo"
)

// Manifest is vm.json, stored with every VM backup. It is what the next
// night's incremental starts from (per-disk change IDs) and what a restore
// reads, so the chain depends on nothing outside the repository.
type Manifest struct {
	Version       int        `json:"version"`
	Name          string     `json:"name"`
	InstanceUUID  string     `json:"instance_uuid"`
	BIOSUUID      string     `json:"bios_uuid,omitempty"`
	InventoryPath string     `json:"inventory_path"`
	Datacenter    string     `json:"datacenter"`
	ResourcePool  string     `json:"resource_pool,omitempty"` // inventory path
	VMX           string     `json:"vmx"`
	GuestID       string     `json:"guest_id,omitempty"`
	NumCPU        int32      `json:"num_cpu,omitempty"`
	MemoryMB      int32      `json:"memory_mb,omitempty"`
	Firmware      string     `json:"firmware,omitempty"`
	PowerState    string     `json:"power_state"`
	Template      bool       `json:"template,omitempty"`
	Consistency   string     `json:"consistency"` // quiesced, crash-consistent, powered-off
	Snapshot      string     `json:"snapshot,omitempty"`
	Time          time.Time  `json:"time"`
	Job           string     `json:"job"`
	RunID         int64      `json:"run_id,omitempty"`
	Disks         []DiskBack `json:"disks"`
	Networks      []string   `json:"networks,omitempty"`
	Files         []string   `json:"files"` // other files stored beside it
}

// DiskBack is one disk's record in the manifest.
type DiskBack struct {
	Disk
	Image       string `json:"image"`         // path inside the repository snapshot
	Read        string `json:"read"`          // "full" or "changed"
	Why         string `json:"why,omitempty"` // why a full read
	BytesRead   int64  `json:"bytes_read"`    // segments read and chunked
	BytesReused int64  `json:"bytes_reused"`
	Fetched     int64  `json:"bytes_fetched"` // bytes over the network
	Changed     int64  `json:"bytes_changed,omitempty"`
	// Skipped is what the transport reported as zeros (holes of a thin
	// disk, through NBD block status) and so was not fetched.
	Skipped int64 `json:"bytes_zero_skipped,omitempty"`
}

const manifestVersion = 1

// Snapshot tags: every VM backup has TagVM, and TagUUID+instance UUID so a
// renamed VM keeps its chain.
const (
	TagVM   = "vmbackup"
	tagUUID = "vm-uuid:"
)

// vmDir is the VM's directory inside a repository snapshot.
func vmDir(name string) string { return "/vms/" + safeName(name) }

// safeName turns a VM name into one valid path element.
func safeName(name string) string {
	r := strings.NewReplacer("/", "%2F", "\x00", "", "%", "%25")
	s := r.Replace(name)
	if s == "" || s == "." || s == ".." {
		s = "vm-" + s
	}
	return s
}

// previous finds the newest snapshot of the VM with this instance UUID
// and its manifest. It returns nils when there is none.
func previous(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, uuid string) (*repo.Snapshot, *Manifest, error) {
	sns, err := r.Snapshots(ctx, func(repo.ID, error) {})
	if err != nil {
		return nil, nil, fmt.Errorf("find last backup: %w", err)
	}
	for i := len(sns) - 1; i >= 0; i-- {
		sn := sns[i]
		if !sn.HasTag(tagUUID + uuid) {
			continue
		}
		m, _, err := LoadManifest(ctx, r, idx, sn, "")
		if err != nil {
			// A damaged snapshot must not stop tonight's backup: read it all.
			return nil, nil, fmt.Errorf("find last backup: snapshot %s: %w", sn.ID.Short(), err)
		}
		return sn, m, nil
	}
	return nil, nil, nil
}

// LoadManifest reads vm.json of the VM named name (any VM when name is
// "") from a snapshot, and returns its directory in the snapshot.
func LoadManifest(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, sn *repo.Snapshot, name string) (*Manifest, string, error) {
	root, err := r.LoadTree(ctx, idx, sn.Tree)
	if err != nil {
		return nil, "", err
	}
	vms := root.Find("vms")
	if vms == nil || vms.Subtree == nil {
		return nil, "", fmt.Errorf("snapshot %s holds no VM backup", sn.ID.Short())
	}
	t, err := r.LoadTree(ctx, idx, *vms.Subtree)
	if err != nil {
		return nil, "", err
	}
	for _, d := range t.Nodes {
		if d.Subtree == nil || (name != "" && d.Name != safeName(name)) {
			continue
		}
		dt, err := r.LoadTree(ctx, idx, *d.Subtree)
		if err != nil {
			return nil, "", err
		}
		n := dt.Find("vm.json")
		if n == nil {
			continue
		}
		b, err := ReadFile(ctx, r, idx, n, 16<<20)
		if err != nil {
			return nil, "", err
		}
		var m Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, "", fmt.Errorf("%s/vm.json: %w", d.Name, err)
		}
		return &m, "/vms/" + d.Name, nil
	}
	if name != "" {
		return nil, "", fmt.Errorf("snapshot %s: %w: no backup of VM %q in it", sn.ID.Short(), ErrNoBackup, name)
	}
	return nil, "", fmt.Errorf("snapshot %s holds no vm.json", sn.ID.Short())
}

// ErrNoBackup: the repository has no backup of the VM asked for.
var ErrNoBackup = errors.New("no backup found")

// nodeAt finds the node at an absolute path inside a snapshot.
func nodeAt(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, sn *repo.Snapshot, p string) (*repo.Node, error) {
	tree := sn.Tree
	parts := strings.Split(strings.TrimPrefix(path.Clean(p), "/"), "/")
	for i, part := range parts {
		t, err := r.LoadTree(ctx, idx, tree)
		if err != nil {
			return nil, err
		}
		n := t.Find(part)
		if n == nil {
			return nil, fmt.Errorf("%s: not in snapshot %s", p, sn.ID.Short())
		}
		if i == len(parts)-1 {
			return n, nil
		}
		if n.Subtree == nil {
			return nil, fmt.Errorf("%s: %s is not a directory", p, part)
		}
		tree = *n.Subtree
	}
	return nil, fmt.Errorf("%s: empty path", p)
}

// ReadFile returns a small file's bytes from the repository.
func ReadFile(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, n *repo.Node, limit int64) ([]byte, error) {
	if int64(n.Size) > limit {
		return nil, fmt.Errorf("%s: %d bytes is more than expected (%d)", n.Name, n.Size, limit)
	}
	content, err := r.FileContent(ctx, idx, n)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, n.Size)
	for _, c := range content {
		if c.Zero > 0 {
			out = append(out, make([]byte, c.Zero)...)
			continue
		}
		b, err := r.LoadBlob(ctx, idx, repo.BlobHandle{Type: repo.DataBlob, ID: c.ID}, nil)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", n.Name, err)
		}
		out = append(out, b...)
	}
	if int64(len(out)) != int64(n.Size) {
		return nil, fmt.Errorf("read %s: got %d bytes, node says %d", n.Name, len(out), n.Size)
	}
	return out, nil
}
