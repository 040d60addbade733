package configexport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/vigilops/vigil/runner"
)

func TestHTTPSourcePinnedTLSTokenAndJSON(t *testing.T) {
	const token = "tok_9f8e7d6c5b4a"
	var gotBody string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token || r.Header.Get("X-Site") != "main-library" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		gotBody = string(b)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		// Keys out of order and on one line: the export sorts and indents.
		io.WriteString(w, `{"zones":[{"name":"lib","wlans":[{"ssid":"guest","psk":"WiFiPSK-2024-x"}]}],"adminPassword":"hunter2xx","version":"6.1.2","aps":12}`)
	}))
	defer srv.Close()
	// Refused handshakes are the point of part of this test; keep them quiet.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	sum := sha256.Sum256(srv.Certificate().Raw)
	pin := hex.EncodeToString(sum[:])
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	writeFile(t, tokenFile, token+"\n")
	bodyFile := filepath.Join(dir, "body")
	writeFile(t, bodyFile, `{"query":"all"}`)
	caFile := filepath.Join(dir, "ca.pem")
	writeFile(t, caFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))

	target := func(tls string) string {
		return fmt.Sprintf(`
targets:
  - name: smartzone
    http:
      url: %s/api/export
      bearer_token_file: %s
      headers: [{name: X-Site, value: main-library}]
      body_file: %s
      content_type: application/json
      %s
`, srv.URL, tokenFile, bodyFile, tls)
	}
	want := `{
  "adminPassword": "hunter2xx",
  "aps": 12,
  "version": "6.1.2",
  "zones": [
    {
      "name": "lib",
      "wlans": [
        {
          "psk": "WiFiPSK-2024-x",
          "ssid": "guest"
        }
      ]
    }
  ]
}
`
	for _, tls := range []string{"pin_sha256: " + pin, "ca_file: " + caFile} {
		h := newHarness(t)
		o := h.run(build(t, target(tls)))
		if o.run.Status != runner.StatusSuccess {
			t.Fatalf("%s: %+v %+v", tls, o.run, o.findings)
		}
		if got := h.stored("smartzone"); got != want {
			t.Errorf("%s: stored:\n%s", tls, got)
		}
		if gotBody != `{"query":"all"}` {
			t.Errorf("body sent: %q", gotBody)
		}
		assertNoSecrets(t, "http run", o.text(t)+"hunter2xx")
	}

	// Another certificate's pin: refused before any request is sent.
	gotBody = ""
	other := strings.Repeat("ab", 32)
	o := newHarness(t).run(build(t, target("pin_sha256: "+other)))
	f := o.finding("config.export_failed", "smartzone")
	if o.run.Status != runner.StatusFailed || f == nil || !strings.Contains(f.Message, "certificate pin mismatch") || gotBody != "" {
		t.Fatalf("pin mismatch: %+v %+v", o.run, o.findings)
	}
	// No pin and no CA: the self-signed certificate is not trusted.
	o = newHarness(t).run(build(t, target("")))
	if f := o.finding("config.export_failed", "smartzone"); f == nil || !strings.Contains(f.Message, "certificate") {
		t.Fatalf("untrusted certificate accepted: %+v", o.findings)
	}
}

