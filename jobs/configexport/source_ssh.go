package configexport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/vigilops/vigil/configs"
)

// SSHSource exports over ssh with a device profile.
type SSHSource struct {
	Host          string         `yaml:"host"`
	Port          int            `yaml:"port"`
	User          string         `yaml:"user"`
	Password      configs.Secret `yaml:"password"`
	KeyFile       string         `yaml:"key_file"`
	KeyPassphrase configs.Secret `yaml:"key_passphrase"`
	// EnablePassword answers {{enable_password}} in profile answers
	// (defaults to Password).
	EnablePassword configs.Secret `yaml:"enable_password"`
	// The host key must be pinned, by a known_hosts file or by its
	// fingerprint as `ssh-keygen -lf` prints it ("SHA256:..."); a server
	// offering any other key is refused.
	KnownHosts         string `yaml:"known_hosts"`
	HostKeyFingerprint string `yaml:"host_key_fingerprint"`
	Profile            string `yaml:"profile"`
	// These override the profile's.
	Mode        string   `yaml:"mode"`
	Prompt      string   `yaml:"prompt"`
	PreCommands []string `yaml:"pre_commands"`
	Commands    []string `yaml:"commands"`
	// Files are read with the profile's file_command (the linux profile).
	Files []string `yaml:"files"`
	// ConnectTimeout bounds dialling and the handshake (default 20s).
	ConnectTimeout configs.Duration `yaml:"connect_timeout"`
}

func (s SSHSource) isZero() bool { return s.Host == "" && s.User == "" && s.Profile == "" }

type sshSource struct {
	s    SSHSource
	prof *compiledProfile
	cmds []string
}

func newSSH(s SSHSource, profiles map[string]Profile) (source, error) {
	if s.Host == "" {
		return nil, errors.New("host is required")
	}
	if s.Port == 0 {
		s.Port = 22
	}
	if s.Port < 1 || s.Port > 65535 {
		return nil, fmt.Errorf("port %d is out of range", s.Port)
	}
	if s.User == "" {
		return nil, errors.New("user is required")
	}
	if !s.Password.IsSet() && s.KeyFile == "" {
		return nil, errors.New("set password (or password_file) or key_file")
	}
	if s.KnownHosts == "" && s.HostKeyFingerprint == "" {
		return nil, errors.New("the host key must be pinned: set known_hosts or host_key_fingerprint (ssh-keygen -lf key.pub)")
	}
	if s.HostKeyFingerprint != "" && !strings.HasPrefix(s.HostKeyFingerprint, "SHA256:") {
		return nil, fmt.Errorf("host_key_fingerprint must look like SHA256:<base64>, got %q", s.HostKeyFingerprint)
	}
	if s.ConnectTimeout == 0 {
		s.ConnectTimeout = configs.Duration(20 * time.Second)
	}
	name := s.Profile
	if name == "" {
		name = "linux"
		if s.Mode == "shell" {
			return nil, errors.New("shell mode needs a profile (or a profile of your own under profiles:)")
		}
	}
	p, ok := profiles[name]
	if !ok {
		return nil, fmt.Errorf("unknown profile %q", name)
	}
	if s.Mode != "" {
		p.Mode = s.Mode
	}
	if s.Prompt != "" {
		p.Prompt = s.Prompt
	}
	if s.PreCommands != nil {
		p.PreCommands = s.PreCommands
	}
	if s.Commands != nil {
		p.Commands = s.Commands
	}
	prof, err := p.compile()
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", name, err)
	}
	cmds := append([]string{}, p.Commands...)
	if len(s.Files) > 0 {
		if p.FileCommand == "" {
			return nil, fmt.Errorf("profile %s has no file_command, so files cannot be read", name)
		}
		for _, f := range s.Files {
			cmds = append(cmds, strings.ReplaceAll(p.FileCommand, "{file}", shellQuote(f)))
		}
	}
	if len(cmds) == 0 {
		return nil, errors.New("nothing to export: set commands (or files with the linux profile)")
	}
	return &sshSource{s: s, prof: prof, cmds: cmds}, nil
}

func (s *sshSource) rules() extraRules {
	return extraRules{volatile: s.prof.volatile, redact: s.prof.redact, pager: s.prof.pager}
}

