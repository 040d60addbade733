// Package vmsim runs govmomi's vCenter simulator in process with what
// vigil's VM backup needs from it and the simulator lacks: changed block
// tracking. Tests and `vigil demo` use it; production code never does.
//
// The simulator does not implement QueryChangedDiskAreas, so vmsim adds it
// through the simulator's per-call handler hook, following the vSphere API
// reference: a disk's change ID is "<tracking id>/<sequence>", a snapshot
// freezes the current change ID, a query returns the areas written since
// the given change ID up to the queried snapshot, in offset order, starting
// at startOffset and paged (the caller loops over startOffset), and a change
// ID the disk does not know yields a FileFault. Writes made with WriteDisk
// are what the tracker knows about.
package vmsim

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Sim is a running simulator.
type Sim struct {
	Model  *simulator.Model
	Server *simulator.Server
	// URL is the SDK endpoint without credentials.
	URL      *url.URL
	User     string
	Password string
	// PageAreas bounds how many areas one QueryChangedDiskAreas call
	// returns, so callers must loop over startOffset (vSphere pages too).
	PageAreas int

	client *govmomi.Client
	dsDir  string

	mu      sync.Mutex
	tracks  map[string]*track // by disk file name "[ds] dir/x.vmdk"
	queries int
}

type track struct {
	id     string // changes when tracking is reset
	seq    int    // the open sequence: writes now belong to it
	writes []write
}

type write struct {
	seq     int
	off, ln int64
}

// Start creates a VPX model (one datacenter, a cluster, a local datastore
// in a temporary directory) and serves it over HTTPS on localhost.
func Start(ctx context.Context) (*Sim, error) {
	m := simulator.VPX()
	if err := m.Create(); err != nil {
		return nil, fmt.Errorf("vmsim: create model: %w", err)
	}
	// Real credentials, so that a wrong password is rejected.
	m.Service.Listen = &url.URL{User: url.UserPassword("administrator@vsphere.local", "vigil-sim")}
	m.Service.TLS = new(tls.Config)
	srv := m.Service.NewServer()
	s := &Sim{Model: m, Server: srv, PageAreas: 4, tracks: map[string]*track{}}
	u := *srv.URL
	u.User = nil
	s.URL = &u
	s.User = "administrator@vsphere.local"
	s.Password = "vigil-sim"
	m.Map().Handler = s.handler
	cu := u
	cu.User = url.UserPassword(s.User, s.Password)
	c, err := govmomi.NewClient(ctx, &cu, true)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("vmsim: connect: %w", err)
	}
	s.client = c
	ds := m.Map().Any("Datastore").(*simulator.Datastore)
	s.dsDir = ds.Info.GetDatastoreInfo().Url
	return s, nil
}

// Close stops the server and removes the model's files.
func (s *Sim) Close() {
	if s.client != nil {
		_ = s.client.Logout(context.Background())
	}
	s.Server.Close()
	s.Model.Remove()
}

// Client is an authenticated client for test set-up.
func (s *Sim) Client() *govmomi.Client { return s.client }

// Queries counts QueryChangedDiskAreas calls answered.
func (s *Sim) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// VMOptions shape a VM created by CreateVM.
type VMOptions struct {
	DiskSizes []int64 // bytes, multiples of 1 KiB
	PoweredOn bool
	Folder    string // inventory path of a VM folder; default the datacenter's vm folder
	// ParentDisk makes the first disk a child of another disk file (a
	// linked clone, as Horizon creates them).
	ParentDisk string
}

