package configexport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilops/vigil/runner"
)

const procurveConfig = `; J9850A Configuration Editor; Created on release #KB.16.10.0009
; Ver #14:01.44.00.04.19.02.13.98.82.34.61.18.28.f3.84.9c.63.ff.37.27:05

hostname "switch-core-2"
module A type j9990a
snmp-server community "pubc0mmunity" operator
radius-server host 10.0.0.5 key "radiusKey!77"
vlan 1
   name "DEFAULT_VLAN"
   no untagged A1-A20
   exit
vlan 10
   name "staff"
   untagged A1-A20
   ip address 10.10.0.2 255.255.255.0
   exit
vlan 20
   name "public"
   tagged A21-A24
   exit
spanning-tree
password manager user-name "admin" sha1 "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"
`

func procurve() device {
	return device{
		banner:     "\x1b[?7l\x1b[3;23r\x1b[?6l\x1b[1;1H\x1b[2J\x1b[1;1H\r\nHP J9850A Switch 5406Rzl2\r\n\r\nSoftware revision KB.16.10.0009\r\n\r\n(C) Copyright 2020 Hewlett Packard Enterprise Development LP\r\n\r\n",
		anyKey:     true,
		prompt:     "switch-core-2# ",
		noPageCmd:  "no page",
		pager:      "-- MORE --, next page: Space, next line: Enter, quit: Control-C",
		pageLines:  7,
		config:     procurveConfig,
		configHead: "\r\nRunning configuration:\r\n\r\n",
	}
}

func sshTarget(f *fakeSSH, profile, extra string) string {
	return fmt.Sprintf(`
targets:
  - name: switch-core-2
    timeout: 3s
    ssh:
      host: 127.0.0.1
      port: %d
      user: backup
      password: %s
      host_key_fingerprint: %q
      profile: %s
%s`, f.port(), f.password, f.fingerprint(), profile, extra)
}

func TestSSHShellProCurve(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  func() device
	}{
		{"paging off", procurve},
		// The device ignores "no page": pager prompts must be answered and
		// leave nothing behind.
		{"pager answered", func() device { d := procurve(); d.ignoreNoPg = true; return d }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeSSH(t, tc.dev(), nil)
			h := newHarness(t)
			o := h.run(build(t, sshTarget(f, "aruba-os-switch", "")))
			if o.run.Status != runner.StatusSuccess {
				t.Fatalf("run: %+v %+v", o.run, o.findings)
			}
			if got := h.stored("switch-core-2"); got != procurveConfig {
				t.Errorf("export differs from the device config:\n%q\nwant\n%q", got, procurveConfig)
			}
			if got := strings.Join(f.received(), "|"); got != "no page|show running-config" {
				t.Errorf("commands sent: %s", got)
			}
			assertNoSecrets(t, "ssh run output", o.text(t)+f.password)
		})
	}
}

func TestSSHShellRuckusICX(t *testing.T) {
	cfg := "ver 08.0.95bT213\n!\nstack unit 1\n  module 1 icx7150-24p-poe-port-management-module\n!\nvlan 10 name staff by port\n untagged ethe 1/1/1 to 1/1/12\n!\nusername noc password 8 $1$Rt4.$Hx9Pq0wTicxNn0\nsnmp-server community 2 $U2kyXj1k ro\nhostname icx-lib\n!\nend\n"
	d := device{
		banner: "\r\n", prompt: "SSH@icx-lib#", noPageCmd: "skip-page-display",
		pager: "--More--, next page: Space, next line: Return key, quit: Control-c", pageLines: 5,
		config: cfg, configHead: "Current configuration:\r\n!\r\n", ignoreNoPg: true,
	}
	f := startFakeSSH(t, d, nil)
	h := newHarness(t)
	o := h.run(build(t, sshTarget(f, "ruckus-icx", "")))
	if o.run.Status != runner.StatusSuccess {
		t.Fatalf("run: %+v %+v", o.run, o.findings)
	}
	if got := h.stored("switch-core-2"); got != "!\n"+cfg {
		t.Errorf("icx export:\n%q", got)
	}
}