// shellQuote quotes a path for the remote POSIX shell exec commands run in.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// hostKeyCallback pins the server's key.
func (s *sshSource) hostKeyCallback() (ssh.HostKeyCallback, error) {
	if s.s.HostKeyFingerprint != "" {
		want := s.s.HostKeyFingerprint
		return func(host string, _ net.Addr, key ssh.PublicKey) error {
			if got := ssh.FingerprintSHA256(key); got != want {
				return fmt.Errorf("host key mismatch for %s: server offered %s %s, pinned %s; refusing to connect", host, key.Type(), got, want)
			}
			return nil
		}, nil
	}
	cb, err := knownhosts.New(s.s.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	return func(host string, addr net.Addr, key ssh.PublicKey) error {
		err := cb(host, addr, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			if len(ke.Want) == 0 {
				return fmt.Errorf("host %s is not in %s; add its key (ssh-keyscan) after checking it", host, s.s.KnownHosts)
			}
			return fmt.Errorf("host key mismatch for %s: server offered %s %s, %s has another key; refusing to connect", host, key.Type(), ssh.FingerprintSHA256(key), s.s.KnownHosts)
		}
		return err
	}, nil
}

func (s *sshSource) authMethods() ([]ssh.AuthMethod, error) {
	var methods []ssh.AuthMethod
	if s.s.KeyFile != "" {
		pem, err := os.ReadFile(s.s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("read key_file: %w", err)
		}
		var signer ssh.Signer
		if s.s.KeyPassphrase.IsSet() {
			signer, err = ssh.ParsePrivateKeyWithPassphrase(pem, []byte(s.s.KeyPassphrase.Reveal()))
		} else {
			signer, err = ssh.ParsePrivateKey(pem)
		}
		if err != nil {
			return nil, fmt.Errorf("key_file %s: %w", s.s.KeyFile, err)
		}
		methods = append(methods, ssh.PublicKeys(signer))
	}
	if s.s.Password.IsSet() {
		pw := s.s.Password.Reveal()
		methods = append(methods, ssh.Password(pw),
			// Many switches only offer keyboard-interactive; answer every
			// question with the password.
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	return methods, nil
}

// dial connects and authenticates; ctx bounds the whole handshake.
func (s *sshSource) dial(ctx context.Context) (*ssh.Client, error) {
	hkc, err := s.hostKeyCallback()
	if err != nil {
		return nil, err
	}
	auth, err := s.authMethods()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(s.s.Host, strconv.Itoa(s.s.Port))
	dctx, cancel := context.WithTimeout(ctx, s.s.ConnectTimeout.D())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	// The handshake has no context of its own: closing the connection
	// when dctx ends unblocks it.
	stop := context.AfterFunc(dctx, func() { conn.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{User: s.s.User, Auth: auth, HostKeyCallback: hkc})
	if !stop() {
		if err == nil {
			cc.Close()
		}
		return nil, fmt.Errorf("ssh %s: handshake: %w", addr, context.Cause(dctx))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh %s: %w", addr, err)
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

func (s *sshSource) export(ctx context.Context, out *capture, log *slog.Logger, red *redactor) error {
	client, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	// Whatever blocks on the connection (a silent device) ends with ctx.
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	if s.prof.Mode == "exec" {
		return s.execAll(ctx, client, out, log, red)
	}
	return s.shell(ctx, client, out, log, red)
}

// execAll runs each command on its own channel, stdout into out.
func (s *sshSource) execAll(ctx context.Context, client *ssh.Client, out *capture, log *slog.Logger, red *redactor) error {
	for _, cmd := range s.cmds {
		if len(s.cmds) > 1 {
			fmt.Fprintf(out, "### %s\n", cmd)
		}
		sess, err := client.NewSession()
		if err != nil {
			return fmt.Errorf("ssh %s: new session: %w", s.s.Host, ctxErr(ctx, err))
		}
		stderr := &tail{n: 512}
		sess.Stdout, sess.Stderr = out, stderr
		log.Debug("ssh exec", "command", cmd)
		err = sess.Run(cmd)
		sess.Close()
		if err != nil {
			if msg := stderr.String(); msg != "" {
				return fmt.Errorf("ssh %s: %q: %w: %s", s.s.Host, cmd, ctxErr(ctx, err), red.Redact(lastLine(msg)))
			}
			return fmt.Errorf("ssh %s: %q: %w", s.s.Host, cmd, ctxErr(ctx, err))
		}
	}
	return nil
}

// ctxErr prefers the context's reason over the "connection closed" that
// closing the client on timeout produces.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}

// shell drives an interactive CLI: wait for the prompt, send pre-commands,
// then each command, keeping only the commands' output.
func (s *sshSource) shell(ctx context.Context, client *ssh.Client, out *capture, log *slog.Logger, red *redactor) error {
	sess, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("ssh %s: new session: %w", s.s.Host, ctxErr(ctx, err))
	}
	defer sess.Close()
	p := s.prof
	modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := sess.RequestPty(p.TerminalType, p.TermHeight, p.TermWidth, modes); err != nil {
		return fmt.Errorf("ssh %s: request pty: %w", s.s.Host, ctxErr(ctx, err))
	}
	stdin, err := sess.StdinPipe()
	if err != nil {
		return fmt.Errorf("ssh %s: %w", s.s.Host, err)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return fmt.Errorf("ssh %s: %w", s.s.Host, err)
	}
	if err := sess.Shell(); err != nil {
		return fmt.Errorf("ssh %s: start shell: %w", s.s.Host, ctxErr(ctx, err))
	}
	enable := s.s.EnablePassword
	if !enable.IsSet() {
		enable = s.s.Password
	}
	sh := &expecter{
		in: stdin, prof: p, chunks: make(chan []byte, 16), done: make(chan struct{}), red: red,
		secrets: strings.NewReplacer("{{password}}", s.s.Password.Reveal(), "{{enable_password}}", enable.Reveal()),
	}
	go sh.readLoop(stdout)
	defer close(sh.done)

	if err := sh.until(ctx, "the first prompt", nil, ""); err != nil {
		return fmt.Errorf("ssh %s: %w", s.s.Host, err)
	}
	for _, c := range p.PreCommands {
		if err := sh.send(c + "\n"); err != nil {
			return fmt.Errorf("ssh %s: send %q: %w", s.s.Host, c, ctxErr(ctx, err))
		}
		if err := sh.until(ctx, fmt.Sprintf("the prompt after %q", c), nil, c); err != nil {
			return fmt.Errorf("ssh %s: %w", s.s.Host, err)
		}
	}
	for _, c := range s.cmds {
		if len(s.cmds) > 1 {
			fmt.Fprintf(out, "### %s\n", c)
		}
		log.Debug("ssh shell command", "command", c)
		if err := sh.send(c + "\n"); err != nil {
			return fmt.Errorf("ssh %s: send %q: %w", s.s.Host, c, ctxErr(ctx, err))
		}
		if err := sh.until(ctx, fmt.Sprintf("the prompt after %q", c), out, c); err != nil {
			return fmt.Errorf("ssh %s: %w", s.s.Host, err)
		}
	}
	if p.ExitCommand != "" {
		_ = sh.send(p.ExitCommand + "\n")
	}
	return nil
}

// expecter reads an interactive session and recognises prompts, pager
// prompts and questions on the unfinished last line.
type expecter struct {
	in       io.Writer
	prof     *compiledProfile
	chunks   chan []byte
	done     chan struct{} // closed when the session is over: readLoop stops
	readErr  error         // set before chunks is closed
	secrets  *strings.Replacer
	red      *redactor // lastSeen is redacted when an error quotes it
	pending  []byte    // the unfinished last line, raw
	lastSeen string    // raw: redacting every line would cost more than the export
}

// maxPending bounds an unfinished line; a longer one is emitted as is.
const maxPending = 64 << 10

func (e *expecter) readLoop(r io.Reader) {
	defer close(e.chunks)
	for {
		buf := make([]byte, 32<<10)
		n, err := r.Read(buf)
		if n > 0 {
			select {
			case e.chunks <- buf[:n]:
			case <-e.done:
				return
			}
		}
		if err != nil {
			e.readErr = err
			return
		}
	}
}

func (e *expecter) send(s string) error {
	_, err := io.WriteString(e.in, e.secrets.Replace(s))
	return err
}

// until consumes output until the prompt shows. Complete lines go to out
// (nil discards them); the first line is dropped when it is the echo of
// echo.
func (e *expecter) until(ctx context.Context, what string, out io.Writer, echo string) error {
	first := true
	emit := func(line []byte) {
		vis := strings.TrimSpace(terminalLine(stripANSI(string(line))))
		if vis != "" {
			e.lastSeen = vis
		}
		if first {
			first = false
			if echo != "" && strings.HasSuffix(vis, echo) {
				return
			}
		}
		if out != nil {
			_, _ = out.Write(line)
			_, _ = out.Write([]byte{'\n'})
		}
	}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not come: %w; last output: %q", what, context.Cause(ctx), e.red.Redact(e.lastSeen))
		case chunk, ok := <-e.chunks:
			if !ok {
				err := e.readErr
				if err == nil || errors.Is(err, io.EOF) {
					err = errors.New("connection closed by the device")
				}
				return fmt.Errorf("waiting for %s: %w; last output: %q", what, ctxErr(ctx, err), e.red.Redact(e.lastSeen))
			}
			e.pending = append(e.pending, chunk...)
			for {
				i := indexByte(e.pending, '\n')
				if i < 0 {
					break
				}
				emit(e.pending[:i])
				e.pending = e.pending[i+1:]
			}
			if len(e.pending) > maxPending {
				emit(e.pending)
				e.pending = nil
			}
			vis := strings.TrimRight(terminalLine(stripANSI(string(e.pending))), "\r")
			if strings.TrimSpace(vis) != "" {
				e.lastSeen = vis
			}
			switch {
			case e.prof.prompt.MatchString(vis):
				e.pending = e.pending[:0]
				return nil
			case e.prof.pager != nil && e.prof.pager.MatchString(vis):
				e.pending = e.pending[:0]
				if err := e.send(e.prof.PagerAnswer); err != nil {
					return fmt.Errorf("answer pager: %w", err)
				}
			default:
				for _, a := range e.prof.answers {
					if a.expect.MatchString(vis) {
						e.pending = e.pending[:0]
						if err := e.send(a.send); err != nil {
							return fmt.Errorf("answer %q: %w", e.red.Redact(vis), err)
						}
						break
					}
				}
			}
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
