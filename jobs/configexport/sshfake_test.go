package configexport

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// device describes how a fake switch CLI behaves. It follows the public
// descriptions of the ProCurve and ICX CLIs: a banner, a prompt, paging
// that a command turns off, a pager prompt erased with escape sequences.
type device struct {
	banner     string // sent before anything else
	anyKey     bool   // "Press any key to continue" after the banner
	prompt     string // e.g. "switch-core-2# "
	noPageCmd  string // turns the pager off
	pager      string // pager prompt text
	pageLines  int
	config     string // running config, "\n" line ends
	configHead string // printed before the config ("Running configuration:")
	// Faults.
	hangAfter  int  // stop sending after this many config lines (0: never)
	noPrompt   bool // never show the first prompt
	ignoreNoPg bool // keep paging whatever the admin says
}

// fakeSSH is an in-process ssh server with a pinned host key: shell
// sessions talk to dev, exec sessions run execs[command].
type fakeSSH struct {
	addr     string
	hostKey  ssh.Signer
	dev      device
	execs    map[string]string
	password string

	mu       sync.Mutex
	commands []string // every shell line and exec command received
}

func newHostKey(t testing.TB) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startFakeSSH(t testing.TB, dev device, execs map[string]string) *fakeSSH {
	t.Helper()
	f := &fakeSSH{hostKey: newHostKey(t), dev: dev, execs: execs, password: "sw-login-pw"}
	cfg := &ssh.ServerConfig{
		PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			if c.User() == "backup" && string(pw) == f.password {
				return nil, nil
			}
			return nil, fmt.Errorf("wrong password for %s", c.User())
		},
	}
	cfg.AddHostKey(f.hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.serve(c, cfg)
			}()
		}
	}()
	return f
}

func (f *fakeSSH) port() int {
	_, p, _ := net.SplitHostPort(f.addr)
	var n int
	fmt.Sscan(p, &n)
	return n
}

func (f *fakeSSH) fingerprint() string { return ssh.FingerprintSHA256(f.hostKey.PublicKey()) }

func (f *fakeSSH) knownHosts(t testing.TB, key ssh.PublicKey) string {
	p := filepath.Join(t.TempDir(), "known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(f.addr)}, key)
	if err := os.WriteFile(p, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fakeSSH) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.commands...)
}

func (f *fakeSSH) record(cmd string) {
	f.mu.Lock()
	f.commands = append(f.commands, cmd)
	f.mu.Unlock()
}

func (f *fakeSSH) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer c.Close()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			return
		}
		go f.session(ch, reqs)
	}
}

func (f *fakeSSH) session(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	for req := range reqs {
		switch req.Type {
		case "pty-req", "env":
			req.Reply(true, nil)
		case "shell":
			req.Reply(true, nil)
			f.shell(ch)
			return
		case "exec":
			req.Reply(true, nil)
			var n uint32
			if len(req.Payload) >= 4 {
				n = binary.BigEndian.Uint32(req.Payload)
			}
			cmd := string(req.Payload[4 : 4+n])
			f.record(cmd)
			status := uint32(0)
			if out, ok := f.execs[cmd]; ok {
				io.WriteString(ch, out)
			} else {
				io.WriteString(ch.Stderr(), "sh: "+cmd+": not found\n")
				status = 127
			}
			ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, status))
			return
		default:
			req.Reply(false, nil)
		}
	}
}

// shell emulates the device CLI on a pty: it echoes what is typed,
// answers commands and pages long output.
func (f *fakeSSH) shell(ch ssh.Channel) {
	d := f.dev
	in := bufio.NewReader(ch)
	w := func(s string) { io.WriteString(ch, s) }
	w(d.banner)
	if d.anyKey {
		w("Press any key to continue")
		if _, err := in.ReadByte(); err != nil {
			return
		}
		w("\x1b[2K\r")
	}
	if d.noPrompt {
		io.Copy(io.Discard, in) // a device stuck after login
		return
	}
	paging := true
	for {
		w("\x1b[1;24r\x1b[24;1H\x1b[2K\x1b[24;1H" + d.prompt)
		line, err := readLine(in, w)
		if err != nil {
			return
		}
		f.record(line)
		switch {
		case line == "":
		case line == d.noPageCmd:
			paging = d.ignoreNoPg
		case line == "show running-config":
			w(d.configHead)
			for i, l := range strings.SplitAfter(strings.TrimSuffix(d.config, "\n"), "\n") {
				if d.hangAfter > 0 && i == d.hangAfter {
					io.Copy(io.Discard, in)
					return
				}
				if paging && i > 0 && i%d.pageLines == 0 {
					w("\x1b[7m" + d.pager + "\x1b[0m")
					if _, err := in.ReadByte(); err != nil {
						return
					}
					w("\r\x1b[2K\r")
				}
				w(strings.TrimSuffix(l, "\n") + "\r\n")
			}
		case line == "exit" || line == "logout":
			return
		default:
			w("Invalid input: " + line + "\r\n")
		}
	}
}

// readLine reads up to Enter, echoing like a terminal does.
func readLine(in *bufio.Reader, w func(string)) (string, error) {
	var b strings.Builder
	for {
		c, err := in.ReadByte()
		if err != nil {
			return "", err
		}
		switch c {
		case '\r', '\n':
			w("\r\n")
			return b.String(), nil
		default:
			b.WriteByte(c)
			w(string(c))
		}
	}
}
