package configexport

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"gopkg.in/yaml.v3"

	"github.com/vigilops/vigil/configs"
)

// VCenterSource exports vCenter's inventory: VMs, hosts, clusters,
// datastores and networks, sorted so that a diff shows real changes only.
type VCenterSource struct {
	URL      string         `yaml:"url"`
	User     string         `yaml:"user"`
	Password configs.Secret `yaml:"password"`
	// CAFile trusts a private CA; Thumbprint pins vCenter's certificate
	// (SHA-256 or SHA-1, hex with or without colons); Insecure skips
	// verification (test labs only).
	CAFile     string `yaml:"ca_file"`
	Thumbprint string `yaml:"thumbprint"`
	Insecure   bool   `yaml:"insecure"`
	// Format is yaml (default) or json.
	Format string `yaml:"format"`
}

func (v VCenterSource) isZero() bool { return v.URL == "" && v.User == "" }

type vcenterSource struct {
	v          VCenterSource
	u          *url.URL
	thumbprint string
}

func newVCenter(v VCenterSource) (source, error) {
	u, err := soap.ParseURL(v.URL)
	if err != nil || u == nil || u.Host == "" {
		return nil, fmt.Errorf("url %q: want https://vcenter.example.org", v.URL)
	}
	if v.User == "" || !v.Password.IsSet() {
		return nil, errors.New("user and password (or password_file) are required")
	}
	switch v.Format {
	case "":
		v.Format = "yaml"
	case "yaml", "json":
	default:
		return nil, fmt.Errorf("format must be yaml or json, got %q", v.Format)
	}
	s := &vcenterSource{v: v, u: u}
	if v.Thumbprint != "" {
		raw := strings.ReplaceAll(v.Thumbprint, ":", "")
		b, err := hex.DecodeString(raw)
		if err != nil || (len(b) != 32 && len(b) != 20) {
			return nil, errors.New("thumbprint: want a SHA-256 or SHA-1 certificate fingerprint in hex")
		}
		parts := make([]string, len(b))
		for i, x := range b {
			parts[i] = fmt.Sprintf("%02X", x)
		}
		s.thumbprint = strings.Join(parts, ":")
	}
	if v.Insecure && (v.Thumbprint != "" || v.CAFile != "") {
		return nil, errors.New("insecure cannot be combined with thumbprint or ca_file")
	}
	return s, nil
}

// Inventory is the exported document. Field order is the output order.
type Inventory struct {
	Clusters   []ClusterInfo   `json:"clusters" yaml:"clusters"`
	Hosts      []HostInfo      `json:"hosts" yaml:"hosts"`
	Datastores []DatastoreInfo `json:"datastores" yaml:"datastores"`
	Networks   []NetworkInfo   `json:"networks" yaml:"networks"`
	VMs        []VMInfo        `json:"vms" yaml:"vms"`
}

// ClusterInfo is one cluster.
type ClusterInfo struct {
	Name  string   `json:"name" yaml:"name"`
	Hosts []string `json:"hosts" yaml:"hosts"`
	DRS   bool     `json:"drs" yaml:"drs"`
	HA    bool     `json:"ha" yaml:"ha"`
}

// HostInfo is one ESXi host.
type HostInfo struct {
	Name    string `json:"name" yaml:"name"`
	Cluster string `json:"cluster,omitempty" yaml:"cluster,omitempty"`
	Version string `json:"version" yaml:"version"`
	Build   string `json:"build" yaml:"build"`
	Model   string `json:"model,omitempty" yaml:"model,omitempty"`
	CPUs    int    `json:"cpu_cores" yaml:"cpu_cores"`
	MemMiB  int64  `json:"memory_mib" yaml:"memory_mib"`
}

// DatastoreInfo is one datastore; free space is rounded to GiB so that
// small churn does not show as a change every night.
type DatastoreInfo struct {
	Name        string `json:"name" yaml:"name"`
	Type        string `json:"type" yaml:"type"`
	CapacityGiB int64  `json:"capacity_gib" yaml:"capacity_gib"`
	FreeGiB     int64  `json:"free_gib" yaml:"free_gib"`
}

// NetworkInfo is one network or distributed port group.
type NetworkInfo struct {
	Name string `json:"name" yaml:"name"`
	Type string `json:"type" yaml:"type"`
}

