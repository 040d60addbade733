package vmbackup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
	"golang.org/x/sync/errgroup"

	"github.com/vigilops/vigil/jobs/vmbackup/nbd"
	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/repo"
)

// Job backs up the selected VMs of one vCenter.
type Job struct {
	name string
	p    Params
	// wrapReader lets tests inject read faults and count reads.
	wrapReader func(vm string, disk int, r DiskReader) DiskReader
}

// NewJob builds a job from parsed parameters (for the demo and tests).
func NewJob(name string, p Params) *Job { return &Job{name: name, p: p} }

// snapshotPrefix starts the name of every snapshot vigil takes; with the
// owner tag in the description it is how the janitor recognises them.
const snapshotPrefix = "vigil-"

func ownerTag(job string) string { return "vigil-owner=" + job }

// VMResult is what one VM's backup did.
type VMResult struct {
	VM       *VM
	Snapshot *repo.Snapshot
	Manifest *Manifest
	Err      error
	New      int64 // plaintext bytes of new blobs
	Stored   int64
}

// Run implements runner.Job.
func (j *Job) Run(ctx context.Context, rc runner.RunContext) error {
	log := rc.Log()
	rv, err := rc.Repository(ctx)
	if err != nil {
		return fmt.Errorf("vmbackup: %w", err)
	}
	r, ok := rv.(*repo.Repository)
	if !ok {
		return fmt.Errorf("vmbackup: repository is a %T, not a vigil repository", rv)
	}
	results, err := j.Backup(ctx, rc, r)
	if err != nil {
		return err
	}
	var failed []string
	sum := runner.Summary{Extra: map[string]any{}}
	var fetched, chunked, reused int64
	var snaps []string
	for _, res := range results {
		if res.Err != nil {
			failed = append(failed, res.VM.Name)
			continue
		}
		snaps = append(snaps, res.Snapshot.ID.String())
		sum.BytesNew += res.New
		sum.BytesStored += res.Stored
		for _, d := range res.Manifest.Disks {
			sum.Files++
			fetched += d.Fetched
			chunked += d.BytesRead
			reused += d.BytesReused
		}
	}
	sum.BytesRead = fetched
	if len(snaps) == 1 {
		sum.SnapshotID = snaps[0]
	}
	sum.Extra["vms_ok"] = len(results) - len(failed)
	sum.Extra["vms_failed"] = len(failed)
	sum.Extra["bytes_chunked"] = chunked
	sum.Extra["bytes_reused"] = reused
	sum.Extra["snapshots"] = snaps
	rc.SetSummary(sum)
	log.Info("VM backup finished", "vms_ok", len(results)-len(failed), "vms_failed", len(failed), "bytes_fetched", fetched, "bytes_reused", reused)
	switch {
	case len(failed) == 0:
		return nil
	case len(failed) < len(results):
		return runner.Partial(fmt.Errorf("vmbackup: %d of %d VMs failed: %s", len(failed), len(results), strings.Join(failed, ", ")))
	}
	var first error
	for _, res := range results {
		if res.Err != nil {
			first = res.Err
			break
		}
	}
	return fmt.Errorf("vmbackup: every VM failed (%s): %w", strings.Join(failed, ", "), first)
}

// Backup connects, selects and backs up every VM; one VM's failure does
// not stop the others. The error is for failures before any VM started.
func (j *Job) Backup(ctx context.Context, rc runner.RunContext, r *repo.Repository) ([]VMResult, error) {
	log := rc.Log()
	s, err := Connect(ctx, j.p.Connection(), log)
	if err != nil {
		if errors.Is(err, ErrUnreachable) {
			return nil, runner.Retryable(fmt.Errorf("vmbackup: %w", err))
		}
		return nil, fmt.Errorf("vmbackup: %w", err)
	}
	defer s.Logout(ctx)
	all, err := s.Inventory(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmbackup: %w", err)
	}
	sel, skipped, err := Select(j.p, all)
	if err != nil {
		return nil, fmt.Errorf("vmbackup: %w", err)
	}
	for _, sk := range skipped {
		log.Info("VM not backed up", "vm", sk.VM.Name, "path", sk.VM.Path, "reason", sk.Reason)
	}
	if len(sel) == 0 {
		log.Warn("no VM selected", "patterns", strings.Join(j.p.VMs, ", "), "skipped", len(skipped))
	}
	results := make([]VMResult, len(sel))
	sem := make(chan struct{}, j.p.Parallel)
	var wg sync.WaitGroup
	var done sync.Mutex
	finished := 0
	for i, vm := range sel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] = VMResult{VM: vm, Err: fmt.Errorf("VM %s: not started: %w", vm.Name, context.Cause(ctx))}
				return
			}
			defer func() { <-sem }()
			results[i] = j.backupVM(ctx, rc, s, r, vm)
			done.Lock()
			finished++
			rc.Progress(runner.Progress{Phase: "vms", Done: int64(finished), Total: int64(len(sel)), Unit: "vms", Message: vm.Name})
			done.Unlock()
		}()
	}
	wg.Wait()
	return results, nil
}

