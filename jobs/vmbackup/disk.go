package vmbackup

import (
	"context"
	"fmt"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// Disk is one virtual disk as a snapshot's config describes it.
type Disk struct {
	Index      int    `json:"index"` // order in the device list: "--disk N"
	Key        int32  `json:"key"`
	Label      string `json:"label"`
	Controller int32  `json:"controller_key"`
	Unit       int32  `json:"unit"`
	Capacity   int64  `json:"capacity"`
	File       string `json:"file"` // "[ds] dir/name.vmdk"
	UUID       string `json:"uuid,omitempty"`
	ChangeID   string `json:"change_id,omitempty"`
	Mode       string `json:"disk_mode,omitempty"`
	Thin       bool   `json:"thin,omitempty"`
}

// disks lists a config's virtual disks in device order.
func disks(devs object.VirtualDeviceList) []Disk {
	var out []Disk
	for _, d := range devs.SelectByType((*types.VirtualDisk)(nil)) {
		vd := d.(*types.VirtualDisk)
		dk := Disk{Index: len(out), Key: vd.Key, Label: devs.Name(d), Controller: vd.ControllerKey, Capacity: vd.CapacityInBytes}
		if di := vd.DeviceInfo; di != nil && di.GetDescription().Label != "" {
			dk.Label = di.GetDescription().Label
		}
		if vd.UnitNumber != nil {
			dk.Unit = *vd.UnitNumber
		}
		if dk.Capacity == 0 {
			dk.Capacity = vd.CapacityInKB * 1024
		}
		if fb, ok := vd.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			dk.File = fb.GetVirtualDeviceFileBackingInfo().FileName
		}
		switch b := vd.Backing.(type) {
		case *types.VirtualDiskFlatVer2BackingInfo:
			dk.UUID, dk.ChangeID, dk.Mode = b.Uuid, b.ChangeId, b.DiskMode
			dk.Thin = b.ThinProvisioned != nil && *b.ThinProvisioned
		case *types.VirtualDiskSeSparseBackingInfo:
			dk.UUID, dk.ChangeID, dk.Mode = b.Uuid, b.ChangeId, b.DiskMode
		case *types.VirtualDiskSparseVer2BackingInfo:
			dk.UUID, dk.ChangeID, dk.Mode = b.Uuid, b.ChangeId, b.DiskMode
		case *types.VirtualDiskRawDiskMappingVer1BackingInfo:
			dk.UUID, dk.ChangeID, dk.Mode = b.Uuid, b.ChangeId, b.DiskMode
		}
		out = append(out, dk)
	}
	return out
}

// Area is a byte range of a disk.
type Area struct{ Start, Length int64 }

// changedAreas asks vSphere which areas of a disk changed since changeID,
// looping over the start offset as the API requires, and checks that the
// answer is ordered and within the disk.
func changedAreas(ctx context.Context, s *Session, vm, snap *types.ManagedObjectReference, d Disk, changeID string) ([]Area, error) {
	var out []Area
	var off, prevEnd int64
	for off < d.Capacity {
		res, err := methods.QueryChangedDiskAreas(ctx, s.Client, &types.QueryChangedDiskAreas{
			This: *vm, Snapshot: snap, DeviceKey: d.Key, StartOffset: off, ChangeId: changeID,
		})
		if err != nil {
			return nil, fmt.Errorf("query changed areas of %s from offset %d: %w", d.Label, off, err)
		}
		info := res.Returnval
		if info.StartOffset != off {
			return nil, fmt.Errorf("query changed areas of %s: asked from %d, answer starts at %d", d.Label, off, info.StartOffset)
		}
		for _, a := range info.ChangedArea {
			if a.Start < prevEnd || a.Start < info.StartOffset || a.Length <= 0 || a.Start+a.Length > d.Capacity {
				return nil, fmt.Errorf("query changed areas of %s: area %d+%d out of order or outside the disk", d.Label, a.Start, a.Length)
			}
			out = append(out, Area{a.Start, a.Length})
			prevEnd = a.Start + a.Length
		}
		next := info.StartOffset + info.Length
		if info.Length <= 0 || next <= off {
			return nil, fmt.Errorf("query changed areas of %s: no progress at offset %d", d.Label, off)
		}
		off = next
	}
	return out, nil
}

func sumAreas(areas []Area) int64 {
	var t int64
	for _, a := range areas {
		t += a.Length
	}
	return t
}
