// Package s3test helps test code that talks to S3: it finds the real test
// servers started by scripts/s3-servers.sh, and puts a fault-injecting
// reverse proxy in front of them. Like net/http/httptest, it is meant for
// tests only.
package s3test

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is a way for the proxy to fail a request.
type Fault string

// The faults the proxy injects.
const (
	Fault500   Fault = "500"   // 500 InternalError, request not forwarded
	Fault503   Fault = "503"   // 503 SlowDown, request not forwarded
	FaultReset Fault = "reset" // GET: half the body, then a TCP reset; others: reset while the body is sent
	FaultStall Fault = "stall" // GET: half the body, then silence; others: no answer at all
)

// AllFaults lists every Fault.
var AllFaults = []Fault{Fault500, Fault503, FaultReset, FaultStall}

// FaultProxy is a real HTTP reverse proxy on 127.0.0.1 in front of an S3
// server. Every request passes through, except a share (rate) of them, spread
// evenly, that fail with one of the faults, taken in turn. A stalled request
// is held until the client gives up or the test ends.
type FaultProxy struct {
	// Slow, when set before the first request, makes the proxy move bodies in
	// both directions in 32 KiB steps with this pause between them: slow but
	// never idle.
	Slow time.Duration

	rate   float64
	faults []Fault
	proxy  *httputil.ReverseProxy
	target *url.URL
	srv    *httptest.Server
	done   chan struct{} // closed on shutdown to end stalls

	mu       sync.Mutex
	requests int
	injected map[Fault]int
	inFlight int
	maxIn    int
	seen     []*http.Request // method, URL and headers of every request
}

// NewFaultProxy starts a proxy to endpoint that fails the given share of
// requests (0.1 = every tenth) with faults in turn; it stops when the test
// ends.
func NewFaultProxy(t testing.TB, endpoint string, rate float64, faults ...Fault) *FaultProxy {
	t.Helper()
	return start(t, httptest.NewServer, endpoint, rate, faults)
}

// NewTLSProxy starts a pass-through proxy to endpoint that serves HTTPS with
// a self-signed certificate (see Server().Certificate()).
func NewTLSProxy(t testing.TB, endpoint string) *FaultProxy {
	t.Helper()
	return start(t, httptest.NewTLSServer, endpoint, 0, nil)
}

func start(t testing.TB, serve func(http.Handler) *httptest.Server, endpoint string, rate float64, faults []Fault) *FaultProxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	f := &FaultProxy{rate: rate, faults: faults, target: target, injected: map[Fault]int{}, done: make(chan struct{})}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The client signed the Host it talked to; keep it.
			r.Out.Host = r.In.Host
		},
	}
	f.srv = serve(f)
	t.Cleanup(func() {
		close(f.done)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

// URL is the proxy's base URL, to use as the S3 endpoint.
func (f *FaultProxy) URL() string { return f.srv.URL }

// Server is the proxy's HTTP server.
func (f *FaultProxy) Server() *httptest.Server { return f.srv }

// Stats reports how many requests arrived, how many of each fault were
// injected, and the most requests that were ever in flight at once.
func (f *FaultProxy) Stats() (requests int, injected map[Fault]int, maxInFlight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[Fault]int, len(f.injected))
	for k, v := range f.injected {
		m[k] = v
	}
	return f.requests, m, f.maxIn
}

// Requests returns the method, URL and headers of every request so far.
func (f *FaultProxy) Requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.seen...)
}

// next counts a request and returns the fault to inject, or "".
func (f *FaultProxy) next(r *http.Request) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone()})
	f.requests++
	n := float64(f.requests)
	if f.rate <= 0 || len(f.faults) == 0 || math.Floor(n*f.rate) == math.Floor((n-1)*f.rate) {
		return ""
	}
	total := 0
	for _, c := range f.injected {
		total += c
	}
	fault := f.faults[total%len(f.faults)]
	f.injected[fault]++
	return fault
}

