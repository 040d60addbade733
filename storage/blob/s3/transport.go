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
	"sync"
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
			if idle <= 0 {
				return c, nil
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

// idleConn adds what net/http lacks: a timeout for a transfer that stalls
// after it started. ResponseHeaderTimeout covers the wait for an answer;
// after that, a server that goes silent mid-body would hang a restore
// forever.
//
//   - Once a response has begun (a read returned bytes), every read must
//     return within idle.
//   - Every write must complete within idle (a server that stops taking an
//     upload).
//   - A write (the next request) disarms the read timeout again: until the
//     answer begins, the wait is ResponseHeaderTimeout's. Timing that wait
//     here would cut slow uploads, because the last bytes written sit in
//     the kernel's send buffer, invisible to us, for as long as the link
//     needs to drain it.
//
// An idle pooled connection keeps its read timeout armed, so it is closed
// after idle, which is harmless.
type idleConn struct {
	net.Conn
	idle time.Duration

	mu        sync.Mutex // orders deadline changes between the read and write goroutines
	receiving bool       // a response has begun since the last write
}

func (c *idleConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.receiving {
		_ = c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	}
	c.mu.Unlock()
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.mu.Lock()
		c.receiving = true
		c.mu.Unlock()
	}
	return n, err
}

func (c *idleConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if c.receiving {
		c.receiving = false
		_ = c.Conn.SetReadDeadline(time.Time{})
	}
	c.mu.Unlock()
	// In steps, each with its own deadline: a body's WriteTo may hand over
	// many MiB in one call, which a slow link needs longer than idle for.
	written := 0
	for written < len(b) {
		end := min(len(b), written+writeStep)
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
		n, err := c.Conn.Write(b[written:end])
		written += n
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// writeStep is the most written under one deadline.
const writeStep = 256 << 10
