package configexport

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// The tests in this file talk to a real OpenSSH server (Debian's
// openssh-server, which .ci/run installs) whose forced command is the
// device emulator in internal/devemu, so the ssh source meets a real
// sshd, a real pty and a real line discipline.

// sshdPath is the server the tests start; VIGIL_SSHD overrides it.
func sshdPath(t testing.TB) string {
	t.Helper()
	p := os.Getenv("VIGIL_SSHD")
	if p == "" {
		p = "/usr/sbin/sshd"
	}
	if _, err := os.Stat(p); err != nil {
		// CI installs openssh-server: missing there is a broken set-up,
		// not a reason to pass silently.
		if os.Getenv("CI") == "true" {
			t.Fatalf("OpenSSH server %s is required in CI (.ci/run installs openssh-server): %v", p, err)
		}
		t.Skipf("OpenSSH server %s not found (apt-get install openssh-server, or set VIGIL_SSHD): %v", p, err)
	}
	return p
}

var devemu struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// devemuPath builds the device emulator once per test binary, unless
// VIGIL_DEVEMU names one already built (for a run without a toolchain,
// such as a test binary run as another user).
func devemuPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VIGIL_DEVEMU"); p != "" {
		return p
	}
	devemu.once.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if devemu.dir, devemu.err = os.MkdirTemp("", "vigil-devemu-"); devemu.err != nil {
			return
		}
		devemu.path = filepath.Join(devemu.dir, "devemu")
		out, err := exec.Command(goBin, "build", "-o", devemu.path, "./internal/devemu").CombinedOutput()
		if err != nil {
			devemu.err = fmt.Errorf("build devemu: %w\n%s", err, out)
		}
	})
	if devemu.err != nil {
		t.Fatal(devemu.err)
	}
	return devemu.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if devemu.dir != "" {
		os.RemoveAll(devemu.dir)
	}
	os.Exit(code)
}

// syncBuffer collects sshd's log from its stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// realSSHD is an sshd on 127.0.0.1 that lets the current user in with
// one key per emulated device; the key decides which device answers.
type realSSHD struct {
	port    int
	user    string
	hostKey ssh.PublicKey
	keys    map[string]string // device name -> private key file
	dir     string
	log     *syncBuffer
}

