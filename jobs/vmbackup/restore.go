package vmbackup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vmdk"

	"github.com/vigilops/vigil/storage/repo"
)

// Backup is one VM's backup inside a repository snapshot.
type Backup struct {
	Snapshot *repo.Snapshot
	Manifest *Manifest
	Dir      string // "/vms/<name>"
	idx      *repo.MasterIndex
}

// FindVM finds the backup of VM name in snapshot ref; "latest" (or "")
// picks the newest snapshot holding that VM.
func FindVM(ctx context.Context, r *repo.Repository, ref, name string) (*Backup, error) {
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("find VM backup: %w", err)
	}
	if ref != "" && ref != "latest" {
		sn, err := r.FindSnapshot(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("find VM backup: %w", err)
		}
		m, dir, err := LoadManifest(ctx, r, idx, sn, name)
		if err != nil {
			return nil, fmt.Errorf("find VM backup: %w", err)
		}
		return &Backup{Snapshot: sn, Manifest: m, Dir: dir, idx: idx}, nil
	}
	sns, err := r.Snapshots(ctx, func(repo.ID, error) {})
	if err != nil {
		return nil, fmt.Errorf("find VM backup: %w", err)
	}
	for i := len(sns) - 1; i >= 0; i-- {
		sn := sns[i]
		if !sn.HasTag(TagVM) || (name != "" && !slices.Contains(sn.Paths, "vm:"+name)) {
			continue
		}
		m, dir, err := LoadManifest(ctx, r, idx, sn, name)
		if err != nil {
			return nil, fmt.Errorf("find VM backup: %w", err)
		}
		return &Backup{Snapshot: sn, Manifest: m, Dir: dir, idx: idx}, nil
	}
	return nil, fmt.Errorf("find VM backup: %w: no snapshot holds VM %q", ErrNoBackup, name)
}

// List returns every VM backup in the repository, oldest first.
func List(ctx context.Context, r *repo.Repository) ([]*Backup, error) {
	idx, err := r.LoadIndex(ctx)
	if err != nil {
		return nil, fmt.Errorf("list VM backups: %w", err)
	}
	sns, err := r.Snapshots(ctx, func(repo.ID, error) {})
	if err != nil {
		return nil, fmt.Errorf("list VM backups: %w", err)
	}
	var out []*Backup
	for _, sn := range sns {
		if !sn.HasTag(TagVM) {
			continue
		}
		m, dir, err := LoadManifest(ctx, r, idx, sn, "")
		if err != nil {
			return nil, fmt.Errorf("list VM backups: %w", err)
		}
		out = append(out, &Backup{Snapshot: sn, Manifest: m, Dir: dir, idx: idx})
	}
	return out, nil
}

// Disk returns the record of disk n.
func (b *Backup) Disk(n int) (*DiskBack, error) {
	for i := range b.Manifest.Disks {
		if b.Manifest.Disks[i].Index == n {
			return &b.Manifest.Disks[i], nil
		}
	}
	return nil, fmt.Errorf("VM %s has no disk %d (it has %d)", b.Manifest.Name, n, len(b.Manifest.Disks))
}

// RestoreDisk writes disk n as a raw image file into dir (zero runs stay
// holes) and returns the file's path.
func RestoreDisk(ctx context.Context, r *repo.Repository, b *Backup, n int, dir string) (string, *repo.RestoreResult, error) {
	d, err := b.Disk(n)
	if err != nil {
		return "", nil, fmt.Errorf("restore disk: %w", err)
	}
	res, err := r.Restore(ctx, b.Snapshot, repo.RestoreOptions{Target: dir, Path: d.Image})
	if err != nil {
		return "", res, fmt.Errorf("restore disk %d of %s: %w", n, b.Manifest.Name, err)
	}
	if len(res.Errors) > 0 {
		return "", res, fmt.Errorf("restore disk %d of %s: %w", n, b.Manifest.Name, res.Errors[0])
	}
	return filepath.Join(dir, path.Base(d.Image)), res, nil
}