func TestSSHExecLinux(t *testing.T) {
	f := startFakeSSH(t, device{}, map[string]string{
		"cat -- '/etc/hosts'":              "127.0.0.1 localhost\n10.0.0.9 ils\n",
		"cat -- '/etc/it'\\''s here.conf'": "quoted = yes\n",
	})
	h := newHarness(t)
	o := h.run(build(t, sshTarget(f, "linux", `      files: [/etc/hosts, "/etc/it's here.conf"]`)))
	if o.run.Status != runner.StatusSuccess {
		t.Fatalf("run: %+v %+v", o.run, o.findings)
	}
	want := "### cat -- '/etc/hosts'\n127.0.0.1 localhost\n10.0.0.9 ils\n### cat -- '/etc/it'\\''s here.conf'\nquoted = yes\n"
	if got := h.stored("switch-core-2"); got != want {
		t.Errorf("exec export:\n%q\nwant\n%q", got, want)
	}
	// A failing command names itself and its stderr.
	o = h.run(build(t, sshTarget(f, "linux", `      files: [/etc/missing]`)))
	fd := o.finding("config.export_failed", "switch-core-2")
	if o.run.Status != runner.StatusFailed || fd == nil || !strings.Contains(fd.Message, "exited with status 127") || !strings.Contains(fd.Message, "not found") {
		t.Errorf("failing exec: %+v %+v", o.run, o.findings)
	}
}

func TestSSHHostKeyPinning(t *testing.T) {
	f := startFakeSSH(t, procurve(), nil)
	other := newHostKey(t).PublicKey()
	h := newHarness(t)

	// Wrong fingerprint: refused before any password is sent.
	with := strings.Replace(sshTarget(f, "aruba-os-switch", ""), f.fingerprint(), "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 1)
	o := h.run(build(t, with))
	fd := o.finding("config.export_failed", "switch-core-2")
	if o.run.Status != runner.StatusFailed || fd == nil || !strings.Contains(fd.Message, "host key mismatch") {
		t.Fatalf("wrong fingerprint accepted: %+v %+v", o.run, o.findings)
	}
	if len(f.received()) != 0 {
		t.Errorf("commands reached a server with the wrong key: %v", f.received())
	}

	// known_hosts with another key for this host: refused.
	kh := f.knownHosts(t, other)
	pinned := fmt.Sprintf("      host_key_fingerprint: %q\n", f.fingerprint())
	with = strings.Replace(sshTarget(f, "aruba-os-switch", ""), pinned, "      known_hosts: "+kh+"\n", 1)
	o = h.run(build(t, with))
	fd = o.finding("config.export_failed", "switch-core-2")
	if fd == nil || !strings.Contains(fd.Message, "host key mismatch") {
		t.Fatalf("known_hosts mismatch accepted: %+v", o.findings)
	}

	// known_hosts with the right key works.
	kh = f.knownHosts(t, f.hostKey.PublicKey())
	with = strings.Replace(sshTarget(f, "aruba-os-switch", ""), pinned, "      known_hosts: "+kh+"\n", 1)
	if o = h.run(build(t, with)); o.run.Status != runner.StatusSuccess {
		t.Fatalf("right known_hosts: %+v %+v", o.run, o.findings)
	}
}

func TestSSHDeviceStallsOrNeverPrompts(t *testing.T) {
	stall := procurve()
	stall.hangAfter = 6
	f := startFakeSSH(t, stall, nil)
	h := newHarness(t)
	o := h.run(build(t, strings.Replace(sshTarget(f, "aruba-os-switch", ""), "timeout: 3s", "timeout: 700ms", 1)))
	fd := o.finding("config.export_failed", "switch-core-2")
	if fd == nil || !strings.Contains(fd.Message, `timed out after 700ms`) || !strings.Contains(fd.Message, `the prompt after "show running-config" did not come`) {
		t.Fatalf("stalled device: %+v", o.findings)
	}
	// The last line it saw is in the message, redacted.
	if !strings.Contains(fd.Message, `snmp-server community \"<redacted>\" operator`) {
		t.Errorf("stall message lacks the last line: %s", fd.Message)
	}
	assertNoSecrets(t, "stall output", o.text(t))

	silent := procurve()
	silent.noPrompt = true
	f = startFakeSSH(t, silent, nil)
	o = h.run(build(t, strings.Replace(sshTarget(f, "aruba-os-switch", ""), "timeout: 3s", "timeout: 500ms", 1)))
	fd = o.finding("config.export_failed", "switch-core-2")
	if fd == nil || !strings.Contains(fd.Message, "the first prompt did not come") {
		t.Fatalf("silent device: %+v", o.findings)
	}
}

func TestSSHWrongPassword(t *testing.T) {
	f := startFakeSSH(t, procurve(), nil)
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("not-it\n"), 0o600)
	with := strings.Replace(sshTarget(f, "aruba-os-switch", ""), "password: "+f.password, "password_file: "+pwFile, 1)
	o := newHarness(t).run(build(t, with))
	fd := o.finding("config.export_failed", "switch-core-2")
	if fd == nil || !strings.Contains(fd.Message, "unable to authenticate") {
		t.Fatalf("wrong password: %+v", o.findings)
	}
}