// writeKey generates an ed25519 key, writes the private half in OpenSSH
// format and returns the public half.
func writeKey(t testing.TB, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// startSSHD starts sshd with devices (name -> devemu arguments) and stops
// it when the test ends. logLevel is sshd's LogLevel (VERBOSE if empty).
func startSSHD(t testing.TB, devices map[string][]string, logLevel string) *realSSHD {
	t.Helper()
	bin := sshdPath(t)
	emu := devemuPath(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// Run as root, sshd insists on its privilege separation directory,
		// which the service unit normally creates at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("create sshd's privilege separation directory: %v", err)
		}
	}
	if logLevel == "" {
		logLevel = "VERBOSE"
	}
	s := &realSSHD{user: me.Username, keys: map[string]string{}, dir: t.TempDir(), log: &syncBuffer{}}
	s.hostKey = writeKey(t, filepath.Join(s.dir, "host_ed25519"))
	var ak strings.Builder
	ptyChecked := false
	for name, args := range devices {
		key := filepath.Join(s.dir, "client_"+name)
		pub := writeKey(t, key)
		s.keys[name] = key
		if args == nil {
			// No device: the key gets the user's own shell (exec mode).
			fmt.Fprintf(&ak, "no-port-forwarding,no-agent-forwarding,no-X11-forwarding %s", ssh.MarshalAuthorizedKey(pub))
			continue
		}
		if !ptyChecked {
			requirePty(t)
			ptyChecked = true
		}
		// The shell sshd runs the command with sees single-quoted words.
		argv := []string{shellQuote(emu)}
		for _, a := range args {
			argv = append(argv, shellQuote(a))
		}
		cmd := strings.ReplaceAll(strings.Join(argv, " "), `"`, `\"`)
		fmt.Fprintf(&ak, "command=\"%s\",no-port-forwarding,no-agent-forwarding,no-X11-forwarding %s", cmd, ssh.MarshalAuthorizedKey(pub))
	}
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), []byte(ak.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	// A free port can be taken between choosing and binding it: retry.
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		cfg := filepath.Join(s.dir, "sshd_config")
		writeFileTB(t, cfg, fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %[2]s/host_ed25519
PidFile %[2]s/sshd.pid
AuthorizedKeysFile %[2]s/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers %[3]s
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
# The benchmark opens 16 connections at once; the default 10:30:100
# would drop some of them.
MaxStartups 128
LoginGraceTime 30
LogLevel %[4]s
`, s.port, s.dir, s.user, logLevel))
		s.log = &syncBuffer{}
		cmd := exec.Command(bin, "-D", "-e", "-f", cfg)
		cmd.Stdout, cmd.Stderr = s.log, s.log
		if err := cmd.Start(); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		ready := fmt.Sprintf("Server listening on 127.0.0.1 port %d", s.port)
		deadline := time.Now().Add(15 * time.Second)
		var exitErr error
		up := false
	wait:
		for time.Now().Before(deadline) {
			select {
			case exitErr = <-exited:
				break wait
			case <-time.After(20 * time.Millisecond):
				if strings.Contains(s.log.String(), ready) {
					up = true
					break wait
				}
			}
		}
		if up {
			t.Cleanup(func() {
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
				if t.Failed() {
					t.Logf("sshd log:\n%s", tailString(s.log.String(), 4000))
				}
			})
			return s
		}
		if exitErr == nil {
			cmd.Process.Kill()
			<-exited
		}
		if attempt < 3 && strings.Contains(s.log.String(), "Address already in use") {
			continue
		}
		t.Fatalf("sshd did not start (%v):\n%s", exitErr, s.log.String())
	}
}

// requirePty skips when sshd cannot give this user a pty. Not as root,
// sshd hands the pty over to the tty group and gives up if it may not;
// that works where devpts is mounted with gid=<tty> (every normal host),
// not in containers that mount it without.
func requirePty(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	tty, err := user.LookupGroup("tty")
	if err != nil {
		return // no tty group: sshd keeps the user's group
	}
	if gids, err := os.Getgroups(); err == nil {
		for _, g := range gids {
			if strconv.Itoa(g) == tty.Gid {
				return
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && f[2] == "devpts" && f[1] == "/dev/pts" {
			if slices.Contains(strings.Split(f[3], ","), "gid="+tty.Gid) {
				return
			}
		}
	}
	t.Skipf("sshd, run unprivileged, cannot hand a pty to group tty (gid %s): /dev/pts is mounted without gid=%s and this user is not in the group", tty.Gid, tty.Gid)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func writeFileTB(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// target renders one ssh target for the job config; pin is the
// host_key_fingerprint or known_hosts line.
func (s *realSSHD) target(name, device, profile, timeout, pin string) string {
	if pin == "" {
		pin = fmt.Sprintf("host_key_fingerprint: %q", ssh.FingerprintSHA256(s.hostKey))
	}
	return fmt.Sprintf(`  - name: %s
    timeout: %s
    ssh:
      host: 127.0.0.1
      port: %d
      user: %s
      key_file: %s
      %s
      profile: %s
`, name, timeout, s.port, s.user, s.keys[device], pin, profile)
}

// knownHosts writes a known_hosts file giving key for this server.
func (s *realSSHD) knownHosts(t testing.TB, key ssh.PublicKey) string {
	p := filepath.Join(t.TempDir(), "known_hosts")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
	writeFileTB(t, p, knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)+"\n")
	return p
}

// Secrets in testdata/devices; none may show outside the stored copy.
var deviceSecrets = []string{
	"l1brary-ro", "l1brary-rw", "Auth-Pass-77", "Priv-Pass-88", "rad1us-Sh4red", "tac4cs-Sh4red",
	"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8", "7c4a8d09ca3762af61e59520943dc26494f8941b",
	"$1$Qk3....$Aq9Zs1ujH2dFzX2eXeSfB/", "$1$Rt4.$Hx9Pq0wTicxNn0kE7vJ.a1", "$Z2U9YWRiMjA=", "$U2kyXj1k", "$MGN1dDB9",
}

func deviceConfig(t testing.TB, name string) (path, text string) {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("testdata", "devices", name))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, string(b)
}

// TestRealSSHDShellExports exports ProCurve and ICX CLIs through sshd,
// with paging honoured and ignored and with ICX's default prompt (which
// has a space), and checks each stored copy is exactly the device's
// configuration, twice over (the second night is unchanged).
func TestRealSSHDShellExports(t *testing.T) {
	pc, pcText := deviceConfig(t, "procurve-running-config.txt")
	ic, icText := deviceConfig(t, "icx-running-config.txt")
	s := startSSHD(t, map[string][]string{
		"procurve":        {"-device", "procurve", "-config", pc, "-page", "20"},
		"procurve-pager":  {"-device", "procurve", "-config", pc, "-page", "20", "-ignore-no-page"},
		"icx":             {"-device", "icx", "-config", ic, "-hostname", "branch-icx", "-page", "15"},
		"icx-pager":       {"-device", "icx", "-config", ic, "-page", "15", "-ignore-no-page"},
		"procurve-kh":     {"-device", "procurve", "-config", pc},
		"icx-default-own": {"-device", "icx", "-config", ic},
	}, "")
	with := "concurrency: 4\ntargets:\n" +
		s.target("procurve", "procurve", "aruba-os-switch", "20s", "") +
		s.target("procurve-pager", "procurve-pager", "aruba-os-switch", "20s", "") +
		s.target("icx", "icx", "ruckus-icx", "20s", "") +
		s.target("icx-pager", "icx-pager", "ruckus-icx", "20s", "") +
		s.target("procurve-kh", "procurve-kh", "aruba-os-switch", "20s", "known_hosts: "+s.knownHosts(t, s.hostKey)) +
		s.target("icx-default-prompt", "icx-default-own", "ruckus-icx", "20s", "")
	j := build(t, with)
	h := newHarness(t)
	want := map[string]string{
		"procurve": pcText, "procurve-pager": pcText, "procurve-kh": pcText,
		"icx": icText, "icx-pager": icText, "icx-default-prompt": icText,
	}
	for night := 1; night <= 2; night++ {
		o := h.run(j)
		if o.run.Status != "success" {
			t.Fatalf("night %d: %+v\n%+v", night, o.run, o.findings)
		}
		for target, w := range want {
			if got := h.stored(target); got != w {
				t.Errorf("night %d: %s export differs from the device's configuration:\n%s", night, target, lineDiff(w, got))
			}
		}
		text := o.text(t)
		for _, sec := range deviceSecrets {
			if strings.Contains(text, sec) {
				t.Errorf("night %d: run output shows secret %q", night, sec)
			}
		}
		if night == 2 && len(o.changes(t)) != 0 {
			t.Errorf("night 2 found changes in unchanged devices: %+v", o.changes(t))
		}
	}
}

// lineDiff shows the first differing line of two texts.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d: want %q, got %q\n(got %d lines, want %d)", i+1, w, g, len(gl), len(wl))
		}
	}
	return "identical"
}

// TestRealSSHDHostKeyRefused: a server whose key is not the pinned one is
// refused during key exchange, before the client asks to authenticate.
func TestRealSSHDHostKeyRefused(t *testing.T) {
	pc, _ := deviceConfig(t, "procurve-running-config.txt")
	// DEBUG1 makes sshd log every authentication request. Exec mode needs
	// no pty, so this runs unprivileged anywhere.
	s := startSSHD(t, map[string][]string{"shell": nil}, "DEBUG1")
	files := fmt.Sprintf("      files: [%q]\n", pc)
	other := writeKey(t, filepath.Join(t.TempDir(), "other"))
	with := "targets:\n" +
		s.target("by-fingerprint", "shell", "linux", "10s", fmt.Sprintf("host_key_fingerprint: %q", ssh.FingerprintSHA256(other))) + files +
		s.target("by-known-hosts", "shell", "linux", "10s", "known_hosts: "+s.knownHosts(t, other)) + files
	o := newHarness(t).run(build(t, with))
	if o.run.Status != "failed" {
		t.Fatalf("wrong host keys accepted: %+v %+v", o.run, o.findings)
	}
	for _, target := range []string{"by-fingerprint", "by-known-hosts"} {
		fd := o.finding("config.export_failed", target)
		if fd == nil || !strings.Contains(fd.Message, "host key mismatch") || !strings.Contains(fd.Message, ssh.FingerprintSHA256(s.hostKey)) {
			t.Errorf("%s: want a host key mismatch naming the offered key, got %+v", target, fd)
		}
	}
	// Wait for sshd to see both connections end before reading its log.
	waitFor(t, 5*time.Second, func() bool { return strings.Count(s.log.String(), "[preauth]") >= 2 })
	if log := s.log.String(); strings.Contains(log, "userauth-request") || strings.Contains(log, "Accepted") {
		t.Errorf("the client tried to authenticate to a server with the wrong key:\n%s", log)
	}
	// The same check sees authentication when the key is right, so the
	// absence above means something.
	o = newHarness(t).run(build(t, "targets:\n"+s.target("right", "shell", "linux", "10s", "")+files))
	if o.run.Status != "success" || !strings.Contains(s.log.String(), "userauth-request") {
		t.Errorf("right key: %+v %+v", o.run, o.findings)
	}
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
}

// TestRealSSHDStallAndSilence: a device that stops in the middle of the
// configuration, and one that never shows a prompt, each fail their
// target with a clear message when its timeout ends; the run goes on.
func TestRealSSHDStallAndSilence(t *testing.T) {
	pc, _ := deviceConfig(t, "procurve-running-config.txt")
	s := startSSHD(t, map[string][]string{
		// Line 8 is an SNMP community: the last line quoted must be redacted.
		"stall":  {"-device", "procurve", "-config", pc, "-stall-after", "8"},
		"silent": {"-device", "icx", "-config", pc, "-no-prompt"},
		"fine":   {"-device", "procurve", "-config", pc},
	}, "")
	with := "targets:\n" +
		s.target("stalls", "stall", "aruba-os-switch", "1500ms", "") +
		s.target("silent", "silent", "ruckus-icx", "1s", "") +
		s.target("fine", "fine", "aruba-os-switch", "20s", "")
	start := time.Now()
	o := newHarness(t).run(build(t, with))
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("the run took %s: timeouts were not applied", took)
	}
	if o.run.Status != "partial" {
		t.Errorf("status %s, want partial: %+v", o.run.Status, o.findings)
	}
	fd := o.finding("config.export_failed", "stalls")
	if fd == nil || !strings.Contains(fd.Message, "timed out after 1.5s") ||
		!strings.Contains(fd.Message, `the prompt after "show running-config" did not come`) ||
		!strings.Contains(fd.Message, `snmp-server community \"<redacted>\" manager unrestricted`) {
		t.Errorf("stalled device: want a timeout naming the command and the last (redacted) line, got %+v", fd)
	}
	fd = o.finding("config.export_failed", "silent")
	if fd == nil || !strings.Contains(fd.Message, "timed out after 1s") || !strings.Contains(fd.Message, "the first prompt did not come") {
		t.Errorf("silent device: want a timeout waiting for the first prompt, got %+v", fd)
	}
	text := o.text(t)
	for _, sec := range deviceSecrets {
		if strings.Contains(text, sec) {
			t.Errorf("run output shows secret %q", sec)
		}
	}
}