// RestoreDiskTo writes disk n as the raw image file file (zero runs stay
// holes). It restores beside file and renames, so an interrupted restore
// never leaves a file that looks complete; an existing file is an error.
func RestoreDiskTo(ctx context.Context, r *repo.Repository, b *Backup, n int, file string) (int64, error) {
	if _, err := os.Lstat(file); err == nil {
		return 0, fmt.Errorf("restore disk %d of %s: %s already exists", n, b.Manifest.Name, file)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(file), ".vigil-restore-")
	if err != nil {
		return 0, fmt.Errorf("restore disk %d of %s: %w", n, b.Manifest.Name, err)
	}
	defer os.RemoveAll(tmp)
	p, res, err := RestoreDisk(ctx, r, b, n, tmp)
	if err != nil {
		return 0, err
	}
	if err := os.Rename(p, file); err != nil {
		return 0, fmt.Errorf("restore disk %d of %s: %w", n, b.Manifest.Name, err)
	}
	return res.Bytes, nil
}

// NewVMOptions place a VM restored as new.
type NewVMOptions struct {
	Name      string
	Datastore string // default: the original VM's datastore
	Folder    string // inventory path; default: the datacenter's VM folder
	Pool      string // inventory path; default: the original VM's pool
	Network   string // for every NIC; default: the networks the VM had
	PowerOn   bool
	// Replace destroys an existing VM of that name, but only once the new
	// disks are uploaded (into a directory of their own), so a failed
	// upload leaves the old VM as it was. Callers confirm with the admin.
	Replace bool
}

// ErrVMExists: restore-as-new never overwrites a VM unless asked to.
var ErrVMExists = errors.New("a VM with that name already exists")

// NewVMResult says what RestoreAsNew did.
type NewVMResult struct {
	VM       *object.VirtualMachine
	Disks    []string // datastore paths of the uploaded descriptors
	Bytes    int64
	Duration time.Duration
	Replaced bool // an existing VM of that name was destroyed
}

// destroyVM powers a VM off (if it is on) and destroys it with its files.
func destroyVM(ctx context.Context, vm *object.VirtualMachine) error {
	state, err := vm.PowerState(ctx)
	if err != nil {
		return fmt.Errorf("power state: %w", err)
	}
	if state != types.VirtualMachinePowerStatePoweredOff {
		t, err := vm.PowerOff(ctx)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			return fmt.Errorf("power off: %w", err)
		}
	}
	t, err := vm.Destroy(ctx)
	if err == nil {
		err = t.Wait(ctx)
	}
	if err != nil {
		return fmt.Errorf("destroy: %w", err)
	}
	return nil
}