func (j *Job) backupVM(ctx context.Context, rc runner.RunContext, s *Session, r *repo.Repository, vm *VM) (res VMResult) {
	res.VM = vm
	log := rc.Log().With("vm", vm.Name)
	start := time.Now()
	defer func() {
		if res.Err != nil {
			log.Error("VM backup failed", "err", res.Err)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityError, Code: "vmbackup.vm_failed", Subject: vm.Name, Message: res.Err.Error()})
		}
	}()
	fail := func(err error) VMResult {
		res.Err = fmt.Errorf("VM %s: %w", vm.Name, err)
		return res
	}
	j.janitor(ctx, rc, s, vm, log)
	if vm.Consolidate {
		log.Warn("VM disks need consolidation")
		rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "vmbackup.consolidation_needed", Subject: vm.Name,
			Message: fmt.Sprintf("%s: vSphere reports that the VM's disks need consolidation (Snapshots > Consolidate)", vm.Name)})
	}
	if !vm.CBT && !vm.Template {
		if err := enableCBT(ctx, s, vm); err != nil {
			log.Warn("could not enable changed block tracking; every backup reads the whole disk", "err", err)
		} else {
			log.Info("enabled changed block tracking; this backup reads everything, the next ones only changes")
		}
	}
	b, err := r.NewBuilder(ctx, j.p.LockWait.D())
	if err != nil {
		return fail(err)
	}
	defer b.Close()
	prevSn, prevM, err := previous(ctx, r, b.Index(), vm.InstanceUUID)
	if err != nil {
		log.Warn("last backup unusable; reading everything", "err", err)
	}

	m := &Manifest{Version: manifestVersion, Name: vm.Name, InstanceUUID: vm.InstanceUUID, BIOSUUID: vm.BIOSUUID,
		InventoryPath: vm.Path, Datacenter: vm.Datacenter, VMX: vm.VMX, PowerState: string(vm.PowerState),
		Template: vm.Template, Time: start.UTC(), Job: j.name, RunID: rc.RunID()}
	if vm.Pool != nil {
		if e, err := find.NewFinder(s.Client).ObjectReference(ctx, *vm.Pool); err == nil {
			if p, ok := e.(*object.ResourcePool); ok {
				m.ResourcePool = p.InventoryPath
			}
		}
	}
	var snap *types.ManagedObjectReference
	if !vm.Template && vm.PowerState != types.VirtualMachinePowerStatePoweredOff {
		name := snapshotPrefix + j.name + "-" + start.UTC().Format("20060102T150405Z")
		ref, consistency, err := j.snapshot(ctx, s, vm, name, rc.RunID(), log)
		if err != nil {
			return fail(err)
		}
		// Whatever happens from here on, the snapshot goes away.
		defer j.removeSnapshot(ctx, rc, s, vm, ref, name, log)
		snap, m.Consistency, m.Snapshot = &ref, consistency, name
	} else {
		m.Consistency = "powered-off"
		log.Info("VM is powered off or a template; reading its disks without a snapshot")
	}
	cfg, err := readConfig(ctx, s, vm, snap)
	if err != nil {
		return fail(err)
	}
	m.GuestID, m.NumCPU, m.MemoryMB, m.Firmware = cfg.GuestId, cfg.Hardware.NumCPU, cfg.Hardware.MemoryMB, cfg.Firmware
	devs := object.VirtualDeviceList(cfg.Hardware.Device)
	for _, nic := range devs.SelectByType((*types.VirtualEthernetCard)(nil)) {
		if nb, ok := nic.GetVirtualDevice().Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
			m.Networks = append(m.Networks, nb.DeviceName)
		}
	}
	meta := repo.FileMeta{Mode: 0o600, ModTime: start}
	tr := j.transport(s, snap)
	dl := disks(devs)
	m.Disks = make([]DiskBack, len(dl))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, j.p.ParallelDisks)) // 0 from a hand-built Params would block forever
	for i, d := range dl {
		g.Go(func() error {
			db, err := j.backupDisk(gctx, rc, s, b, tr, vm, snap, d, prevSn, prevM, meta, log)
			m.Disks[i] = db
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	var cj bytes.Buffer
	if err := types.NewJSONEncoder(&cj).Encode(cfg); err != nil {
		return fail(fmt.Errorf("encode config: %w", err))
	}
	dir := vmDir(vm.Name)
	if _, err := b.AddBytes(ctx, dir+"/config.json", cj.Bytes(), meta); err != nil {
		return fail(err)
	}
	m.Files = append(m.Files, "config.json")
	for _, f := range vm.Files {
		if f.Type != "config" && f.Type != "nvram" && f.Type != "extendedConfig" {
			continue
		}
		data, err := fetchFile(ctx, s, vm.Datacenter, f.Name, 64<<20)
		if err != nil {
			log.Warn("VM file not saved", "file", f.Name, "err", err)
			continue
		}
		var dp object.DatastorePath
		dp.FromString(f.Name)
		base := safeName(path.Base(dp.Path))
		if base == "vm.json" || base == "config.json" {
			continue
		}
		if _, err := b.AddBytes(ctx, dir+"/"+base, data, meta); err != nil {
			return fail(err)
		}
		m.Files = append(m.Files, base)
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fail(err)
	}
	if _, err := b.AddBytes(ctx, dir+"/vm.json", mj, meta); err != nil {
		return fail(err)
	}
	tags := append([]string{TagVM, tagUUID + vm.InstanceUUID}, j.p.Tags...)
	var parent *repo.ID
	if prevSn != nil {
		parent = &prevSn.ID
	}
	host := ""
	if u, err := url.Parse(j.p.URL); err == nil {
		host = u.Hostname()
	}
	// The new change IDs are remembered only now: they are in vm.json,
	// which becomes visible with the snapshot, written last.
	sn, err := b.Commit(ctx, repo.SnapshotMeta{Paths: []string{"vm:" + vm.Name}, Host: host, Tags: tags, Job: j.name, Parent: parent})
	if err != nil {
		return fail(err)
	}
	res.Snapshot, res.Manifest = sn, m
	if sn.Summary != nil {
		res.New, res.Stored = sn.Summary.BytesNew, sn.Summary.BytesStored
	}
	log.Info("VM backed up", "snapshot", sn.ID.Short(), "consistency", m.Consistency, "disks", len(m.Disks),
		"bytes_new", res.New, "seconds", time.Since(start).Seconds())
	return res
}

func (j *Job) backupDisk(ctx context.Context, rc runner.RunContext, s *Session, b *repo.Builder, tr Transport, vm *VM,
	snap *types.ManagedObjectReference, d Disk, prevSn *repo.Snapshot, prevM *Manifest, meta repo.FileMeta, log *slog.Logger) (DiskBack, error) {
	db := DiskBack{Disk: d, Image: fmt.Sprintf("%s/disk-%d.img", vmDir(vm.Name), d.Index), Read: "full"}
	var pd *DiskBack
	if prevM != nil {
		for i := range prevM.Disks {
			if prevM.Disks[i].Key == d.Key {
				pd = &prevM.Disks[i]
			}
		}
	}
	var base *repo.Node
	var baseImg *baseImage
	var changed []Area
	switch {
	case prevM == nil:
		db.Why = "first backup of this VM"
	case pd == nil:
		db.Why = "new disk"
	case pd.ChangeID == "" || d.ChangeID == "":
		db.Why = "no change ID (changed block tracking was off)"
	case pd.UUID != d.UUID:
		db.Why = "disk UUID changed"
	case pd.Capacity != d.Capacity:
		db.Why = fmt.Sprintf("disk resized from %d to %d bytes", pd.Capacity, d.Capacity)
	default:
		node, err := nodeAt(ctx, b.Repository(), b.Index(), prevSn, pd.Image)
		if err != nil {
			db.Why = "last image unreadable: " + err.Error()
			break
		}
		areas, err := changedAreas(ctx, s, &vm.Ref, snap, d, pd.ChangeID)
		if err != nil {
			db.Why = "changed areas unavailable: " + err.Error()
			break
		}
		bi, err := newBaseImage(ctx, b.Repository(), b.Index(), node)
		if err != nil {
			db.Why = "last image unreadable: " + err.Error()
			break
		}
		base, db.Read, db.Changed = node, "changed", sumAreas(areas)
		baseImg, changed = bi, coalesce(areas, areaGap)
	}
	if db.Why != "" {
		log.Info("reading whole disk", "disk", d.Label, "why", db.Why)
	} else {
		log.Info("reading changed areas", "disk", d.Label, "changed_bytes", db.Changed, "since", pd.ChangeID)
	}
	rd, err := tr.Open(ctx, vm, d)
	if err != nil {
		return db, fmt.Errorf("%s: %w", d.Label, err)
	}
	defer rd.Close()
	var dr DiskReader = rd
	if j.wrapReader != nil {
		dr = j.wrapReader(vm.Name, d.Index, rd)
	}
	var src io.ReaderAt = dr
	if baseImg != nil {
		src = &mergedReader{disk: dr, base: baseImg, areas: changed}
	} else if zm, ok := rd.(zeroMapper); ok {
		// A full read skips what the server reports as zeros: most of a
		// thin disk that is mostly empty.
		zeros, err := zm.ZeroRanges(ctx)
		switch {
		case err == nil && len(zeros) > 0:
			for _, z := range zeros {
				db.Skipped += z.Len
			}
			src = &zeroSkip{ReaderAt: dr, zeros: zeros}
			log.Info("skipping ranges the server reports as zeros", "disk", d.Label, "zero_bytes", db.Skipped)
		case err == nil:
		case errors.Is(err, nbd.ErrNoBlockStatus):
		case ctx.Err() != nil:
			return db, fmt.Errorf("%s: %w", d.Label, err)
		default:
			log.Warn("block status failed; reading the whole disk", "disk", d.Label, "err", err)
		}
	}
	var st repo.ImageStats
	if base != nil {
		// Re-chunk only around the changed areas; the chunker's read-ahead
		// past a change is served from last night's image, not vCenter.
		ext := make([]repo.Extent, len(changed))
		for i, a := range changed {
			ext[i] = repo.Extent{Off: a.Start, Len: a.Length}
		}
		_, st, err = b.AddImageExtents(ctx, db.Image, src, d.Capacity, meta, base, ext)
	} else {
		_, st, err = b.AddImage(ctx, db.Image, src, d.Capacity, meta, nil, nil)
	}
	db.BytesRead, db.BytesReused, db.Fetched = st.BytesRead, st.BytesReused, rd.Fetched()
	if err != nil {
		return db, fmt.Errorf("%s: %w", d.Label, err)
	}
	rc.Progress(runner.Progress{Phase: "disk", Done: d.Capacity, Total: d.Capacity, Unit: "bytes", Message: vm.Name + " " + d.Label})
	return db, nil
}

// transport returns the job's disk transport for one VM's backup.
func (j *Job) transport(s *Session, snap *types.ManagedObjectReference) Transport {
	if j.p.Transport == "nbd" {
		t := &nbdTransport{template: j.p.NBDURL, opts: nbd.Options{MaxInFlight: j.p.NBDInFlight}}
		if snap != nil {
			t.snapshot = snap.Value
		}
		return t
	}
	return &datastoreTransport{s: s}
}

func enableCBT(ctx context.Context, s *Session, vm *VM) error {
	task, err := object.NewVirtualMachine(s.Client, vm.Ref).Reconfigure(ctx, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(true)})
	if err != nil {
		return fmt.Errorf("enable changed block tracking: %w", err)
	}
	if err := task.Wait(ctx); err != nil {
		return fmt.Errorf("enable changed block tracking: %w", err)
	}
	return nil
}

// readConfig reads the config as of the snapshot, or the VM's own when
// there is none (powered off): disks, backing files, UUIDs and change IDs.
func readConfig(ctx context.Context, s *Session, vm *VM, snap *types.ManagedObjectReference) (*types.VirtualMachineConfigInfo, error) {
	pc := property.DefaultCollector(s.Client)
	if snap != nil {
		var sm mo.VirtualMachineSnapshot
		if err := pc.RetrieveOne(ctx, *snap, []string{"config"}, &sm); err != nil {
			return nil, fmt.Errorf("read snapshot config: %w", err)
		}
		return &sm.Config, nil
	}
	var mv mo.VirtualMachine
	if err := pc.RetrieveOne(ctx, vm.Ref, []string{"config"}, &mv); err != nil {
		return nil, fmt.Errorf("read VM config: %w", err)
	}
	if mv.Config == nil {
		return nil, errors.New("read VM config: VM has no config (inaccessible)")
	}
	return mv.Config, nil
}

// snapshot takes the backup snapshot, memory off, quiesced per policy.
func (j *Job) snapshot(ctx context.Context, s *Session, vm *VM, name string, runID int64, log *slog.Logger) (types.ManagedObjectReference, string, error) {
	desc := fmt.Sprintf("%s run=%d: taken by vigil for a backup and removed after it; vigil's next run removes it if it is left behind", ownerTag(j.name), runID)
	vmo := object.NewVirtualMachine(s.Client, vm.Ref)
	create := func(quiesce bool) (types.ManagedObjectReference, error) {
		task, err := vmo.CreateSnapshot(ctx, name, desc, false, quiesce)
		if err != nil {
			return types.ManagedObjectReference{}, err
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			if ctx.Err() != nil {
				// The task may still finish; do not leave its snapshot.
				j.removeByName(ctx, s, vm, name, log)
			}
			return types.ManagedObjectReference{}, err
		}
		ref, ok := info.Result.(types.ManagedObjectReference)
		if !ok {
			return ref, fmt.Errorf("snapshot task returned %T", info.Result)
		}
		return ref, nil
	}
	var qerr error
	if j.p.Quiesce != QuiesceNever {
		for attempt := 0; attempt <= j.p.QuiesceRetries; attempt++ {
			ref, err := create(true)
			if err == nil {
				log.Info("snapshot taken", "snapshot", name, "consistency", "quiesced")
				return ref, "quiesced", nil
			}
			qerr = err
			if ctx.Err() != nil {
				return ref, "", fmt.Errorf("snapshot: %w", err)
			}
			log.Warn("quiesced snapshot failed", "attempt", attempt+1, "err", err)
		}
		if j.p.Quiesce == QuiesceRequired {
			return types.ManagedObjectReference{}, "", fmt.Errorf("quiesced snapshot failed %d times (quiesce: required): %w", j.p.QuiesceRetries+1, qerr)
		}
	}
	ref, err := create(false)
	if err != nil {
		return ref, "", fmt.Errorf("snapshot: %w", err)
	}
	if qerr != nil {
		log.Warn("took a crash-consistent snapshot instead", "snapshot", name)
	} else {
		log.Info("snapshot taken", "snapshot", name, "consistency", "crash-consistent")
	}
	return ref, "crash-consistent", nil
}

// removeSnapshot removes the backup snapshot with its own time-bounded
// context, so it also runs when the backup failed or was cancelled, then
// checks that the snapshot is gone. If the session died it logs in again.
// A snapshot that stays behind is a finding, and the next run's janitor
// removes it.
func (j *Job) removeSnapshot(ctx context.Context, rc runner.RunContext, s *Session, vm *VM, ref types.ManagedObjectReference, name string, log *slog.Logger) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.p.CleanupTimeout.D())
	defer cancel()
	err := removeAndVerify(cctx, s, vm.Ref, ref)
	if err != nil && !s.Alive(cctx) {
		log.Warn("vCenter session lost; logging in again to remove the snapshot", "err", err)
		if s2, cerr := Connect(cctx, s.conn, log); cerr == nil {
			err = removeAndVerify(cctx, s2, vm.Ref, ref)
			s2.Logout(cctx)
		} else {
			err = fmt.Errorf("%w (reconnect: %v)", err, cerr)
		}
	}
	if err != nil {
		log.Error("snapshot not removed", "snapshot", name, "err", err)
		rc.AddFinding(runner.Finding{Severity: runner.SeverityError, Code: "vmbackup.snapshot_not_removed", Subject: vm.Name,
			Message: fmt.Sprintf("%s: snapshot %q could not be removed (%v); the next run removes it", vm.Name, name, err)})
		return
	}
	log.Info("snapshot removed", "snapshot", name)
}