// VMInfo is one virtual machine.
type VMInfo struct {
	Name        string     `json:"name" yaml:"name"`
	UUID        string     `json:"uuid" yaml:"uuid"`
	GuestOS     string     `json:"guest_os,omitempty" yaml:"guest_os,omitempty"`
	CPUs        int32      `json:"cpus" yaml:"cpus"`
	MemoryMiB   int32      `json:"memory_mib" yaml:"memory_mib"`
	Host        string     `json:"host,omitempty" yaml:"host,omitempty"`
	Datastores  []string   `json:"datastores" yaml:"datastores"`
	Networks    []string   `json:"networks" yaml:"networks"`
	Disks       []DiskInfo `json:"disks" yaml:"disks"`
	ToolsStatus string     `json:"tools_status,omitempty" yaml:"tools_status,omitempty"`
	Snapshots   int        `json:"snapshots" yaml:"snapshots"`
	// OldestSnapshot is when the oldest snapshot was taken (its age is
	// now minus this; an age itself would change every run).
	OldestSnapshot string `json:"oldest_snapshot,omitempty" yaml:"oldest_snapshot,omitempty"`
}

// DiskInfo is one virtual disk.
type DiskInfo struct {
	Label       string `json:"label" yaml:"label"`
	CapacityGiB string `json:"capacity_gib" yaml:"capacity_gib"`
	File        string `json:"file,omitempty" yaml:"file,omitempty"`
}

func (s *vcenterSource) connect(ctx context.Context) (*govmomi.Client, error) {
	sc := soap.NewClient(s.u, s.v.Insecure)
	if s.thumbprint != "" {
		sc.SetThumbprint(s.u.Host, s.thumbprint)
	}
	if s.v.CAFile != "" {
		if err := sc.SetRootCAs(s.v.CAFile); err != nil {
			return nil, fmt.Errorf("vcenter ca_file: %w", err)
		}
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("vcenter %s: %w", s.u.Host, err)
	}
	c := &govmomi.Client{Client: vc, SessionManager: session.NewManager(vc)}
	if err := c.Login(ctx, url.UserPassword(s.v.User, s.v.Password.Reveal())); err != nil {
		return nil, fmt.Errorf("vcenter %s: login as %s: %w", s.u.Host, s.v.User, err)
	}
	return c, nil
}

func (s *vcenterSource) export(ctx context.Context, out *capture, log *slog.Logger, red *redactor) error {
	c, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// Log out even when the export timed out, but not for long.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = c.Logout(lctx)
	}()
	inv, err := CollectInventory(ctx, c.Client)
	if err != nil {
		return fmt.Errorf("vcenter %s: %w", s.u.Host, err)
	}
	log.Debug("vcenter inventory", "vms", len(inv.VMs), "hosts", len(inv.Hosts))
	var buf bytes.Buffer
	if s.v.Format == "json" {
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		err = enc.Encode(inv)
	} else {
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		err = enc.Encode(inv)
		if err == nil {
			err = enc.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("vcenter %s: encode inventory: %w", s.u.Host, err)
	}
	_, _ = out.Write(buf.Bytes())
	return nil
}