// RestoreAsNew uploads each disk (descriptor and flat extent) through the
// datastore endpoint and creates a VM from the saved config with new
// identities (UUIDs and MAC addresses are generated by vCenter).
func RestoreAsNew(ctx context.Context, s *Session, r *repo.Repository, b *Backup, o NewVMOptions) (*NewVMResult, error) {
	start := time.Now()
	m := b.Manifest
	if o.Name == "" {
		return nil, errors.New("restore VM: a name for the new VM is required")
	}
	fail := func(err error) (*NewVMResult, error) {
		return nil, fmt.Errorf("restore VM %s as %s: %w", m.Name, o.Name, err)
	}
	cfg, err := b.config(ctx, r)
	if err != nil {
		return fail(err)
	}
	f := find.NewFinder(s.Client)
	dc, err := f.DatacenterOrDefault(ctx, m.Datacenter)
	if err != nil {
		return fail(err)
	}
	f.SetDatacenter(dc)
	existing, err := f.VirtualMachine(ctx, o.Name)
	switch {
	case err == nil && !o.Replace:
		return fail(ErrVMExists)
	case err != nil && !errors.As(err, new(*find.NotFoundError)):
		return fail(err)
	case err != nil:
		existing = nil
	}
	dsName := o.Datastore
	if dsName == "" {
		var dp object.DatastorePath
		dp.FromString(m.VMX)
		dsName = dp.Datastore
	}
	ds, err := f.Datastore(ctx, dsName)
	if err != nil {
		return fail(err)
	}
	var folder *object.Folder
	if o.Folder != "" {
		folder, err = f.Folder(ctx, o.Folder)
	} else {
		var fs *object.DatacenterFolders
		if fs, err = dc.Folders(ctx); err == nil {
			folder = fs.VmFolder
		}
	}
	if err != nil {
		return fail(err)
	}
	var pool *object.ResourcePool
	switch {
	case o.Pool != "":
		pool, err = f.ResourcePool(ctx, o.Pool)
	case m.ResourcePool != "":
		pool, err = f.ResourcePool(ctx, m.ResourcePool)
	default:
		pool, err = f.DefaultResourcePool(ctx)
	}
	if err != nil {
		return fail(err)
	}
	res := &NewVMResult{}
	dir := safeName(o.Name)
	if existing != nil {
		// The old VM's files may sit in a directory of the same name.
		dir += "-" + time.Now().UTC().Format("20060102T150405")
	}
	files := map[int32]string{} // disk key -> new descriptor
	for i, d := range m.Disks {
		base := fmt.Sprintf("%s_%d", dir, i)
		desc := fmt.Sprintf("[%s] %s/%s.vmdk", ds.Name(), dir, base)
		n, err := uploadDisk(ctx, s, r, b, &d, dc.InventoryPath, ds.Name(), dir+"/"+base)
		if err != nil {
			return fail(err)
		}
		res.Bytes += n
		files[d.Key] = desc
		res.Disks = append(res.Disks, desc)
	}
	var net object.NetworkReference
	if o.Network != "" {
		if net, err = f.Network(ctx, o.Network); err != nil {
			return fail(err)
		}
	}
	devices, err := newDevices(ctx, cfg, files, ds.Reference(), net)
	if err != nil {
		return fail(err)
	}
	if existing != nil {
		if err := destroyVM(ctx, existing); err != nil {
			return fail(fmt.Errorf("replace the existing VM: %w (the restored disks are in [%s] %s)", err, ds.Name(), dir))
		}
		res.Replaced = true
	}
	spec := types.VirtualMachineConfigSpec{
		Name: o.Name, GuestId: cfg.GuestId, NumCPUs: cfg.Hardware.NumCPU, NumCoresPerSocket: cfg.Hardware.NumCoresPerSocket,
		MemoryMB: int64(cfg.Hardware.MemoryMB), Firmware: cfg.Firmware, Annotation: cfg.Annotation,
		Files:        &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s] %s/%s.vmx", ds.Name(), dir, dir)},
		DeviceChange: devices,
	}
	task, err := folder.CreateVM(ctx, spec, pool, nil)
	if err != nil {
		return fail(err)
	}
	info, err := task.WaitForResult(ctx, nil)
	if err != nil {
		return fail(err)
	}
	res.VM = object.NewVirtualMachine(s.Client, info.Result.(types.ManagedObjectReference))
	if o.PowerOn {
		t, err := res.VM.PowerOn(ctx)
		if err == nil {
			err = t.Wait(ctx)
		}
		if err != nil {
			return fail(fmt.Errorf("created, but power on failed: %w", err))
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// config decodes the saved VMOMI config.
func (b *Backup) config(ctx context.Context, r *repo.Repository) (*types.VirtualMachineConfigInfo, error) {
	n, err := nodeAt(ctx, r, b.idx, b.Snapshot, b.Dir+"/config.json")
	if err != nil {
		return nil, err
	}
	data, err := ReadFile(ctx, r, b.idx, n, 64<<20)
	if err != nil {
		return nil, err
	}
	var cfg types.VirtualMachineConfigInfo
	if err := types.NewJSONDecoder(bytes.NewReader(data)).Decode(&cfg); err != nil {
		return nil, fmt.Errorf("decode saved config: %w", err)
	}
	return &cfg, nil
}

// newDevices turns the saved controllers, disks and NICs into "add"
// specs: controllers get new keys that the disks follow, disks point at
// the uploaded files, NICs get generated MAC addresses.
func newDevices(ctx context.Context, cfg *types.VirtualMachineConfigInfo, files map[int32]string, ds types.ManagedObjectReference, net object.NetworkReference) ([]types.BaseVirtualDeviceConfigSpec, error) {
	var out []types.BaseVirtualDeviceConfigSpec
	keys := map[int32]int32{}
	next := int32(-100)
	add := func(d types.BaseVirtualDevice) {
		out = append(out, &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: d})
	}
	for _, d := range cfg.Hardware.Device {
		switch c := d.(type) {
		case types.BaseVirtualSCSIController, *types.VirtualAHCIController, *types.VirtualNVMEController:
			vd := d.GetVirtualDevice()
			keys[vd.Key] = next
			vd.Key = next
			next--
			vd.DeviceInfo = nil
			if sc, ok := c.(types.BaseVirtualSCSIController); ok {
				sc.GetVirtualSCSIController().Device = nil
			}
			if ac, ok := c.(types.BaseVirtualController); ok {
				ac.GetVirtualController().Device = nil
			}
			add(d)
		}
	}
	var nicBacking types.BaseVirtualDeviceBackingInfo
	if net != nil {
		b, err := net.EthernetCardBackingInfo(ctx)
		if err != nil {
			return nil, err
		}
		nicBacking = b
	}
	for _, d := range cfg.Hardware.Device {
		switch dev := d.(type) {
		case *types.VirtualDisk:
			file, ok := files[dev.Key]
			if !ok {
				continue
			}
			ck, ok := keys[dev.ControllerKey]
			if !ok {
				// IDE disks: the controller exists on every VM with the same key.
				ck = dev.ControllerKey
			}
			mode := string(types.VirtualDiskModePersistent)
			if b, ok := dev.Backing.(*types.VirtualDiskFlatVer2BackingInfo); ok && b.DiskMode != "" {
				mode = b.DiskMode
			}
			nd := &types.VirtualDisk{
				VirtualDevice: types.VirtualDevice{Key: next, ControllerKey: ck, UnitNumber: dev.UnitNumber,
					Backing: &types.VirtualDiskFlatVer2BackingInfo{
						VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: file, Datastore: &ds},
						DiskMode:                     mode, ThinProvisioned: types.NewBool(true),
					}},
				CapacityInKB: dev.CapacityInKB, CapacityInBytes: dev.CapacityInBytes,
			}
			next--
			add(nd)
		case types.BaseVirtualEthernetCard:
			nic := dev.GetVirtualEthernetCard()
			nic.Key = next
			next--
			nic.DeviceInfo = nil
			nic.MacAddress = ""
			nic.AddressType = string(types.VirtualEthernetCardMacTypeGenerated)
			if nicBacking != nil {
				nic.Backing = nicBacking
			}
			add(d)
		}
	}
	return out, nil
}

