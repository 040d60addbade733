package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"
)

// configureTransport returns the settings applied to the SDK's HTTP
// transport, chosen on purpose rather than left at Go's or the SDK's
// defaults; docs/storage.md explains each value. The SDK's buildable client
// is kept (not a plain http.Client) so that AWS_CA_BUNDLE and ca_bundle in
// the AWS profile still add their certificates.
func configureTransport(o Options, log *slog.Logger) (func(*http.Transport), error) {
	var roots *x509.CertPool
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 transport: read CA file: %w", err)
		}
		// Start from the system pool so a private CA adds to, not replaces,
		// the public roots.
		roots, err = x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 transport: CA file %s holds no PEM certificate", o.CAFile)
		}
	}
	if o.InsecureTLS {
		log.Warn("s3: TLS certificate verification is OFF (insecure TLS); anyone on the path can read and alter backups in transit")
	}
	dialer := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	idle := o.IdleTimeout
	return func(tr *http.Transport) {
		tr.Proxy = http.ProxyFromEnvironment
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, idle: idle}, nil
		}
		tr.TLSClientConfig = &tls.Config{
			MinVersion:         tls.VersionTLS12,
			RootCAs:            roots,
			InsecureSkipVerify: o.InsecureTLS,
		}
		tr.TLSHandshakeTimeout = o.DialTimeout
		// Covers a server that accepted the request but never answers.
		tr.ResponseHeaderTimeout = o.ResponseHeaderTimeout
		// Go's default keeps only 2 idle connections per host, which makes
		// parallel transfers open and close a connection per request.
		tr.MaxIdleConns = 2 * o.Connections
		tr.MaxIdleConnsPerHost = 2 * o.Connections
		tr.MaxConnsPerHost = 0 // Options.Connections bounds requests instead
		tr.IdleConnTimeout = 90 * time.Second
		// Objects are compressed and encrypted already, and transparent gzip
		// would break ranged reads' byte counts.
		tr.DisableCompression = true
		// S3 speaks HTTP/1.1; one connection per transfer also keeps the idle
		// timeout meaningful (a stalled HTTP/2 stream hides behind busy ones).
		tr.ForceAttemptHTTP2 = false
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		tr.ReadBufferSize = 64 << 10
		tr.WriteBufferSize = 64 << 10
	}, nil
}

// idleConn drops a connection on which no byte moved in either direction for
// idle. net/http has no such timeout: a server that stalls mid-body would
// otherwise hang a transfer forever. Any Write also pushes the read deadline
// out, because while a large upload is being sent the transport is blocked
// reading for the response, and that read must not time out while the
// upload still makes progress.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(b []byte) (int, error) {
	if c.idle > 0 {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Read(b)
}

func (c *idleConn) Write(b []byte) (int, error) {
	if c.idle > 0 {
		_ = c.Conn.SetDeadline(time.Now().Add(c.idle))
	}
	return c.Conn.Write(b)
}
