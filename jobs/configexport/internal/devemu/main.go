// Command devemu emulates the command line of a network switch on its
// standard input and output. The configexport tests run it as the forced
// command of a real OpenSSH server (authorized_keys command="devemu ..."),
// so the ssh source is exercised against sshd, a real pty and a CLI that
// behaves the way the vendors document theirs:
//
//   - procurve: HP/Aruba ProCurve (ArubaOS-Switch). VT100 set-up sequences
//     and a copyright banner, "Press any key to continue", a "name# " prompt
//     drawn at the bottom row with cursor-positioning codes, `no page`, a
//     "-- MORE --, next page: Space, next line: Enter, quit: Control-C"
//     pager in reverse video erased with an erase-line sequence, and
//     "Running configuration:" before the configuration.
//   - icx: Ruckus (Brocade) ICX FastIron. A "SSH@name#" prompt (the default
//     name has a space, "ICX7150-24P Router"), `skip-page-display`
//     answered "Disable page display mode", a "--More--, next page: Space,
//     next line: Return key, quit: Control-c" pager erased with
//     backspaces, and "Current configuration:" before the configuration.
//
// Faults for the timeout tests: -stall-after N stops sending after N lines
// of configuration, -no-prompt never shows a prompt, -ignore-no-page keeps
// paging whatever the client says. The program exits when its terminal
// goes away, or after -life as a safety net.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

type device struct {
	banner    string
	anyKey    bool
	prompt    func() string
	noPage    string
	noPageAck string
	pager     string
	erase     func() string // sent after the pager prompt is answered
	head      string        // printed before the configuration
}

func procurve(host string) device {
	return device{
		// Wrap off, scroll region, origin mode off, clear screen.
		banner: "\x1b[?7l\x1b[3;23r\x1b[?6l\x1b[1;1H\x1b[2J\x1b[1;1H\r\n" +
			"HP J9850A Switch 5406Rzl2\r\n\r\nSoftware revision KB.16.10.0009\r\n\r\n" +
			"(C) Copyright 2020 Hewlett Packard Enterprise Development LP\r\n\r\n" +
			"                   RESTRICTED RIGHTS LEGEND\r\n" +
			" Confidential computer software. Valid license from HPE required for\r\n" +
			" possession, use or copying.\r\n\r\n" +
			"We'd like to keep you up to date about:\r\n" +
			"  * Software feature updates\r\n  * New product announcements\r\n  * Special events\r\n\r\n" +
			"Please register your products now at:  www.hpe.com/networking/register\r\n\r\n\r\n",
		anyKey: true,
		// Redraw the prompt on the last row, as the switch does after each command.
		prompt:    func() string { return "\x1b[1;24r\x1b[24;1H\x1b[24;1H\x1b[2K\x1b[24;1H" + host + "# " },
		noPage:    "no page",
		pager:     "\x1b[24;1H\x1b[2K\x1b[7m-- MORE --, next page: Space, next line: Enter, quit: Control-C\x1b[0m",
		erase:     func() string { return "\x1b[24;1H\x1b[2K" },
		head:      "\r\nRunning configuration:\r\n\r\n",
		noPageAck: "",
	}
}

func icx(host string) device {
	const pager = "--More--, next page: Space, next line: Return key, quit: Control-c"
	return device{
		banner:    "\r\n",
		prompt:    func() string { return "SSH@" + host + "#" },
		noPage:    "skip-page-display",
		noPageAck: "Disable page display mode\r\n",
		pager:     pager,
		erase: func() string {
			n := len(pager)
			return strings.Repeat("\b", n) + strings.Repeat(" ", n) + strings.Repeat("\b", n)
		},
		head: "Current configuration:\r\n",
	}
}

