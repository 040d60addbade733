// Package vmbackup is the "vmbackup" job kind: VM snapshot backups from
// vSphere into the repository, and the restores that go with them.
//
// Per VM and night: remove snapshots an earlier vigil run left behind,
// enable changed block tracking, take a snapshot (quiesced per policy),
// read the disk layout from the snapshot's config, read each disk through a
// transport (only the changed areas when vSphere can say what changed),
// store it as a complete image whose unchanged segments reuse last night's
// chunks, commit, and remove the snapshot whatever happened. One repository
// snapshot holds one VM: its disks, its config and a manifest (vm.json)
// carrying the change IDs the next night starts from, so the chain lives in
// the repository alone.
package vmbackup

import (
	"encoding/hex"
	"path"
	"strings"
	"time"

	"github.com/vigilops/vigil/configs"
	"github.com/vigilops/vigil/runner"
)

// Quiesce policies.
const (
	QuiescePreferred = "preferred" // quiesced, retried, then crash-consistent
	QuiesceRequired  = "required"  // quiesced or the VM fails
	QuiesceNever     = "never"     // crash-consistent only
)

// Params is the kind's with: section.
type Params struct {
	// Connection fields (url, user, password_file, ca_file, thumbprint,
	// insecure, keep_alive) sit at the top level of the section.
	URL        string           `yaml:"url"`
	User       string           `yaml:"user"`
	Password   configs.Secret   `yaml:"password"`
	CAFile     string           `yaml:"ca_file"`
	Thumbprint string           `yaml:"thumbprint"`
	Insecure   bool             `yaml:"insecure"`
	KeepAlive  configs.Duration `yaml:"keep_alive"`

	// VMs selects VMs: names, inventory paths ("/DC0/vm/library/ils"),
	// folders ("/DC0/vm/library" selects everything below it), globs in
	// either ("ils-*", "/DC0/vm/*/db*"), or "uuid:<instance uuid>".
	VMs []string `yaml:"vms"`
	// Exclude removes VMs with the same syntax.
	Exclude []string `yaml:"exclude"`
	// LinkedClones includes VMs whose disks are children of another VM's
	// disk (Horizon instant and linked clones); they are excluded by
	// default because their base image is backed up with the golden VM.
	LinkedClones bool `yaml:"linked_clones"`
	// Templates and PoweredOff are "include" (default) or "skip".
	Templates  string `yaml:"templates"`
	PoweredOff string `yaml:"powered_off"`
	// Quiesce is "preferred" (default), "required" or "never".
	Quiesce        string `yaml:"quiesce"`
	QuiesceRetries int    `yaml:"quiesce_retries"`
	// Transport reads disks: "datastore" (default; HTTPS range reads
	// through vCenter's /folder endpoint) or "nbd" (an NBD server such as
	// nbdkit with the VDDK plugin, addressed by NBDURL).
	Transport string `yaml:"transport"`
	// NBDURL is the NBD address of each disk, a template:
	// "nbd+unix:///{vm}-{disk}?socket=/run/vigil/nbd.sock" or
	// "nbd://host:10809/{uuid}/{disk}". Placeholders: {vm} {uuid} {disk}
	// {disk_key} {disk_uuid} {file} {snapshot}.
	NBDURL string `yaml:"nbd_url"`
	// NBDInFlight bounds the read requests in flight per disk (default 16
	// of up to 1 MiB each: the transport's buffer budget).
	NBDInFlight int `yaml:"nbd_in_flight"`
	// Parallel is how many VMs are backed up at once (default 1).
	Parallel int `yaml:"parallel"`
	// ParallelDisks is how many disks of one VM are read at once (default
	// 2): each disk has its own transport connection, so a second disk
	// keeps the cores busy while the first waits for its storage.
	ParallelDisks int `yaml:"parallel_disks"`
	// CleanupTimeout bounds removing a snapshot after the backup, which
	// runs even when the backup failed or was cancelled (default 10m).
	CleanupTimeout configs.Duration `yaml:"cleanup_timeout"`
	// LockWait is how long to wait for the repository lock (default 5m).
	LockWait configs.Duration `yaml:"lock_wait"`
	Tags     []string         `yaml:"tags"`
}

// Connection says how to reach vCenter.
type Connection struct {
	URL  string
	User string
	// Password is usually given as password_file.
	Password configs.Secret
	// CAFile verifies vCenter's certificate against these PEM roots.
	CAFile string
	// Thumbprint pins vCenter's leaf certificate by its SHA-256 (hex,
	// colons optional); it replaces chain verification.
	Thumbprint string
	// Insecure skips verification; it must be set explicitly and warns.
	Insecure bool
	// KeepAlive is the idle interval after which the session is pinged so
	// it does not expire during long disk reads (0 disables).
	KeepAlive time.Duration
}

// Connection returns the connection part of the parameters.
func (p Params) Connection() Connection {
	return Connection{URL: p.URL, User: p.User, Password: p.Password, CAFile: p.CAFile, Thumbprint: p.Thumbprint,
		Insecure: p.Insecure, KeepAlive: p.KeepAlive.D()}
}

