package configexport

import (
	"bytes"
	"sync"
)

// capture keeps at most max bytes of a target's output and counts the
// rest, so a device that prints forever costs bounded memory. Writes never
// fail: sources keep draining their stream (a blocked ssh channel or pipe
// would stall the device side) while the excess is dropped.
type capture struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	max     int64
	dropped int64
}

func newCapture(max int64) *capture { return &capture{max: max} }

func (c *capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := c.max - int64(c.buf.Len())
	if room < 0 {
		room = 0
	}
	keep := int64(len(p))
	if keep > room {
		keep = room
	}
	c.buf.Write(p[:keep])
	c.dropped += int64(len(p)) - keep
	return len(p), nil
}

// full reports whether more output would be dropped.
func (c *capture) full() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(c.buf.Len()) >= c.max
}

// Bytes returns what was kept.
func (c *capture) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Bytes()
}

// Dropped is how many bytes were cut.
func (c *capture) Dropped() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// tail keeps the last n bytes written (stderr for error messages).
type tail struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
