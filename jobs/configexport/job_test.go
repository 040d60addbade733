package configexport

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/runner"
	"github.com/vigilops/vigil/storage/blob"
)

// Secrets of every kind the redactor must hide; none may appear in
// anything shown.
var secrets = []string{
	"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", // ProCurve sha1 password hash
	"AQBapXYZciphertextHASH",                   // Aruba CX ciphertext
	"$1$Rt4.$Hx9Pq0wTicxNn0",                   // ICX password 8
	"pubc0mmunity", "s3cr3tRW",                 // SNMP communities
	"radiusKey!77",               // RADIUS key
	"WiFiPSK-2024-x",             // WPA PSK
	"tok_9f8e7d6c5b4a",           // API token
	"$6$saltsalt$7yH3Zc0M1mQ",    // shadow hash
	"snmpAuthPw1", "snmpPrivPw2", // SNMPv3
}

const night1 = `; J9850A Configuration Editor; Created on release #KB.16.10.0009
hostname "switch-core-2"
password manager user-name "admin" sha1 "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"
user admin group administrators password ciphertext AQBapXYZciphertextHASH
username noc password 8 $1$Rt4.$Hx9Pq0wTicxNn0
snmp-server community "pubc0mmunity" operator
snmp-server community s3cr3tRW rw
snmpv3 user "mon" auth sha "snmpAuthPw1" priv aes "snmpPrivPw2"
radius-server host 10.0.0.5 key "radiusKey!77"
wlan guest wpa-passphrase WiFiPSK-2024-x
api_token: tok_9f8e7d6c5b4a
root:$6$saltsalt$7yH3Zc0M1mQ:19000:0:99999:7:::
vlan 10
   name "staff"
   untagged 1-20
   exit
vlan 20
   name "public"
   exit
`

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func assertNoSecrets(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s shows secret %q", what, s)
		}
	}
}