// CollectInventory reads the inventory through container views and
// returns it sorted by name.
func CollectInventory(ctx context.Context, c *vim25.Client) (*Inventory, error) {
	m := view.NewManager(c)
	retrieve := func(kind string, props []string, dst any) error {
		v, err := m.CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{kind}, true)
		if err != nil {
			return fmt.Errorf("inventory %s: %w", kind, err)
		}
		defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
		if err := v.Retrieve(ctx, []string{kind}, props, dst); err != nil {
			return fmt.Errorf("inventory %s: %w", kind, err)
		}
		return nil
	}
	var (
		clusters []mo.ClusterComputeResource
		hosts    []mo.HostSystem
		dss      []mo.Datastore
		nets     []mo.Network
		vms      []mo.VirtualMachine
	)
	if err := retrieve("ClusterComputeResource", []string{"name", "host", "configurationEx"}, &clusters); err != nil {
		return nil, err
	}
	if err := retrieve("HostSystem", []string{"name", "parent", "summary"}, &hosts); err != nil {
		return nil, err
	}
	if err := retrieve("Datastore", []string{"name", "summary"}, &dss); err != nil {
		return nil, err
	}
	if err := retrieve("Network", []string{"name"}, &nets); err != nil {
		return nil, err
	}
	if err := retrieve("VirtualMachine", []string{"name", "config", "runtime.host", "datastore", "network", "guest.toolsStatus", "snapshot"}, &vms); err != nil {
		return nil, err
	}
	names := map[types.ManagedObjectReference]string{}
	for _, x := range clusters {
		names[x.Self] = x.Name
	}
	for _, x := range hosts {
		names[x.Self] = x.Name
	}
	for _, x := range dss {
		names[x.Self] = x.Name
	}
	for _, x := range nets {
		names[x.Self] = x.Name
	}
	nameOf := func(refs []types.ManagedObjectReference) []string {
		out := []string{}
		for _, r := range refs {
			if n, ok := names[r]; ok {
				out = append(out, n)
			}
		}
		sort.Strings(out)
		return slices.Compact(out)
	}

	inv := &Inventory{Clusters: []ClusterInfo{}, Hosts: []HostInfo{}, Datastores: []DatastoreInfo{}, Networks: []NetworkInfo{}, VMs: []VMInfo{}}
	for _, x := range clusters {
		ci := ClusterInfo{Name: x.Name, Hosts: nameOf(x.Host)}
		if cfg, ok := x.ConfigurationEx.(*types.ClusterConfigInfoEx); ok && cfg != nil {
			ci.DRS = cfg.DrsConfig.Enabled != nil && *cfg.DrsConfig.Enabled
			ci.HA = cfg.DasConfig.Enabled != nil && *cfg.DasConfig.Enabled
		}
		inv.Clusters = append(inv.Clusters, ci)
	}
	for _, x := range hosts {
		hi := HostInfo{Name: x.Name}
		if x.Parent != nil && x.Parent.Type == "ClusterComputeResource" {
			hi.Cluster = names[*x.Parent]
		}
		if p := x.Summary.Config.Product; p != nil {
			hi.Version, hi.Build = p.Version, p.Build
		}
		if hw := x.Summary.Hardware; hw != nil {
			hi.Model, hi.CPUs, hi.MemMiB = hw.Model, int(hw.NumCpuCores), hw.MemorySize>>20
		}
		inv.Hosts = append(inv.Hosts, hi)
	}
	for _, x := range dss {
		inv.Datastores = append(inv.Datastores, DatastoreInfo{Name: x.Name, Type: x.Summary.Type,
			CapacityGiB: x.Summary.Capacity >> 30, FreeGiB: x.Summary.FreeSpace >> 30})
	}
	for _, x := range nets {
		inv.Networks = append(inv.Networks, NetworkInfo{Name: x.Name, Type: x.Self.Type})
	}
	for _, x := range vms {
		vi := VMInfo{Name: x.Name, Datastores: nameOf(x.Datastore), Networks: nameOf(x.Network), Disks: []DiskInfo{}}
		if x.Runtime.Host != nil {
			vi.Host = names[*x.Runtime.Host]
		}
		if x.Guest != nil {
			vi.ToolsStatus = string(x.Guest.ToolsStatus)
		}
		if cfg := x.Config; cfg != nil {
			vi.UUID, vi.GuestOS = cfg.Uuid, cfg.GuestId
			vi.CPUs, vi.MemoryMiB = cfg.Hardware.NumCPU, cfg.Hardware.MemoryMB
			for _, d := range cfg.Hardware.Device {
				disk, ok := d.(*types.VirtualDisk)
				if !ok {
					continue
				}
				di := DiskInfo{CapacityGiB: fmt.Sprintf("%.1f", float64(disk.CapacityInBytes)/(1<<30))}
				if desc := disk.DeviceInfo; desc != nil {
					di.Label = desc.GetDescription().Label
				}
				if b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
					di.File = b.GetVirtualDeviceFileBackingInfo().FileName
				}
				vi.Disks = append(vi.Disks, di)
			}
			sort.Slice(vi.Disks, func(i, j int) bool { return vi.Disks[i].Label < vi.Disks[j].Label })
		}
		if x.Snapshot != nil {
			var oldest time.Time
			var walk func([]types.VirtualMachineSnapshotTree)
			walk = func(ts []types.VirtualMachineSnapshotTree) {
				for _, t := range ts {
					vi.Snapshots++
					if oldest.IsZero() || t.CreateTime.Before(oldest) {
						oldest = t.CreateTime
					}
					walk(t.ChildSnapshotList)
				}
			}
			walk(x.Snapshot.RootSnapshotList)
			if !oldest.IsZero() {
				vi.OldestSnapshot = oldest.UTC().Format(time.RFC3339)
			}
		}
		inv.VMs = append(inv.VMs, vi)
	}
	sort.Slice(inv.Clusters, func(i, j int) bool { return inv.Clusters[i].Name < inv.Clusters[j].Name })
	sort.Slice(inv.Hosts, func(i, j int) bool { return inv.Hosts[i].Name < inv.Hosts[j].Name })
	sort.Slice(inv.Datastores, func(i, j int) bool { return inv.Datastores[i].Name < inv.Datastores[j].Name })
	sort.Slice(inv.Networks, func(i, j int) bool {
		a, b := inv.Networks[i], inv.Networks[j]
		return a.Name < b.Name || (a.Name == b.Name && a.Type < b.Type)
	})
	sort.Slice(inv.VMs, func(i, j int) bool {
		a, b := inv.VMs[i], inv.VMs[j]
		return a.Name < b.Name || (a.Name == b.Name && a.UUID < b.UUID)
	})
	return inv, nil
}
