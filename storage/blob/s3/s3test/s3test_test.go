package s3test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestFaultSchedule checks the proxy against a plain backend: with rate 0.1
// exactly every tenth request fails, with each fault in turn, and each fault
// looks to the client as it should.
func TestFaultSchedule(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 4000)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(body)
	}))
	defer backend.Close()
	p := NewFaultProxy(t, backend.URL, 0.1, AllFaults...)
	client := &http.Client{Timeout: 300 * time.Millisecond}

	var outcomes []string
	for i := 1; i <= 40; i++ {
		outcomes = append(outcomes, fetch(client, p.URL()+"/bucket/key", i%2 == 0))
	}
	for i, got := range outcomes {
		want := "ok"
		if (i+1)%10 == 0 {
			want = []string{"500", "503", "broken", "timeout"}[(i+1)/10-1]
		}
		if got != want {
			t.Errorf("request %d: %s, want %s", i+1, got, want)
		}
	}
	requests, injected, _ := p.Stats()
	if requests != 40 || len(injected) != 4 {
		t.Fatalf("requests %d, injected %v", requests, injected)
	}
	for _, r := range p.Requests() {
		if r.URL.Path != "/bucket/key" {
			t.Fatalf("recorded path %q", r.URL.Path)
		}
	}
}

// fetch does a GET (or a PUT with a body) and classifies the outcome.
func fetch(c *http.Client, url string, put bool) string {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if put {
		req, _ = http.NewRequest(http.MethodPut, url, strings.NewReader(strings.Repeat("y", 4000)))
	}
	resp, err := c.Do(req)
	if err != nil {
		if strings.Contains(err.Error(), "Timeout") || strings.Contains(err.Error(), "timeout") {
			return "timeout"
		}
		return "broken"
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil && strings.Contains(err.Error(), "timeout"):
		return "timeout"
	case err != nil:
		return "broken"
	case resp.StatusCode != 200:
		return resp.Status[:3]
	case len(b) != 4000:
		return "short"
	}
	return "ok"
}

func TestSlowProxyStillDelivers(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body) // all of it first: HTTP/1 is not full duplex
		_, _ = w.Write(b)
	}))
	defer backend.Close()
	p := NewFaultProxy(t, backend.URL, 0)
	p.Slow = 20 * time.Millisecond
	data := bytes.Repeat([]byte("z"), 100<<10)
	start := time.Now()
	resp, err := http.Post(p.URL(), "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("echo through slow proxy: %d bytes, %v", len(got), err)
	}
	// 100 KiB in 32 KiB steps is 4 pauses each way.
	if d := time.Since(start); d < 8*20*time.Millisecond {
		t.Fatalf("took %v, the proxy did not slow the bodies", d)
	}
}

func TestBlackholeNeverAnswers(t *testing.T) {
	c := &http.Client{Timeout: 200 * time.Millisecond}
	if _, err := c.Get(Blackhole(t)); err == nil || !strings.Contains(err.Error(), "Timeout") {
		t.Fatalf("get from a black hole: %v, want a timeout", err)
	}
}