func main() {
	kind := flag.String("device", "procurve", "procurve or icx")
	cfgFile := flag.String("config", "", "running configuration to show (LF line ends)")
	host := flag.String("hostname", "", "name in the prompt (default per device)")
	pageLines := flag.Int("page", 22, "lines per page while paging is on")
	stallAfter := flag.Int("stall-after", 0, "stop sending after this many configuration lines (0: never)")
	noPrompt := flag.Bool("no-prompt", false, "never show a prompt")
	ignoreNoPage := flag.Bool("ignore-no-page", false, "keep paging after the paging-off command")
	life := flag.Duration("life", 5*time.Minute, "exit after this long whatever happens")
	flag.Parse()

	if err := run(*kind, *cfgFile, *host, *pageLines, *stallAfter, *noPrompt, *ignoreNoPage, *life); err != nil {
		fmt.Fprintln(os.Stderr, "devemu:", err)
		os.Exit(1)
	}
}

func run(kind, cfgFile, host string, pageLines, stallAfter int, noPrompt, ignoreNoPage bool, life time.Duration) error {
	cfg, err := os.ReadFile(cfgFile)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var d device
	switch kind {
	case "procurve":
		if host == "" {
			host = "HP-5406Rzl2"
		}
		d = procurve(host)
	case "icx":
		if host == "" {
			host = "ICX7150-24P Router"
		}
		d = icx(host)
	default:
		return fmt.Errorf("unknown device %q", kind)
	}
	// A switch echoes and ends lines itself: take the pty out of cooked
	// mode so the line discipline does neither.
	if term.IsTerminal(0) {
		old, err := term.MakeRaw(0)
		if err != nil {
			return fmt.Errorf("raw mode: %w", err)
		}
		defer term.Restore(0, old)
	}
	time.AfterFunc(life, func() { os.Exit(2) })

	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	w := func(s string) { out.WriteString(s) }
	flush := func() error { return out.Flush() }
	// hang models a device that stops talking: read until the client goes.
	hang := func() error {
		_, err := io.Copy(io.Discard, in)
		return err
	}

	w(d.banner)
	if d.anyKey {
		w("Press any key to continue")
		if err := flush(); err != nil {
			return err
		}
		if _, err := in.ReadByte(); err != nil {
			return eof(err)
		}
		w("\x1b[2K\r")
	}
	if noPrompt {
		flush()
		return eof(hang())
	}
	paging := true
	lines := strings.Split(strings.TrimSuffix(string(cfg), "\n"), "\n")
	for {
		w(d.prompt())
		if err := flush(); err != nil {
			return err
		}
		line, err := readLine(in, out)
		if err != nil {
			return eof(err)
		}
		switch cmd := strings.TrimSpace(line); cmd {
		case "":
		case d.noPage:
			paging = ignoreNoPage
			w(d.noPageAck)
		case "show running-config", "show running-configuration", "sh run":
			w(d.head)
			for i, l := range lines {
				if stallAfter > 0 && i == stallAfter {
					flush()
					return eof(hang())
				}
				if paging && i > 0 && i%pageLines == 0 {
					w(d.pager)
					if err := flush(); err != nil {
						return err
					}
					k, err := in.ReadByte()
					if err != nil {
						return eof(err)
					}
					w(d.erase())
					if k == 3 || k == 'q' { // Control-C ends the listing
						break
					}
				}
				w(l + "\r\n")
			}
		case "exit", "logout":
			return flush()
		default:
			w("Invalid input: " + cmd + "\r\n")
		}
	}
}

// readLine reads up to Enter, echoing what is typed as the switch does.
func readLine(in *bufio.Reader, out *bufio.Writer) (string, error) {
	var b strings.Builder
	for {
		c, err := in.ReadByte()
		if err != nil {
			return "", err
		}
		switch c {
		case '\r', '\n':
			// A client may send CR LF; the LF then reads as an empty line,
			// which only redraws the prompt, as on the device.
			out.WriteString("\r\n")
			return b.String(), nil
		case 0x7f, '\b':
			if b.Len() > 0 {
				s := b.String()
				b.Reset()
				b.WriteString(s[:len(s)-1])
				out.WriteString("\b \b")
			}
		default:
			b.WriteByte(c)
			out.WriteByte(c)
			out.Flush()
		}
	}
}

// eof treats the terminal going away (EOF, or EIO from a closed pty) as
// the normal end of a session.
func eof(err error) error {
	if err == nil || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "input/output error") {
		return nil
	}
	return err
}