func removeAndVerify(ctx context.Context, s *Session, vm, snap types.ManagedObjectReference) error {
	res, err := methods.RemoveSnapshot_Task(ctx, s.Client, &types.RemoveSnapshot_Task{This: snap, RemoveChildren: false, Consolidate: types.NewBool(true)})
	if err != nil {
		return fmt.Errorf("remove snapshot: %w", err)
	}
	if err := object.NewTask(s.Client, res.Returnval).Wait(ctx); err != nil {
		return fmt.Errorf("remove snapshot: %w", err)
	}
	tree, err := snapshotTree(ctx, s, vm)
	if err != nil {
		return fmt.Errorf("verify snapshot removal: %w", err)
	}
	found := false
	walkSnapshots(tree, func(t types.VirtualMachineSnapshotTree) {
		if t.Snapshot == snap {
			found = true
		}
	})
	if found {
		return errors.New("remove snapshot: task succeeded but the snapshot is still there")
	}
	return nil
}

func snapshotTree(ctx context.Context, s *Session, vm types.ManagedObjectReference) ([]types.VirtualMachineSnapshotTree, error) {
	var mv mo.VirtualMachine
	if err := property.DefaultCollector(s.Client).RetrieveOne(ctx, vm, []string{"snapshot"}, &mv); err != nil {
		return nil, err
	}
	if mv.Snapshot == nil {
		return nil, nil
	}
	return mv.Snapshot.RootSnapshotList, nil
}

