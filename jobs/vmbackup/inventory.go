package vmbackup

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// VM is what selection and backup need to know about one VM.
type VM struct {
	Ref          types.ManagedObjectReference
	Name         string
	Path         string // inventory path, "/DC0/vm/library/ils"
	Datacenter   string // datacenter inventory path without the leading "/"
	InstanceUUID string
	BIOSUUID     string
	Template     bool
	PowerState   types.VirtualMachinePowerState
	CBT          bool
	Consolidate  bool // runtime.consolidationNeeded
	VMX          string
	Devices      object.VirtualDeviceList
	Snapshots    []types.VirtualMachineSnapshotTree
	Files        []types.VirtualMachineFileLayoutExFileInfo
	Accessible   bool
	Pool         *types.ManagedObjectReference
}

var vmProps = []string{
	"name", "parent", "config.instanceUuid", "config.uuid", "config.template", "config.changeTrackingEnabled",
	"config.hardware.device", "config.files.vmPathName", "runtime.powerState", "runtime.consolidationNeeded",
	"snapshot", "layoutEx.file", "resourcePool",
}

// Inventory lists every VM with its inventory path, in two property
// collector round trips for the containers and one for the VMs.
func (s *Session) Inventory(ctx context.Context) ([]*VM, error) {
	root := s.Client.ServiceContent.RootFolder
	m := view.NewManager(s.Client)
	v, err := m.CreateContainerView(ctx, root, []string{"Folder", "Datacenter", "VirtualMachine"}, true)
	if err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	defer func() { _ = v.Destroy(context.WithoutCancel(ctx)) }()
	var folders []mo.Folder
	if err := v.Retrieve(ctx, []string{"Folder"}, []string{"name", "parent"}, &folders); err != nil {
		return nil, fmt.Errorf("list folders: %w", err)
	}
	var dcs []mo.Datacenter
	if err := v.Retrieve(ctx, []string{"Datacenter"}, []string{"name", "parent"}, &dcs); err != nil {
		return nil, fmt.Errorf("list datacenters: %w", err)
	}
	type ent struct {
		name   string
		parent *types.ManagedObjectReference
		dc     bool
	}
	ents := map[types.ManagedObjectReference]ent{}
	for _, f := range folders {
		ents[f.Self] = ent{name: f.Name, parent: f.Parent}
	}
	for _, d := range dcs {
		ents[d.Self] = ent{name: d.Name, parent: d.Parent, dc: true}
	}
	// pathOf walks up to the root folder, which is not part of paths; it
	// also returns the path of the datacenter the entity is in.
	pathOf := func(name string, parent *types.ManagedObjectReference) (string, string) {
		up := []ent{{name: name}} // bottom-up
		for p := parent; p != nil && *p != root; {
			e, ok := ents[*p]
			if !ok {
				break
			}
			up = append(up, e)
			p = e.parent
		}
		var parts []string
		dc := ""
		for i := len(up) - 1; i >= 0; i-- {
			parts = append(parts, up[i].name)
			if up[i].dc && dc == "" {
				dc = strings.Join(parts, "/")
			}
		}
		return "/" + strings.Join(parts, "/"), dc
	}
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, vmProps, &vms); err != nil {
		return nil, fmt.Errorf("list VMs: %w", err)
	}
	out := make([]*VM, 0, len(vms))
	for i := range vms {
		mv := &vms[i]
		vm := &VM{Ref: mv.Self, Name: mv.Name, PowerState: mv.Runtime.PowerState}
		vm.Path, vm.Datacenter = pathOf(mv.Name, mv.Parent)
		vm.Consolidate = mv.Runtime.ConsolidationNeeded
		vm.Pool = mv.ResourcePool
		if c := mv.Config; c != nil {
			vm.Accessible = true
			vm.InstanceUUID, vm.BIOSUUID, vm.Template = c.InstanceUuid, c.Uuid, c.Template
			vm.CBT = c.ChangeTrackingEnabled != nil && *c.ChangeTrackingEnabled
			vm.VMX = c.Files.VmPathName
			vm.Devices = c.Hardware.Device
		}
		if mv.Snapshot != nil {
			vm.Snapshots = mv.Snapshot.RootSnapshotList
		}
		if mv.LayoutEx != nil {
			vm.Files = mv.LayoutEx.File
		}
		out = append(out, vm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Skipped is a VM that selection left out, with the reason.
type Skipped struct {
	VM     *VM
	Reason string
}

// Select applies the job's patterns and policies. A pattern without glob
// characters that matches nothing is an error (ErrUnknownVM), so a typo
// does not silently back up nothing.
func Select(p Params, all []*VM) ([]*VM, []Skipped, error) {
	var unknown []string
	hits := make([]int, len(p.VMs))
	var sel []*VM
	var skipped []Skipped
	for _, vm := range all {
		in := false
		for i, pat := range p.VMs {
			if match(pat, vm) {
				hits[i]++
				in = true
			}
		}
		if !in {
			continue
		}
		if pat, ok := excludedBy(p.Exclude, vm); ok {
			skipped = append(skipped, Skipped{vm, fmt.Sprintf("excluded by %q", pat)})
			continue
		}
		if reason := policySkip(p, vm); reason != "" {
			skipped = append(skipped, Skipped{vm, reason})
			continue
		}
		sel = append(sel, vm)
	}
	for i, pat := range p.VMs {
		if hits[i] == 0 && !strings.ContainsAny(pat, "*?[\\") {
			unknown = append(unknown, pat)
		}
	}
	if len(unknown) > 0 {
		return nil, nil, fmt.Errorf("select VMs: %w: %s", ErrUnknownVM, strings.Join(unknown, ", "))
	}
	return sel, skipped, nil
}

func excludedBy(pats []string, vm *VM) (string, bool) {
	for _, pat := range pats {
		if match(pat, vm) {
			return pat, true
		}
	}
	return "", false
}

// match: "uuid:<id>" is the instance UUID; a pattern starting with "/" is
// an inventory path or one of its folders; anything else is the name.
func match(pat string, vm *VM) bool {
	if id, ok := strings.CutPrefix(pat, "uuid:"); ok {
		return strings.EqualFold(id, vm.InstanceUUID)
	}
	if strings.HasPrefix(pat, "/") {
		pat = strings.TrimSuffix(pat, "/")
		for p := vm.Path; p != "/" && p != "."; p = path.Dir(p) {
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		}
		return false
	}
	ok, _ := path.Match(pat, vm.Name)
	return ok
}

func policySkip(p Params, vm *VM) string {
	switch {
	case !vm.Accessible:
		return "inaccessible: vCenter has no configuration for it"
	case vm.Template && p.Templates == "skip":
		return "template (templates: skip)"
	case !vm.Template && vm.PowerState == types.VirtualMachinePowerStatePoweredOff && p.PoweredOff == "skip":
		return "powered off (powered_off: skip)"
	}
	if !p.LinkedClones {
		if why := linkedClone(vm); why != "" {
			return why
		}
	}
	return ""
}

// linkedClone explains why vm looks like a linked or instant clone: a disk
// whose backing chain ends in a file outside the VM's own directory (its
// own snapshots' parents live beside it).
func linkedClone(vm *VM) string {
	dir := dsDir(vm.VMX)
	for _, d := range vm.Devices.SelectByType((*types.VirtualDisk)(nil)) {
		disk := d.(*types.VirtualDisk)
		root := ""
		for b := disk.Backing; b != nil; b = backingParent(b) {
			if fb, ok := b.(types.BaseVirtualDeviceFileBackingInfo); ok {
				root = fb.GetVirtualDeviceFileBackingInfo().FileName
			}
		}
		if backingParent(disk.Backing) != nil && dsDir(root) != dir {
			return fmt.Sprintf("linked or instant clone: %s is a child of %s (linked_clones: false)", vm.Devices.Name(d), root)
		}
	}
	return ""
}

func backingParent(b types.BaseVirtualDeviceBackingInfo) types.BaseVirtualDeviceBackingInfo {
	switch t := b.(type) {
	case *types.VirtualDiskFlatVer2BackingInfo:
		if t.Parent != nil {
			return t.Parent
		}
	case *types.VirtualDiskSeSparseBackingInfo:
		if t.Parent != nil {
			return t.Parent
		}
	case *types.VirtualDiskSparseVer2BackingInfo:
		if t.Parent != nil {
			return t.Parent
		}
	case *types.VirtualDiskFlatVer1BackingInfo:
		if t.Parent != nil {
			return t.Parent
		}
	case *types.VirtualDiskSparseVer1BackingInfo:
		if t.Parent != nil {
			return t.Parent
		}
	}
	return nil
}

// dsDir is the directory part of "[ds] dir/file.vmx", with the datastore.
func dsDir(p string) string {
	var dp object.DatastorePath
	if !dp.FromString(p) {
		return p
	}
	return "[" + dp.Datastore + "] " + path.Dir(dp.Path)
}