// ServeHTTP forwards r or fails it.
func (f *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()

	switch mode := f.next(r); mode {
	case "":
		if f.Slow > 0 {
			// A proxy reads the request while it writes the response; without
			// this the server drains the rest of a slowly read request body
			// as soon as the response starts.
			_ = http.NewResponseController(w).EnableFullDuplex()
			r.Body = io.NopCloser(&slowReader{r: r.Body, pause: f.Slow})
			w = &slowWriter{ResponseWriter: w, pause: f.Slow}
		}
		f.proxy.ServeHTTP(w, r)
	case Fault500:
		writeS3Error(w, http.StatusInternalServerError, "InternalError")
	case Fault503:
		writeS3Error(w, http.StatusServiceUnavailable, "SlowDown")
	case FaultReset, FaultStall:
		if r.Method == http.MethodGet {
			f.partialBody(w, r, mode)
			return
		}
		if mode == FaultStall {
			f.stall(r)
			return
		}
		// Take part of the upload, then break the connection. Nothing
		// reaches the server, as when a link drops mid-request.
		_, _ = io.CopyN(io.Discard, r.Body, r.ContentLength/2)
		reset(w)
	}
}

// partialBody forwards r, sends the response headers and half the body, then
// resets the connection or goes silent.
func (f *FaultProxy) partialBody(w http.ResponseWriter, r *http.Request, mode Fault) {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = f.target.Scheme, f.target.Host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		writeS3Error(w, http.StatusBadGateway, "BadGateway")
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.CopyN(w, resp.Body, resp.ContentLength/2)
	w.(http.Flusher).Flush()
	if mode == FaultStall {
		f.stall(r)
		return
	}
	reset(w)
}

// stall holds the request without answering until the client gives up (or
// the test ends), then drops the connection.
func (f *FaultProxy) stall(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-f.done:
	case <-time.After(30 * time.Second):
	}
}

// reset closes the client connection with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func writeS3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by test proxy</Message></Error>`, code)
}

// Blackhole returns the URL of a listener on 127.0.0.1 that accepts TCP
// connections and never answers: an endpoint that is up but hung.
func Blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return "http://" + ln.Addr().String()
}

const slowStep = 32 << 10

// slowReader hands out at most slowStep bytes per Read, pausing before each.
type slowReader struct {
	r     io.Reader
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	return s.r.Read(p[:min(len(p), slowStep)])
}

// slowWriter sends at most slowStep bytes at a time, flushing each and
// pausing between them.
type slowWriter struct {
	http.ResponseWriter
	pause time.Duration
}

func (s *slowWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n, err := s.ResponseWriter.Write(p[:min(len(p), slowStep)])
		written += n
		if err != nil {
			return written, err
		}
		s.ResponseWriter.(http.Flusher).Flush()
		p = p[n:]
		time.Sleep(s.pause)
	}
	return written, nil
}

func (s *slowWriter) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

// Server is a real S3 test server, as started by scripts/s3-servers.sh.
type Server struct {
	Name      string // "minio" or "versitygw"
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
}

// ServerNames are the servers, as spelled in the environment variables
// VIGIL_TEST_<NAME>_ENDPOINT, _ACCESS_KEY and _SECRET_KEY.
var ServerNames = []string{"MINIO", "VERSITYGW"}

// LookupServer reads a server's address and credentials from the
// environment; ok is false when any of them is missing.
func LookupServer(name string) (srv Server, ok bool) {
	env := func(k string) string { return os.Getenv("VIGIL_TEST_" + name + "_" + k) }
	srv = Server{Name: strings.ToLower(name), Endpoint: env("ENDPOINT"), AccessKey: env("ACCESS_KEY"), SecretKey: env("SECRET_KEY")}
	return srv, srv.Endpoint != "" && srv.AccessKey != "" && srv.SecretKey != ""
}

// ForEachServer runs fn as a subtest for each server. A server missing from
// the environment is skipped, except under CI=true, where that fails the
// test: CI must never pass by testing nothing.
func ForEachServer(t *testing.T, fn func(t *testing.T, srv Server)) {
	for _, name := range ServerNames {
		t.Run(strings.ToLower(name), func(t *testing.T) {
			srv, ok := LookupServer(name)
			if !ok {
				missingEnv := fmt.Sprintf("VIGIL_TEST_%s_ENDPOINT/_ACCESS_KEY/_SECRET_KEY not set; run scripts/s3-servers.sh start ENVFILE and source ENVFILE", name)
				if os.Getenv("CI") == "true" {
					t.Fatal(missingEnv)
				}
				t.Skip(missingEnv) // integration test without its server, outside CI
			}
			fn(t, srv)
		})
	}
}
