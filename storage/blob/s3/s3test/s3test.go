package s3

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"
)

// Fault modes the proxy injects.
const (
	fault500   = "500"
	fault503   = "503"
	faultReset = "reset" // GET: half the body, then a TCP reset; others: reset while the body is sent
	faultStall = "stall" // GET: half the body, then silence; others: no answer at all
)

var allFaults = []string{fault500, fault503, faultReset, faultStall}

// faultProxy is a real HTTP reverse proxy on 127.0.0.1 in front of an S3
// server. Every request passes through, except a share (rate) of them, spread
// evenly, that fail in one of the modes, taken in turn.
type faultProxy struct {
	rate   float64
	modes  []string
	proxy  *httputil.ReverseProxy
	target *url.URL
	srv    *httptest.Server
	done   chan struct{} // closed on shutdown to end stalls

	// slow, when set, makes the proxy move bodies in both directions in
	// 32 KiB steps with this pause between them: slow but never idle.
	slow time.Duration

	mu       sync.Mutex
	requests int
	faults   map[string]int
	inFlight int
	maxIn    int
	seen     []*http.Request // headers and URL of every request (bodies not kept)
}

func newFaultProxy(t *testing.T, endpoint string, rate float64, modes ...string) *faultProxy {
	t.Helper()
	return startFaultProxy(t, httptest.NewServer, endpoint, rate, modes...)
}

// newTLSProxy is a pass-through proxy that serves HTTPS with a self-signed
// certificate (srv.Certificate()).
func newTLSProxy(t *testing.T, endpoint string) *faultProxy {
	t.Helper()
	return startFaultProxy(t, httptest.NewTLSServer, endpoint, 0)
}

func startFaultProxy(t *testing.T, start func(http.Handler) *httptest.Server, endpoint string, rate float64, modes ...string) *faultProxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultProxy{rate: rate, modes: modes, target: target, faults: map[string]int{}, done: make(chan struct{})}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			// The client signed the Host it talked to; keep it.
			r.Out.Host = r.In.Host
		},
	}
	f.srv = start(f)
	t.Cleanup(func() {
		close(f.done)
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

func (f *faultProxy) URL() string { return f.srv.URL }

// next counts a request and returns the fault to inject, or "".
func (f *faultProxy) next(r *http.Request) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone()})
	f.requests++
	n := f.requests
	if f.rate <= 0 || len(f.modes) == 0 || math.Floor(float64(n)*f.rate) == math.Floor(float64(n-1)*f.rate) {
		return ""
	}
	total := 0
	for _, c := range f.faults {
		total += c
	}
	mode := f.modes[total%len(f.modes)]
	f.faults[mode]++
	return mode
}

func (f *faultProxy) stats() (requests int, faults map[string]int, maxInFlight int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]int, len(f.faults))
	for k, v := range f.faults {
		m[k] = v
	}
	return f.requests, m, f.maxIn
}

func (f *faultProxy) requestsSeen() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.seen...)
}

func (f *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
		if f.slow > 0 {
			r.Body = io.NopCloser(&slowReader{r: r.Body, pause: f.slow})
			w = &slowWriter{ResponseWriter: w, pause: f.slow}
		}
		f.proxy.ServeHTTP(w, r)
	case fault500:
		writeS3Error(w, http.StatusInternalServerError, "InternalError")
	case fault503:
		writeS3Error(w, http.StatusServiceUnavailable, "SlowDown")
	case faultReset, faultStall:
		if r.Method == http.MethodGet {
			f.partialBody(w, r, mode)
			return
		}
		if mode == faultStall {
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
func (f *faultProxy) partialBody(w http.ResponseWriter, r *http.Request, mode string) {
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
	if mode == faultStall {
		f.stall(r)
		return
	}
	reset(w)
}

// stall holds the request without answering until the client gives up (or
// the test ends), then drops the connection.
func (f *faultProxy) stall(r *http.Request) {
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

// blackhole accepts TCP connections and never answers: an endpoint that is
// up at the network level but hung.
func blackhole(t *testing.T) string {
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