func TestVCenterInventoryStableAndDiffed(t *testing.T) {
	ctx := context.Background()
	m := simulator.VPX()
	defer m.Remove()
	if err := m.Create(); err != nil {
		t.Fatal(err)
	}
	m.Service.TLS = new(tls.Config)
	srv := m.Service.NewServer()
	defer srv.Close()
	pw, _ := srv.URL.User.Password()
	pwFile := filepath.Join(t.TempDir(), "vc.pw")
	writeFile(t, pwFile, pw)
	sum := sha256.Sum256(srv.Certificate().Raw)
	u := *srv.URL
	u.User = nil
	j := build(t, fmt.Sprintf(`
targets:
  - name: vcenter
    # Free space follows the simulator's temporary directory; on a real
    # vCenter it is the one field an admin may want to drop too.
    volatile: ['^\s+free_gib:']
    vcenter_inventory:
      url: %s
      user: %s
      password_file: %s
      thumbprint: %s
`, u.String(), srv.URL.User.Username(), pwFile, hex.EncodeToString(sum[:])))
	h := newHarness(t)
	if o := h.run(j); o.run.Status != runner.StatusSuccess {
		t.Fatalf("first run: %+v %+v", o.run, o.findings)
	}
	first := h.stored("vcenter")
	for _, want := range []string{"clusters:\n  - name: DC0_C0\n", "hosts:\n", "datastores:\n  - name: LocalDS_0\n", "networks:\n", "vms:\n  - name: DC0_C0_RP0_VM0\n", "    uuid: ", "    disks:\n", "    snapshots: 0\n"} {
		if !strings.Contains(first, want) {
			t.Errorf("inventory lacks %q:\n%s", want, first)
		}
	}
	// Same inventory: byte-identical, no finding.
	o := h.run(j)
	if o.run.Status != runner.StatusSuccess || len(o.findings) != 0 || h.stored("vcenter") != first {
		t.Fatalf("second run is not stable: %+v %+v", o.run, o.findings)
	}

	// Change one VM's memory and add a VM: the diff shows exactly that.
	c, err := govmomi.NewClient(ctx, srv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	finder := find.NewFinder(c.Client, true)
	dc, err := finder.DefaultDatacenter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	finder.SetDatacenter(dc)
	vm, err := finder.VirtualMachine(ctx, "DC0_H0_VM0")
	if err != nil {
		t.Fatal(err)
	}
	task, err := vm.Reconfigure(ctx, types.VirtualMachineConfigSpec{MemoryMB: 6144})
	if err != nil || task.Wait(ctx) != nil {
		t.Fatalf("reconfigure: %v", err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	task, err = vm.Clone(ctx, folders.VmFolder, "ils-new", types.VirtualMachineCloneSpec{})
	if err != nil || task.Wait(ctx) != nil {
		t.Fatalf("clone: %v", err)
	}
	o = h.run(j)
	cs := o.changes(t)
	if o.run.Status != runner.StatusSuccess || len(cs) != 1 {
		t.Fatalf("third run: %+v %+v", o.run, o.findings)
	}
	third := h.stored("vcenter")
	// The new VM's block, as stored.
	start := strings.Index(third, "  - name: ils-new\n")
	if start < 0 {
		t.Fatalf("new VM missing:\n%s", third)
	}
	end := strings.Index(third[start+1:], "\n  - name: ")
	block := third[start:]
	if end >= 0 {
		block = third[start : start+1+end+1]
	}
	var plus, minus []string
	for _, l := range SplitLines(cs[0].Diff) {
		switch {
		case strings.HasPrefix(l, "+++"), strings.HasPrefix(l, "---"):
		case strings.HasPrefix(l, "+"):
			plus = append(plus, l[1:])
		case strings.HasPrefix(l, "-"):
			minus = append(minus, l[1:])
		}
	}
	if len(minus) != 1 || !strings.HasPrefix(strings.TrimSpace(minus[0]), "memory_mib: ") {
		t.Errorf("removed lines: %q\n%s", minus, cs[0].Diff)
	}
	wantPlus := append([]string{"    memory_mib: 6144"}, SplitLines(block)...)
	if strings.Join(plus, "\n") != strings.Join(wantPlus, "\n") && !sameSet(plus, wantPlus) {
		t.Errorf("added lines:\n%s\nwant:\n%s\ndiff:\n%s", strings.Join(plus, "\n"), strings.Join(wantPlus, "\n"), cs[0].Diff)
	}
	if f := o.finding("config.changed", "vcenter"); f == nil || f.Message != fmt.Sprintf("vcenter: config changed, +%d −1 lines", len(wantPlus)) {
		t.Errorf("finding: %+v", o.findings)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	count := map[string]int{}
	for _, s := range a {
		count[s]++
	}
	for _, s := range b {
		count[s]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}