// CreateVM creates a VM with flat disks whose backing files hold
// DiskSizes bytes of zeros.
func (s *Sim) CreateVM(ctx context.Context, name string, o VMOptions) (*object.VirtualMachine, error) {
	f := find.NewFinder(s.client.Client)
	dc, err := f.DefaultDatacenter(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	f.SetDatacenter(dc)
	folders, err := dc.Folders(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	folder := folders.VmFolder
	if o.Folder != "" {
		if folder, err = f.Folder(ctx, o.Folder); err != nil {
			return nil, fmt.Errorf("vmsim: %w", err)
		}
	}
	pool, err := f.ResourcePool(ctx, "DC0_C0/Resources")
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	ds, err := f.Datastore(ctx, "LocalDS_0")
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	net, err := f.Network(ctx, "VM Network")
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	var devs object.VirtualDeviceList
	scsi, err := devs.CreateSCSIController("pvscsi")
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	devs = append(devs, scsi)
	for i, size := range o.DiskSizes {
		d := devs.CreateDisk(scsi.(types.BaseVirtualController), ds.Reference(), fmt.Sprintf("[LocalDS_0] %s/disk%d.vmdk", name, i))
		d.CapacityInKB = size / 1024
		d.CapacityInBytes = size
		if i == 0 && o.ParentDisk != "" {
			b := d.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			b.Parent = &types.VirtualDiskFlatVer2BackingInfo{VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: o.ParentDisk}, DiskMode: b.DiskMode}
		}
		devs = append(devs, d)
	}
	backing, err := net.EthernetCardBackingInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	nic, err := devs.CreateEthernetCard("vmxnet3", backing)
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	devs = append(devs, nic)
	change, err := devs.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	if err != nil {
		return nil, fmt.Errorf("vmsim: %w", err)
	}
	for _, c := range change {
		if _, ok := c.GetVirtualDeviceConfigSpec().Device.(*types.VirtualDisk); ok {
			c.GetVirtualDeviceConfigSpec().FileOperation = types.VirtualDeviceConfigSpecFileOperationCreate
		}
	}
	spec := types.VirtualMachineConfigSpec{
		Name: name, GuestId: string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest), NumCPUs: 2, MemoryMB: 2048,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[LocalDS_0]"}, DeviceChange: change,
	}
	task, err := folder.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return nil, fmt.Errorf("vmsim: create %s: %w", name, err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("vmsim: create %s: %w", name, err)
	}
	vm := object.NewVirtualMachine(s.client.Client, info.Result.(types.ManagedObjectReference))
	for i, size := range o.DiskSizes {
		if err := os.Truncate(s.FlatPath(name, i), size); err != nil {
			return nil, fmt.Errorf("vmsim: %w", err)
		}
	}
	if o.PoweredOn {
		task, err := vm.PowerOn(ctx)
		if err == nil {
			err = task.Wait(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("vmsim: power on %s: %w", name, err)
		}
	}
	return vm, nil
}

// DiskFile is the datastore path of a CreateVM disk.
func DiskFile(vm string, disk int) string { return fmt.Sprintf("[LocalDS_0] %s/disk%d.vmdk", vm, disk) }

// FlatPath is the local file holding a CreateVM disk's bytes.
func (s *Sim) FlatPath(vm string, disk int) string {
	return s.LocalPath(DiskFile(vm, disk))
}

// LocalPath maps "[LocalDS_0] dir/x.vmdk" to the local file holding the
// flat extent ("dir/x-flat.vmdk"); other names map to themselves.
func (s *Sim) LocalPath(dsPath string) string {
	var p object.DatastorePath
	p.FromString(dsPath)
	rel := p.Path
	if strings.HasSuffix(rel, ".vmdk") && !strings.HasSuffix(rel, "-flat.vmdk") {
		rel = strings.TrimSuffix(rel, ".vmdk") + "-flat.vmdk"
	}
	return filepath.Join(s.dsDir, filepath.FromSlash(rel))
}

// WriteDisk writes data into a disk's backing file at off and records
// the change for changed block tracking.
func (s *Sim) WriteDisk(vm string, disk int, off int64, data []byte) error {
	f, err := os.OpenFile(s.FlatPath(vm, disk), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("vmsim: %w", err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return fmt.Errorf("vmsim: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("vmsim: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.track(DiskFile(vm, disk))
	t.writes = append(t.writes, write{seq: t.seq, off: off, ln: int64(len(data))})
	return nil
}

// ResetTracking forgets a disk's change history, as vSphere does when
// tracking is turned off and on again: earlier change IDs become unknown.
func (s *Sim) ResetTracking(vm string, disk int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.track(DiskFile(vm, disk))
	t.id = t.id + "r"
	t.seq = 0
	t.writes = nil
}

// track returns a disk's tracker; callers hold s.mu.
func (s *Sim) track(file string) *track {
	t := s.tracks[file]
	if t == nil {
		t = &track{id: fmt.Sprintf("52 %08x", len(s.tracks)+1)}
		s.tracks[file] = t
	}
	return t
}

// handler swaps in cbtVM for the calls it extends. The simulator prefers
// the object its registry holds under method.This over what a handler
// returns, and replacing the VM in the registry breaks code that expects
// its own type there; so the call is addressed to an unregistered
// reference, and cbtVM's methods restore the real one.
func (s *Sim) handler(ctx *simulator.Context, m *simulator.Method) (mo.Reference, types.BaseMethodFault) {
	switch m.Name {
	case "QueryChangedDiskAreas", "CreateSnapshot_Task", "CreateSnapshotEx_Task":
		if vm, ok := ctx.Map.Get(m.This).(*simulator.VirtualMachine); ok {
			m.This = types.ManagedObjectReference{Type: "VirtualMachine", Value: "vmsim-cbt-" + m.This.Value}
			return &cbtVM{VirtualMachine: vm, sim: s}, nil
		}
	}
	return nil, nil
}

type cbtVM struct {
	*simulator.VirtualMachine
	sim *Sim
}

// freeze gives every tracked disk its current change ID and opens the
// next sequence, as a snapshot does.
func (v *cbtVM) freeze() {
	if v.Config == nil || v.Config.ChangeTrackingEnabled == nil || !*v.Config.ChangeTrackingEnabled {
		return
	}
	v.sim.mu.Lock()
	defer v.sim.mu.Unlock()
	for _, d := range v.Config.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		t := v.sim.track(b.FileName)
		nb := *b
		nb.ChangeId = fmt.Sprintf("%s/%d", t.id, t.seq)
		disk.Backing = &nb
		t.seq++
	}
}

func (v *cbtVM) CreateSnapshotTask(ctx *simulator.Context, req *types.CreateSnapshot_Task) soap.HasFault {
	var res soap.HasFault
	v.restore(ctx, func() {
		v.freeze()
		res = v.VirtualMachine.CreateSnapshotTask(ctx, req)
	})
	return res
}

func (v *cbtVM) CreateSnapshotExTask(ctx *simulator.Context, req *types.CreateSnapshotEx_Task) soap.HasFault {
	var res soap.HasFault
	v.restore(ctx, func() {
		v.freeze()
		res = v.VirtualMachine.CreateSnapshotExTask(ctx, req)
	})
	return res
}

// restore readdresses the call to the VM and runs f under its lock, as
// the simulator would have.
func (v *cbtVM) restore(ctx *simulator.Context, f func()) {
	if ctx.Caller != nil {
		*ctx.Caller = v.Self
	}
	ctx.WithLock(v.VirtualMachine, f)
}

func (v *cbtVM) QueryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	var res soap.HasFault
	v.restore(ctx, func() { res = v.queryChangedDiskAreas(ctx, req) })
	return res
}

func (v *cbtVM) queryChangedDiskAreas(ctx *simulator.Context, req *types.QueryChangedDiskAreas) soap.HasFault {
	body := &methods.QueryChangedDiskAreasBody{}
	fail := func(msg string, f types.BaseMethodFault) soap.HasFault {
		body.Fault_ = simulator.Fault(msg, f)
		return body
	}
	if v.Config.ChangeTrackingEnabled == nil || !*v.Config.ChangeTrackingEnabled {
		return fail("changed block tracking is not enabled", &types.InvalidState{})
	}
	if req.Snapshot == nil {
		return fail("snapshot is required by this simulator", &types.InvalidArgument{InvalidProperty: "snapshot"})
	}
	snap, ok := ctx.Map.Get(*req.Snapshot).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return fail("no such snapshot", &types.ManagedObjectNotFound{Obj: *req.Snapshot})
	}
	var disk *types.VirtualDisk
	for _, d := range snap.Config.Hardware.Device {
		if vd, ok := d.(*types.VirtualDisk); ok && vd.Key == req.DeviceKey {
			disk = vd
		}
	}
	if disk == nil {
		return fail("no such disk", &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	b, ok := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok || b.ChangeId == "" {
		return fail("disk has no change ID", &types.InvalidArgument{InvalidProperty: "deviceKey"})
	}
	capacity := disk.CapacityInBytes
	if req.StartOffset < 0 || req.StartOffset >= capacity {
		return fail("startOffset out of range", &types.InvalidArgument{InvalidProperty: "startOffset"})
	}

	v.sim.mu.Lock()
	defer v.sim.mu.Unlock()
	v.sim.queries++
	t := v.sim.track(b.FileName)
	upto, err := parseChangeID(b.ChangeId, t.id)
	if err != nil {
		return fail("snapshot change ID is stale", &types.FileFault{File: b.FileName})
	}
	// A change ID "<id>/k" was handed out when sequence k closed: writes
	// after it carry k+1 or later, up to the queried snapshot's own.
	from := -1
	if req.ChangeId != "*" {
		if from, err = parseChangeID(req.ChangeId, t.id); err != nil || from > upto {
			return fail(fmt.Sprintf("Error caused by file %s: unknown change ID %q", b.FileName, req.ChangeId), &types.FileFault{File: b.FileName})
		}
	}
	var areas []types.DiskChangeExtent
	for _, w := range t.writes {
		if w.seq <= from || w.seq > upto {
			continue
		}
		s, e := max(w.off, req.StartOffset), min(w.off+w.ln, capacity)
		if s < e {
			areas = append(areas, types.DiskChangeExtent{Start: s, Length: e - s})
		}
	}
	areas = merge(areas)
	length := capacity - req.StartOffset
	if v.sim.PageAreas > 0 && len(areas) > v.sim.PageAreas {
		areas = areas[:v.sim.PageAreas]
		last := areas[len(areas)-1]
		length = last.Start + last.Length - req.StartOffset
	}
	body.Res = &types.QueryChangedDiskAreasResponse{Returnval: types.DiskChangeInfo{StartOffset: req.StartOffset, Length: length, ChangedArea: areas}}
	return body
}

func parseChangeID(id, want string) (int, error) {
	i := strings.LastIndexByte(id, '/')
	if i < 0 || id[:i] != want {
		return 0, fmt.Errorf("unknown change ID %q", id)
	}
	return strconv.Atoi(id[i+1:])
}

func merge(a []types.DiskChangeExtent) []types.DiskChangeExtent {
	sort.Slice(a, func(i, j int) bool { return a[i].Start < a[j].Start })
	var out []types.DiskChangeExtent
	for _, x := range a {
		if n := len(out); n > 0 && x.Start <= out[n-1].Start+out[n-1].Length {
			end := max(out[n-1].Start+out[n-1].Length, x.Start+x.Length)
			out[n-1].Length = end - out[n-1].Start
			continue
		}
		out = append(out, x)
	}
	return out
}

// VMDir is the datastore directory of a CreateVM VM.
func VMDir(vm string) string { return path.Join("[LocalDS_0]", vm) }