// TestRealSSHDExecFiles reads files with the linux profile (exec mode, no
// pty) through sshd and the user's own shell: names are quoted for that
// shell, and a missing file fails the target with cat's complaint.
func TestRealSSHDExecFiles(t *testing.T) {
	pc, pcText := deviceConfig(t, "procurve-running-config.txt")
	odd := filepath.Join(t.TempDir(), "it's $HOME; here.conf")
	writeFileTB(t, odd, "quoted = yes\n")
	s := startSSHD(t, map[string][]string{"shell": nil}, "")
	h := newHarness(t)
	files := fmt.Sprintf("      files: [%q, %q]\n", pc, odd)
	o := h.run(build(t, "targets:\n"+s.target("host", "shell", "linux", "20s", "")+files))
	if o.run.Status != "success" {
		t.Fatalf("exec: %+v %+v", o.run, o.findings)
	}
	want := "### cat -- " + shellQuote(pc) + "\n" + pcText + "### cat -- " + shellQuote(odd) + "\nquoted = yes\n"
	if got := h.stored("host"); got != want {
		t.Errorf("exec export differs:\n%s", lineDiff(want, got))
	}
	missing := filepath.Join(t.TempDir(), "missing.conf")
	o = h.run(build(t, "targets:\n"+s.target("host", "shell", "linux", "20s", "")+fmt.Sprintf("      files: [%q]\n", missing)))
	fd := o.finding("config.export_failed", "host")
	if o.run.Status != "failed" || fd == nil || !strings.Contains(fd.Message, "exited with status 1") || !strings.Contains(fd.Message, "No such file or directory") {
		t.Errorf("missing file: want the exit status and cat's message, got %+v", o.findings)
	}
}