func walkSnapshots(list []types.VirtualMachineSnapshotTree, fn func(types.VirtualMachineSnapshotTree)) {
	for _, t := range list {
		fn(t)
		walkSnapshots(t.ChildSnapshotList, fn)
	}
}

// janitor removes snapshots this job took in earlier runs that were left
// behind (a crash, a lost session, a failed removal) and reports them.
func (j *Job) janitor(ctx context.Context, rc runner.RunContext, s *Session, vm *VM, log *slog.Logger) {
	var stale []types.VirtualMachineSnapshotTree
	walkSnapshots(vm.Snapshots, func(t types.VirtualMachineSnapshotTree) {
		if strings.HasPrefix(t.Name, snapshotPrefix) && strings.Contains(t.Description, ownerTag(j.name)+" ") {
			stale = append(stale, t)
		}
	})
	for _, t := range stale {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.p.CleanupTimeout.D())
		err := removeAndVerify(cctx, s, vm.Ref, t.Snapshot)
		cancel()
		if err != nil {
			log.Error("leftover vigil snapshot could not be removed", "snapshot", t.Name, "err", err)
			rc.AddFinding(runner.Finding{Severity: runner.SeverityError, Code: "vmbackup.leftover_snapshot", Subject: vm.Name,
				Message: fmt.Sprintf("%s: leftover snapshot %q from %s could not be removed: %v", vm.Name, t.Name, t.CreateTime.Format(time.RFC3339), err)})
			continue
		}
		log.Warn("removed a snapshot an earlier vigil run left behind", "snapshot", t.Name, "created", t.CreateTime)
		rc.AddFinding(runner.Finding{Severity: runner.SeverityWarning, Code: "vmbackup.leftover_snapshot_removed", Subject: vm.Name,
			Message: fmt.Sprintf("%s: removed snapshot %q left behind by an earlier run (%s)", vm.Name, t.Name, t.CreateTime.Format(time.RFC3339))})
	}
}

// removeByName removes a snapshot whose creation was interrupted.
func (j *Job) removeByName(ctx context.Context, s *Session, vm *VM, name string, log *slog.Logger) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), j.p.CleanupTimeout.D())
	defer cancel()
	tree, err := snapshotTree(cctx, s, vm.Ref)
	if err != nil {
		log.Warn("could not check for an interrupted snapshot; the next run's janitor will", "err", err)
		return
	}
	walkSnapshots(tree, func(t types.VirtualMachineSnapshotTree) {
		if t.Name == name {
			if err := removeAndVerify(cctx, s, vm.Ref, t.Snapshot); err != nil {
				log.Warn("interrupted snapshot not removed; the next run's janitor will", "snapshot", name, "err", err)
			}
		}
	})
}