// uploadDisk PUTs the flat extent, then its descriptor, and returns the
// bytes sent.
func uploadDisk(ctx context.Context, s *Session, r *repo.Repository, b *Backup, d *DiskBack, dc, ds, base string) (int64, error) {
	n, err := nodeAt(ctx, r, b.idx, b.Snapshot, d.Image)
	if err != nil {
		return 0, err
	}
	content, err := r.FileContent(ctx, b.idx, n)
	if err != nil {
		return 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeImage(ctx, r, b.idx, content, pw))
	}()
	flat := base + "-flat.vmdk"
	u, err := datastoreURL(s, dc, fmt.Sprintf("[%s] %s", ds, flat))
	if err != nil {
		pr.CloseWithError(err)
		return 0, err
	}
	p := soap.DefaultUpload
	p.ContentLength = int64(n.Size)
	err = s.Client.Client.Upload(ctx, pr, u, &p)
	pr.CloseWithError(errors.New("upload finished"))
	if err != nil {
		return 0, fmt.Errorf("upload %s: %w", flat, err)
	}
	desc := vmdk.NewDescriptor(vmdk.Extent{Size: int64(n.Size) / vmdk.SectorSize, Info: path.Base(flat)})
	desc.DDB["adapterType"] = "lsilogic"
	if d.UUID != "" {
		desc.DDB["uuid"] = d.UUID
	}
	var buf bytes.Buffer
	if err := desc.Write(&buf); err != nil {
		return 0, err
	}
	u, err = datastoreURL(s, dc, fmt.Sprintf("[%s] %s.vmdk", ds, base))
	if err != nil {
		return 0, err
	}
	p = soap.DefaultUpload
	p.ContentLength = int64(buf.Len())
	if err := s.Client.Client.Upload(ctx, &buf, u, &p); err != nil {
		return 0, fmt.Errorf("upload %s.vmdk: %w", base, err)
	}
	return int64(n.Size), nil
}

// writeImage streams an image's pieces in order; memory is one blob.
func writeImage(ctx context.Context, r *repo.Repository, idx *repo.MasterIndex, content []repo.ContentRef, w io.Writer) error {
	zeros := make([]byte, 1<<20)
	for _, c := range content {
		if c.Zero > 0 {
			for left := int64(c.Zero); left > 0; {
				k := min(left, int64(len(zeros)))
				if _, err := w.Write(zeros[:k]); err != nil {
					return err
				}
				left -= k
			}
			continue
		}
		data, err := r.LoadBlob(ctx, idx, repo.BlobHandle{Type: repo.DataBlob, ID: c.ID}, nil)
		if err != nil {
			return err
		}
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return nil
}