func defaults() Params {
	return Params{
		Templates: "include", PoweredOff: "include", Quiesce: QuiescePreferred, QuiesceRetries: 1,
		Transport: "datastore", NBDInFlight: 16, Parallel: 1, ParallelDisks: 2, KeepAlive: configs.Duration(5 * time.Minute),
		CleanupTimeout: configs.Duration(10 * time.Minute), LockWait: configs.Duration(5 * time.Minute),
	}
}

// New builds a vmbackup job from its config (no I/O).
func New(job configs.Job) (runner.Job, error) {
	p, err := parseParams(job.With)
	if err != nil {
		return nil, err
	}
	return &Job{name: job.Name, p: p}, nil
}

func parseParams(w configs.With) (Params, error) {
	p := defaults()
	if err := w.Decode(&p); err != nil {
		return p, err
	}
	var errs configs.Errors
	errs = append(errs, p.Connection().validate(w)...)
	if len(p.VMs) == 0 {
		errs = append(errs, w.Errorf("vms", `is required: names, inventory paths, folders or globs (["*"] selects every VM)`))
	}
	for _, field := range []struct {
		name string
		list []string
	}{{"vms", p.VMs}, {"exclude", p.Exclude}} {
		for _, pat := range field.list {
			if pat == "" {
				errs = append(errs, w.Errorf(field.name, "empty pattern"))
				continue
			}
			if _, err := path.Match(strings.TrimPrefix(pat, "uuid:"), "x"); err != nil {
				errs = append(errs, w.Errorf(field.name, "pattern %q: %v", pat, err))
			}
		}
	}
	for _, f := range []struct{ name, v string }{{"templates", p.Templates}, {"powered_off", p.PoweredOff}} {
		if f.v != "include" && f.v != "skip" {
			errs = append(errs, w.Errorf(f.name, `must be "include" or "skip", got %q`, f.v))
		}
	}
	switch p.Quiesce {
	case QuiescePreferred, QuiesceRequired, QuiesceNever:
	default:
		errs = append(errs, w.Errorf("quiesce", `must be "preferred", "required" or "never", got %q`, p.Quiesce))
	}
	if p.QuiesceRetries < 0 {
		errs = append(errs, w.Errorf("quiesce_retries", "must not be negative"))
	}
	switch p.Transport {
	case "datastore":
		if p.NBDURL != "" {
			errs = append(errs, w.Errorf("nbd_url", `is only used with transport: nbd`))
		}
	case "nbd":
		if p.NBDURL == "" {
			errs = append(errs, w.Errorf("nbd_url", `is required with transport: nbd, e.g. "nbd+unix:///{vm}-{disk}?socket=/run/vigil/nbd.sock"`))
		} else if _, err := expandNBDURL(p.NBDURL, &VM{Name: "vm", InstanceUUID: "u"}, Disk{File: "[ds] vm/vm.vmdk"}, "snapshot-1"); err != nil {
			errs = append(errs, w.Errorf("nbd_url", "%v", err))
		}
		if p.NBDInFlight < 1 {
			errs = append(errs, w.Errorf("nbd_in_flight", "must be at least 1"))
		}
	default:
		errs = append(errs, w.Errorf("transport", `must be "datastore" or "nbd", got %q`, p.Transport))
	}
	if p.Parallel < 1 {
		errs = append(errs, w.Errorf("parallel", "must be at least 1"))
	}
	if p.ParallelDisks < 1 {
		errs = append(errs, w.Errorf("parallel_disks", "must be at least 1"))
	}
	if p.CleanupTimeout <= 0 {
		errs = append(errs, w.Errorf("cleanup_timeout", "must be positive"))
	}
	if len(errs) > 0 {
		return p, errs
	}
	return p, nil
}

func (c Connection) validate(w configs.With) configs.Errors {
	var errs configs.Errors
	if c.URL == "" {
		errs = append(errs, w.Errorf("url", "is required, e.g. https://vcenter.example.org"))
	} else if !strings.HasPrefix(c.URL, "https://") && !(c.Insecure && strings.HasPrefix(c.URL, "http://")) {
		errs = append(errs, w.Errorf("url", "must start with https:// (http:// only with insecure: true), got %q", c.URL))
	}
	if c.User == "" {
		errs = append(errs, w.Errorf("user", "is required"))
	}
	if !c.Password.IsSet() {
		errs = append(errs, w.Errorf("password", "is required (use password_file)"))
	}
	if c.Thumbprint != "" {
		if _, err := parseThumbprint(c.Thumbprint); err != nil {
			errs = append(errs, w.Errorf("thumbprint", "%v", err))
		}
	}
	n := 0
	for _, set := range []bool{c.CAFile != "", c.Thumbprint != "", c.Insecure} {
		if set {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, w.Errorf("", "choose one of ca_file, thumbprint and insecure"))
	}
	if c.KeepAlive < 0 {
		errs = append(errs, w.Errorf("keep_alive", "must not be negative"))
	}
	return errs
}

// parseThumbprint accepts "AB:CD:..." or "abcd..." (SHA-256, 32 bytes).
func parseThumbprint(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if err != nil || len(b) != 32 {
		return nil, errBadThumbprint
	}
	return b, nil
}

// ConnectionOf returns the vCenter connection of a vmbackup job's config,
// for commands (restore as new) that talk to the same vCenter.
func ConnectionOf(job configs.Job) (Connection, error) {
	p, err := parseParams(job.With)
	if err != nil {
		return Connection{}, err
	}
	return p.Connection(), nil
}
