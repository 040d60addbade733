package vmbackup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/session"
	"github.com/vmware/govmomi/session/keepalive"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// Errors an admin gets a hint for.
var (
	// ErrAuth: vCenter rejected the user name or password.
	ErrAuth = errors.New("vCenter rejected the user name or password")
	// ErrUnreachable: no connection to vCenter could be made.
	ErrUnreachable = errors.New("vCenter is unreachable")
	// ErrTLS: vCenter's certificate did not verify.
	ErrTLS = errors.New("vCenter's TLS certificate is not trusted (set ca_file or thumbprint)")
	// ErrUnknownVM: a VM named in the config does not exist.
	ErrUnknownVM = errors.New("no such VM in vCenter")

	errBadThumbprint = errors.New("thumbprint must be the certificate's SHA-256: 64 hex digits, colons optional")
)

// Session is a logged-in vCenter connection.
type Session struct {
	Client *vim25.Client
	mgr    *session.Manager
	conn   Connection
	log    *slog.Logger
}

// Connect logs in to vCenter. Certificate checks follow conn: a CA file,
// a pinned SHA-256 thumbprint (checked on every TLS connection, including
// the datastore reads), or none when Insecure is set (with a warning).
func Connect(ctx context.Context, conn Connection, log *slog.Logger) (*Session, error) {
	u, err := soap.ParseURL(conn.URL)
	if err != nil || u == nil {
		return nil, fmt.Errorf("connect to vCenter: bad url %q: %v", conn.URL, err)
	}
	sc := soap.NewClient(u, conn.Insecure)
	t := sc.DefaultTransport()
	// Fail fast on an unreachable vCenter; reads themselves may be long.
	t.DialContext = (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 2 * time.Minute
	t.MaxIdleConnsPerHost = 16
	switch {
	case conn.Insecure:
		log.Warn("vCenter TLS certificate is not verified (insecure: true): anyone on the network path can read the password and the disks", "url", u.Host)
	case conn.CAFile != "":
		if err := sc.SetRootCAs(conn.CAFile); err != nil {
			return nil, fmt.Errorf("connect to vCenter: ca_file: %w", err)
		}
	case conn.Thumbprint != "":
		want, err := parseThumbprint(conn.Thumbprint)
		if err != nil {
			return nil, fmt.Errorf("connect to vCenter: %w", err)
		}
		// A pin replaces chain verification, and is checked for every
		// connection: govmomi's own thumbprint support only applies when
		// the chain does not verify, which would let any publicly trusted
		// certificate through.
		t.TLSClientConfig.InsecureSkipVerify = true
		t.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: no certificate presented", ErrTLS)
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(got[:], want) {
				return &thumbprintError{got: formatThumbprint(got[:])}
			}
			return nil
		}
	}
	vc, err := vim25.NewClient(ctx, sc)
	if err != nil {
		return nil, classify(u.Host, err)
	}
	if conn.KeepAlive > 0 {
		// Pings the session when idle so that it outlives long disk reads;
		// Login starts it and Logout stops it.
		vc.RoundTripper = keepalive.NewHandlerSOAP(vc.RoundTripper, conn.KeepAlive, nil)
	}
	mgr := session.NewManager(vc)
	if err := mgr.Login(ctx, url.UserPassword(conn.User, conn.Password.Reveal())); err != nil {
		return nil, classify(u.Host, err)
	}
	return &Session{Client: vc, mgr: mgr, conn: conn, log: log}, nil
}

// Logout ends the session; it uses its own short deadline so it also runs
// after the job's context ended.
func (s *Session) Logout(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.mgr.Logout(ctx); err != nil {
		s.log.Debug("vCenter logout failed", "err", err)
	}
}

// Alive reports whether the session is still logged in.
func (s *Session) Alive(ctx context.Context) bool {
	us, err := s.mgr.UserSession(ctx)
	return err == nil && us != nil
}

type thumbprintError struct{ got string }

func (e *thumbprintError) Error() string {
	return "certificate SHA-256 " + e.got + " does not match the pinned thumbprint"
}

func formatThumbprint(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}

// Thumbprint formats a certificate's SHA-256 the way the config takes it.
func Thumbprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return formatThumbprint(sum[:])
}

// classify maps connection errors to the errors the admin gets a hint for.
func classify(host string, err error) error {
	var te *thumbprintError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	switch {
	case errors.As(err, &te):
		return fmt.Errorf("connect to vCenter %s: %w: %s", host, ErrTLS, te.Error())
	case errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci), errors.As(err, &ve):
		return fmt.Errorf("connect to vCenter %s: %w: %v", host, ErrTLS, err)
	case isFault(err, &types.InvalidLogin{}):
		return fmt.Errorf("connect to vCenter %s: %w", host, ErrAuth)
	}
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &oe) || errors.As(err, &ne) {
		return fmt.Errorf("connect to vCenter %s: %w: %v", host, ErrUnreachable, err)
	}
	return fmt.Errorf("connect to vCenter %s: %w", host, err)
}

// isFault reports whether err carries a vSphere fault of target's type.
func isFault(err error, target types.BaseMethodFault) bool {
	return err != nil && fault.Is(err, target)
}