func packCount(t *testing.T, h *harness) int {
	t.Helper()
	n := 0
	if err := h.r.Store().List(t.Context(), "data/", func(blob.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestThreeNightsOfChanges(t *testing.T) {
	dir := t.TempDir()
	sw1, sw2 := filepath.Join(dir, "sw1.cfg"), filepath.Join(dir, "sw2.cfg")
	writeFile(t, sw1, night1)
	writeFile(t, sw2, "hostname edge\nuptime is 3 days\n")
	j := build(t, fmt.Sprintf(`
targets:
  - name: switch-core-2
    command: {argv: [/bin/cat, %q]}
  - name: edge
    volatile: ['^uptime is']
    command: {argv: [/bin/cat, %q]}
`, sw1, sw2))
	h := newHarness(t)

	// Night 1: both are new; nothing to compare with, so no findings.
	o := h.run(j)
	if o.run.Status != runner.StatusSuccess || len(o.findings) != 0 {
		t.Fatalf("night 1: %+v findings %+v", o.run, o.findings)
	}
	if got := h.stored("switch-core-2"); got != night1 {
		t.Errorf("stored copy is not complete by default:\n%s", got)
	}
	if got := h.stored("edge"); got != "hostname edge\n" {
		t.Errorf("volatile line kept: %q", got)
	}
	assertNoSecrets(t, "night 1 output", o.text(t))
	packs := packCount(t, h)

	// Night 2: nothing changed (only a volatile line): no findings, and
	// the repository gains no data at all.
	writeFile(t, sw2, "hostname edge\nuptime is 4 days\n")
	o = h.run(j)
	if o.run.Status != runner.StatusSuccess || len(o.findings) != 0 {
		t.Fatalf("night 2: %+v findings %+v", o.run, o.findings)
	}
	if o.run.Summary.BytesNew != 0 || packCount(t, h) != packs {
		t.Errorf("unchanged export added data: bytes_new=%d packs %d -> %d", o.run.Summary.BytesNew, packs, packCount(t, h))
	}
	if o.run.Summary.Extra["unchanged"] != 2 {
		t.Errorf("night 2 summary: %+v", o.run.Summary.Extra)
	}

	// Night 3: three lines added, one removed (one of them carrying a
	// secret), and edge fails: partial, named, switch-core-2 still stored.
	night3 := strings.Replace(night1, "vlan 20\n   name \"public\"\n", "vlan 20\n   name \"guests\"\n   tagged 24\nvlan 30\n   name \"voip\"\n", 1)
	night3 = strings.Replace(night3, "wlan guest wpa-passphrase WiFiPSK-2024-x\n", "", 1)
	night3 += "wlan voip wpa-passphrase WiFiPSK-2024-x\n"
	writeFile(t, sw1, night3)
	os.Remove(sw2)
	o = h.run(j)
	if o.run.Status != runner.StatusPartial || !strings.Contains(o.run.Error, "edge") {
		t.Fatalf("night 3 should be partial naming edge: %+v", o.run)
	}
	if f := o.finding("config.export_failed", "edge"); f == nil || !strings.Contains(f.Message, "edge: export failed") {
		t.Errorf("no failure finding for edge: %+v", o.findings)
	}
	f := o.finding("config.changed", "switch-core-2")
	if f == nil || f.Message != "switch-core-2: config changed, +5 −2 lines" {
		t.Fatalf("change finding: %+v", o.findings)
	}
	cs := o.changes(t)
	if len(cs) != 1 || cs[0].Added != 5 || cs[0].Removed != 2 {
		t.Fatalf("changes: %+v", cs)
	}
	for _, want := range []string{"-   name \"public\"\n", "+   name \"guests\"\n", "+   tagged 24\n", "+vlan 30\n", "+   name \"voip\"\n",
		"-wlan guest wpa-passphrase <redacted>\n", "+wlan voip wpa-passphrase <redacted>\n"} {
		if !strings.Contains(cs[0].Diff, want) {
			t.Errorf("diff lacks %q:\n%s", want, cs[0].Diff)
		}
	}
	if h.stored("switch-core-2") != night3 {
		t.Error("night 3 export not stored")
	}
	if h.stored("edge") != "hostname edge\n" {
		t.Error("edge's earlier version lost")
	}
	assertNoSecrets(t, "night 3 output", o.text(t))

	// Night 4: only a password hash changes; the diff would be empty, so
	// the finding says so without showing either value.
	writeFile(t, sw2, "hostname edge\n")
	writeFile(t, sw1, strings.Replace(night3, "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", "0000aaaa1111bbbb2222cccc3333dddd4444eeee", 1))
	o = h.run(j)
	f = o.finding("config.changed", "switch-core-2")
	if o.run.Status != runner.StatusSuccess || f == nil || !strings.Contains(f.Message, "secrets only") {
		t.Fatalf("night 4: %+v %+v", o.run, o.findings)
	}
	if o.finding("config.changed", "edge") != nil {
		t.Errorf("edge came back unchanged but was reported changed: %+v", o.findings)
	}
	assertNoSecrets(t, "night 4 output", o.text(t)+"0000aaaa1111bbbb2222cccc3333dddd4444eeee")
}

func TestStoreSecretsFalseStoresRedacted(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "sw.cfg")
	writeFile(t, p, night1)
	h := newHarness(t)
	o := h.run(build(t, fmt.Sprintf("store_secrets: false\ntargets: [{name: sw, command: {argv: [/bin/cat, %q]}}]", p)))
	if o.run.Status != runner.StatusSuccess {
		t.Fatal(o.run)
	}
	got := h.stored("sw")
	assertNoSecrets(t, "redacted stored copy", got)
	if !strings.Contains(got, `snmp-server community "<redacted>" operator`) {
		t.Errorf("stored:\n%s", got)
	}
}

func TestOutputCapTimeoutAndParallelism(t *testing.T) {
	h := newHarness(t)
	j := build(t, `
concurrency: 3
targets:
  - name: chatty
    max_output: 1KiB
    command: {argv: [/bin/sh, -c, 'yes "interface 1/1/1 description uplink" | head -c 1000000']}
  - name: stuck
    timeout: 300ms
    command: {argv: [/bin/sleep, "30"]}
  - {name: p1, command: {argv: [/bin/sh, -c, 'sleep 0.4; echo p1']}}
  - {name: p2, command: {argv: [/bin/sh, -c, 'sleep 0.4; echo p2']}}
  - {name: p3, command: {argv: [/bin/sh, -c, 'sleep 0.4; echo p3']}}
`)
	start := time.Now()
	o := h.run(j)
	took := time.Since(start)
	if o.run.Status != runner.StatusPartial || !strings.Contains(o.run.Error, "stuck") {
		t.Fatalf("run: %+v", o.run)
	}
	f := o.finding("config.export_failed", "stuck")
	if f == nil || !strings.Contains(f.Message, "timed out after 300ms") {
		t.Errorf("timeout finding: %+v", o.findings)
	}
	if f := o.finding("config.output_cut", "chatty"); f == nil || !strings.Contains(f.Message, "cut at 1024 bytes (998976 more dropped)") {
		t.Errorf("cut finding: %+v", o.findings)
	}
	if got := h.stored("chatty"); len(got) > 1024 || !strings.HasPrefix(got, "interface 1/1/1 description uplink\n") {
		t.Errorf("cut export: %d bytes", len(got))
	}
	// Three slots: the three 0.4s targets cannot all run beside the two
	// others at once, but neither do they run one after another.
	if took > 2*time.Second {
		t.Errorf("run took %s: targets did not export in parallel", took)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ with, want string }{
		{`targets: []`, "at least one target"},
		{`targets: [{name: "a b", command: {argv: [x]}}]`, `name "a b"`},
		{`targets: [{name: a}]`, "needs a source"},
		{`targets: [{name: a, command: {argv: [x]}, http: {url: "https://x"}}]`, "set exactly one"},
		{`targets: [{name: a, command: {argv: [x]}}, {name: a, command: {argv: [y]}}]`, "used twice"},
		{`targets: [{name: a, ssh: {host: h, user: u, password: p, profile: aruba-os-switch}}]`, "host key must be pinned"},
		{`targets: [{name: a, ssh: {host: h, user: u, password: p, host_key_fingerprint: "SHA256:x", profile: nope}}]`, `unknown profile "nope"`},
		{`targets: [{name: a, http: {url: "https://x", pin_sha256: "abc"}}]`, "64 hex digits"},
		{`targets: [{name: a, volatile: ["("], command: {argv: [x]}}]`, "bad regex"},
		{`targets: [{name: a, vcenter_inventory: {url: "https://vc", user: u}}]`, "password"},
	} {
		w, _ := parseWith(tc.with)
		_, err := Load(configJob(w))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.with, err, tc.want)
		}
	}
}
