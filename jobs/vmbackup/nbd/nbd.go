// Package nbd is a read-only client of the Network Block Device protocol,
// written from the protocol document (NetworkBlockDevice/nbd doc/proto.md):
// fixed newstyle handshake, NBD_OPT_GO (NBD_OPT_EXPORT_NAME for servers
// without it), structured replies when the server offers them, pipelined
// NBD_CMD_READ with a bound on requests in flight, and NBD_CMD_DISC.
//
// It exists so the vmbackup job can read disks from nbdkit (with VMware's
// VDDK plugin at a site, the file plugin in tests) without cgo or libnbd.
// TLS, writes and block status are not implemented.
package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Magic numbers and codes from the protocol document.
const (
	magicInit      = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       = 0x49484156454F5054 // "IHAVEOPT"
	magicOldstyle  = 0x00420281861253
	magicOptReply  = 0x3e889045565a9
	magicRequest   = 0x25609513
	magicSimple    = 0x67446698
	magicStructure = 0x668e33ef

	flagFixedNewstyle = 1 << 0 // handshake flags
	flagNoZeroes      = 1 << 1

	optExportName  = 1
	optGo          = 7
	optStructured  = 8
	optSetMetaCtxt = 10

	repAck         = 1
	repInfo        = 3
	repMetaContext = 4
	repErrBase     = 1 << 31

	infoExport    = 0
	infoBlockSize = 3

	cmdRead        = 0
	cmdDisc        = 2
	cmdBlockStatus = 7

	replyFlagDone    = 1 << 0
	replyNone        = 0
	replyOffsetData  = 1
	replyOffsetHole  = 2
	replyBlockStatus = 5
	replyError       = 1<<15 + 1
	replyErrorOffset = 1<<15 + 2
)

// Address says where an export is: a unix socket or a TCP address, and the
// export's name ("" is the server's default export).
type Address struct {
	Network string // "unix" or "tcp"
	Addr    string // socket path or host:port
	Export  string
}

func (a Address) String() string {
	if a.Network == "unix" {
		return fmt.Sprintf("nbd+unix:///%s?socket=%s", a.Export, a.Addr)
	}
	return fmt.Sprintf("nbd://%s/%s", a.Addr, a.Export)
}

// ParseURL reads the NBD URI forms nbdkit and qemu print:
// nbd://host[:port]/export (port 10809 by default) and
// nbd+unix:///export?socket=/path.
func ParseURL(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("nbd url %q: %w", s, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "nbd":
		if u.Host == "" {
			return Address{}, fmt.Errorf("nbd url %q: no host", s)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "10809")
		}
		return Address{Network: "tcp", Addr: host, Export: export}, nil
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" {
			return Address{}, fmt.Errorf("nbd url %q: nbd+unix needs ?socket=/path", s)
		}
		if u.Host != "" {
			return Address{}, fmt.Errorf("nbd url %q: nbd+unix takes no host (nbd+unix:///export?socket=...)", s)
		}
		return Address{Network: "unix", Addr: sock, Export: export}, nil
	}
	return Address{}, fmt.Errorf("nbd url %q: scheme must be nbd or nbd+unix (TLS schemes are not supported)", s)
}

// Options bound a connection's resources.
type Options struct {
	// MaxInFlight bounds read requests sent and not yet answered (default
	// 16): it is the connection's whole buffer budget with MaxRequest.
	MaxInFlight int
	// MaxRequest is the largest single read (default 1 MiB, lowered to the
	// server's maximum block size when it announces one).
	MaxRequest int
	// NoStructured keeps to simple replies (for tests of both paths).
	NoStructured bool
}

// Client is one connection in the transmission phase. ReadAt may be called
// concurrently; requests are pipelined up to Options.MaxInFlight.
type Client struct {
	conn       net.Conn
	addr       Address
	size       int64
	flags      uint16
	structured bool
	maxReq     int
	// allocCtx is the server's ID for the "base:allocation" metadata
	// context; hasAlloc says whether it was negotiated.
	allocCtx uint32
	hasAlloc bool

	wmu sync.Mutex // one request header on the wire at a time
	sem chan struct{}

	mu      sync.Mutex
	pending map[uint64]*call
	handle  uint64
	broken  error // set once the connection is unusable
	closing bool

	loopDone chan struct{}
}

type call struct {
	buf  []byte
	off  uint64
	err  error
	done chan struct{}
	// status is set for NBD_CMD_BLOCK_STATUS: the extents received, from
	// off on, for a request of statusLen bytes.
	status    *[]Extent
	statusLen uint32
	// got counts bytes covered by structured content chunks; a reply
	// that ends with fewer is a protocol error, not silent zeros.
	got int
}

// Errno is an error value a server sends (Linux errno numbering).
type Errno uint32

var errnoNames = map[Errno]string{1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC", 75: "EOVERFLOW", 95: "ENOTSUP", 108: "ESHUTDOWN"}

func (e Errno) Error() string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return "errno " + strconv.Itoa(int(e))
}

// ReadError is a read the server answered with an error.
type ReadError struct {
	Off, Len int64
	Errno    Errno
	Message  string // the server's text, when it sent one
}

func (e *ReadError) Error() string {
	s := fmt.Sprintf("nbd read of %d bytes at offset %d: server error %v", e.Len, e.Off, e.Errno)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *ReadError) Unwrap() error { return e.Errno }

// ErrClosed is returned by reads on a closed or broken connection.
var ErrClosed = errors.New("nbd: connection closed")

// Dial connects, negotiates the export and starts the reply reader. ctx
// bounds the handshake only.
func Dial(ctx context.Context, a Address, o Options) (*Client, error) {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 16
	}
	if o.MaxRequest <= 0 {
		o.MaxRequest = 1 << 20
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		return nil, fmt.Errorf("nbd connect %s: %w", a, err)
	}
	c := &Client{conn: conn, addr: a, maxReq: o.MaxRequest, pending: map[uint64]*call{}, loopDone: make(chan struct{})}
	// The handshake is synchronous: a cancelled ctx closes the socket.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	err = c.handshake(o)
	if !stop() || ctx.Err() != nil {
		err = fmt.Errorf("nbd handshake with %s: %w", a, context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	c.sem = make(chan struct{}, o.MaxInFlight)
	go c.replyLoop()
	return c, nil
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// Structured reports whether structured replies were negotiated.
func (c *Client) Structured() bool { return c.structured }

// MaxRequest is the largest read request the client sends.
func (c *Client) MaxRequest() int { return c.maxReq }

// Addr is the address the client connected to.
func (c *Client) Addr() Address { return c.addr }

func (c *Client) handshake(o Options) error {
	var hdr [18]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return fmt.Errorf("nbd handshake with %s: read greeting: %w", c.addr, err)
	}
	if binary.BigEndian.Uint64(hdr[0:]) != magicInit {
		return fmt.Errorf("nbd handshake with %s: not an NBD server (no NBDMAGIC)", c.addr)
	}
	switch binary.BigEndian.Uint64(hdr[8:]) {
	case magicOpt:
	case magicOldstyle:
		return fmt.Errorf("nbd handshake with %s: server uses oldstyle negotiation, which names no export; use newstyle (nbdkit's default)", c.addr)
	default:
		return fmt.Errorf("nbd handshake with %s: unknown negotiation magic", c.addr)
	}
	hflags := binary.BigEndian.Uint16(hdr[16:])
	var cflags uint32
	fixed := hflags&flagFixedNewstyle != 0
	if fixed {
		cflags |= flagFixedNewstyle
	}
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagNoZeroes
	}
	if err := binary.Write(c.conn, binary.BigEndian, cflags); err != nil {
		return fmt.Errorf("nbd handshake with %s: send client flags: %w", c.addr, err)
	}
	if !fixed {
		// Plain newstyle allows nothing but NBD_OPT_EXPORT_NAME.
		return c.exportName(noZeroes)
	}
	if !o.NoStructured {
		typ, _, err := c.option(optStructured, nil)
		if err != nil {
			return err
		}
		c.structured = typ == repAck
		if c.structured {
			if err := c.setMetaContext(); err != nil {
				return err
			}
		}
	}
	return c.optGo(noZeroes)
}

// allocationContext is the metadata context that reports holes and zeros.
const allocationContext = "base:allocation"

// setMetaContext asks for "base:allocation" so BlockStatus can report
// which ranges hold data. A server without it is fine: BlockStatus then
// says so and the caller reads everything.
func (c *Client) setMetaContext() error {
	name := []byte(c.addr.Export)
	q := []byte(allocationContext)
	b := make([]byte, 0, 12+len(name)+len(q))
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
	b = append(b, q...)
	if err := c.sendOption(optSetMetaCtxt, b); err != nil {
		return err
	}
	for {
		typ, rep, err := c.readOptReply(optSetMetaCtxt)
		if err != nil {
			return err
		}
		switch {
		case typ == repMetaContext && len(rep) >= 4 && string(rep[4:]) == allocationContext:
			c.allocCtx, c.hasAlloc = binary.BigEndian.Uint32(rep), true
		case typ == repMetaContext:
			// a context we did not ask for: ignore it
		case typ == repAck || typ&repErrBase != 0:
			return nil // done, or not supported: no block status then
		default:
			return fmt.Errorf("nbd handshake with %s: unexpected reply %d to NBD_OPT_SET_META_CONTEXT", c.addr, typ)
		}
	}
}

// option sends one option and reads its single final reply.
func (c *Client) option(opt uint32, data []byte) (uint32, []byte, error) {
	if err := c.sendOption(opt, data); err != nil {
		return 0, nil, err
	}
	return c.readOptReply(opt)
}

func (c *Client) sendOption(opt uint32, data []byte) error {
	b := make([]byte, 16+len(data))
	binary.BigEndian.PutUint64(b[0:], magicOpt)
	binary.BigEndian.PutUint32(b[8:], opt)
	binary.BigEndian.PutUint32(b[12:], uint32(len(data)))
	copy(b[16:], data)
	if _, err := c.conn.Write(b); err != nil {
		return fmt.Errorf("nbd handshake with %s: send option %d: %w", c.addr, opt, err)
	}
	return nil
}

// maxOptReply bounds what the client reads for one option reply; the
// document limits strings to 4096 bytes and INFO payloads are small.
const maxOptReply = 64 << 10

func (c *Client) readOptReply(opt uint32) (uint32, []byte, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.conn, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbd handshake with %s: read reply to option %d: %w", c.addr, opt, err)
	}
	if binary.BigEndian.Uint64(h[0:]) != magicOptReply {
		return 0, nil, fmt.Errorf("nbd handshake with %s: bad option reply magic", c.addr)
	}
	if got := binary.BigEndian.Uint32(h[8:]); got != opt {
		return 0, nil, fmt.Errorf("nbd handshake with %s: reply for option %d while waiting for %d", c.addr, got, opt)
	}
	typ, n := binary.BigEndian.Uint32(h[12:]), binary.BigEndian.Uint32(h[16:])
	if n > maxOptReply {
		return 0, nil, fmt.Errorf("nbd handshake with %s: option reply of %d bytes is too long", c.addr, n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c.conn, data); err != nil {
		return 0, nil, fmt.Errorf("nbd handshake with %s: read reply to option %d: %w", c.addr, opt, err)
	}
	return typ, data, nil
}

var repErrNames = map[uint32]string{1: "unsupported", 2: "refused by policy", 3: "invalid", 4: "unsupported on this platform",
	5: "TLS required", 6: "unknown export", 7: "server shutting down", 8: "block size required"}

func (c *Client) optGo(noZeroes bool) error {
	name := []byte(c.addr.Export)
	// name length, name, one information request: block size.
	data := make([]byte, 4+len(name)+2+2)
	binary.BigEndian.PutUint32(data, uint32(len(name)))
	copy(data[4:], name)
	binary.BigEndian.PutUint16(data[4+len(name):], 1)
	binary.BigEndian.PutUint16(data[6+len(name):], infoBlockSize)
	if err := c.sendOption(optGo, data); err != nil {
		return err
	}
	gotExport := false
	for {
		typ, rep, err := c.readOptReply(optGo)
		if err != nil {
			return err
		}
		switch {
		case typ == repInfo:
			if len(rep) < 2 {
				return fmt.Errorf("nbd handshake with %s: short NBD_REP_INFO", c.addr)
			}
			switch binary.BigEndian.Uint16(rep) {
			case infoExport:
				if len(rep) != 12 {
					return fmt.Errorf("nbd handshake with %s: NBD_INFO_EXPORT of %d bytes", c.addr, len(rep))
				}
				c.size = int64(binary.BigEndian.Uint64(rep[2:]))
				c.flags = binary.BigEndian.Uint16(rep[10:])
				gotExport = true
			case infoBlockSize:
				if len(rep) == 14 {
					if mx := int(binary.BigEndian.Uint32(rep[10:])); mx > 0 && mx < c.maxReq {
						c.maxReq = mx
					}
				}
			}
		case typ == repAck:
			if !gotExport {
				return fmt.Errorf("nbd handshake with %s: server finished NBD_OPT_GO without the export's size", c.addr)
			}
			if c.size < 0 {
				return fmt.Errorf("nbd handshake with %s: export size out of range", c.addr)
			}
			return nil
		case typ == repErrBase+1:
			// A server without NBD_OPT_GO: the old way, which cannot report errors.
			return c.exportName(noZeroes)
		case typ&repErrBase != 0:
			what := repErrNames[typ-repErrBase]
			if what == "" {
				what = fmt.Sprintf("error %#x", typ)
			}
			msg := ""
			if len(rep) > 0 {
				msg = ": " + string(rep)
			}
			return fmt.Errorf("nbd handshake with %s: export %q: %s%s", c.addr, c.addr.Export, what, msg)
		default:
			// Unknown non-error replies are to be ignored.
		}
	}
}

func (c *Client) exportName(noZeroes bool) error {
	if err := c.sendOption(optExportName, []byte(c.addr.Export)); err != nil {
		return err
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.conn, b); err != nil {
		// The server may only hang up on an export it does not have.
		return fmt.Errorf("nbd handshake with %s: export %q: server closed the connection (unknown export?): %w", c.addr, c.addr.Export, err)
	}
	c.size = int64(binary.BigEndian.Uint64(b))
	c.flags = binary.BigEndian.Uint16(b[8:])
	c.structured = false // only negotiable in fixed newstyle with replies
	return nil
}

// ReadAt fills p from the export at off, splitting it into requests of at
// most MaxRequest bytes that are in flight together (within the
// connection's bound). ctx cancels the wait: the connection is then closed,
// since the server may still be sending into p.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off < 0 || off+int64(len(p)) > c.size {
		return fmt.Errorf("nbd read of %d bytes at offset %d: outside the export (%d bytes)", len(p), off, c.size)
	}
	var calls []*call
	var err error
	for pos := 0; pos < len(p); pos += c.maxReq {
		end := min(pos+c.maxReq, len(p))
		var cl *call
		cl, err = c.send(ctx, p[pos:end], off+int64(pos))
		if err != nil {
			break
		}
		calls = append(calls, cl)
	}
	for _, cl := range calls {
		select {
		case <-cl.done:
		case <-ctx.Done():
			c.fail(fmt.Errorf("nbd: read cancelled: %w", context.Cause(ctx)))
			<-cl.done
		}
		if cl.err != nil && err == nil {
			err = cl.err
		}
	}
	return err
}

// Extent is a range of the export and what the server says it holds.
type Extent struct {
	Off, Len int64
	// Zero is set when the range reads as zeros (a hole, or allocated
	// zeros): it need not be read.
	Zero bool
}

// ErrNoBlockStatus means the server did not agree to report allocation.
var ErrNoBlockStatus = errors.New("nbd: server does not report block status (base:allocation)")

// BlockStatus asks which parts of [off, off+n) hold data. The answer
// starts at off and may cover less than n (ask again from its end), never
// more.
func (c *Client) BlockStatus(ctx context.Context, off int64, n uint32) ([]Extent, error) {
	if !c.hasAlloc {
		return nil, ErrNoBlockStatus
	}
	if off < 0 || n == 0 || off+int64(n) > c.size {
		return nil, fmt.Errorf("nbd block status of %d bytes at offset %d: outside the export (%d bytes)", n, off, c.size)
	}
	var ext []Extent
	cl, err := c.sendCmd(ctx, cmdBlockStatus, nil, off, n, &ext)
	if err != nil {
		return nil, err
	}
	select {
	case <-cl.done:
	case <-ctx.Done():
		c.fail(fmt.Errorf("nbd: block status cancelled: %w", context.Cause(ctx)))
		<-cl.done
	}
	if cl.err != nil {
		return nil, cl.err
	}
	if len(ext) == 0 {
		return nil, fmt.Errorf("nbd block status at offset %d from %s: empty answer", off, c.addr)
	}
	return ext, nil
}

// send registers a read and writes its request once a slot is free.
func (c *Client) send(ctx context.Context, buf []byte, off int64) (*call, error) {
	return c.sendCmd(ctx, cmdRead, buf, off, uint32(len(buf)), nil)
}

// sendCmd registers a call and writes its request once a slot is free.
func (c *Client) sendCmd(ctx context.Context, cmd uint16, buf []byte, off int64, n uint32, status *[]Extent) (*call, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("nbd read at offset %d: %w", off, context.Cause(ctx))
	}
	cl := &call{buf: buf, off: uint64(off), done: make(chan struct{}), status: status, statusLen: n}
	c.mu.Lock()
	if c.broken != nil {
		err := c.broken
		c.mu.Unlock()
		<-c.sem
		return nil, err
	}
	c.handle++
	h := c.handle
	c.pending[h] = cl
	c.mu.Unlock()

	var req [28]byte
	binary.BigEndian.PutUint32(req[0:], magicRequest)
	binary.BigEndian.PutUint16(req[4:], 0) // command flags
	binary.BigEndian.PutUint16(req[6:], cmd)
	binary.BigEndian.PutUint64(req[8:], h)
	binary.BigEndian.PutUint64(req[16:], uint64(off))
	binary.BigEndian.PutUint32(req[24:], n)
	c.wmu.Lock()
	_, err := c.conn.Write(req[:])
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("nbd send read request to %s: %w", c.addr, err))
	}
	return cl, nil
}

// complete finishes a call and frees its slot.
func (c *Client) complete(h uint64, err error) {
	c.mu.Lock()
	cl := c.pending[h]
	delete(c.pending, h)
	c.mu.Unlock()
	if cl == nil {
		return
	}
	if err == nil && c.structured && cl.status == nil && cl.got != len(cl.buf) {
		err = fmt.Errorf("nbd read of %d bytes at offset %d: server sent only %d bytes", len(cl.buf), cl.off, cl.got)
	}
	cl.err = err
	close(cl.done)
	<-c.sem
}

// fail marks the connection broken, closes it and fails every pending call
// (the reply loop does that once the socket read errors).
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.mu.Unlock()
	c.conn.Close()
}

func (c *Client) lookup(h uint64) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[h]
}

// replyLoop reads replies and hands each to its call, reading data
// straight into the caller's buffer. On any error every pending call
// fails with it.
func (c *Client) replyLoop() {
	defer close(c.loopDone)
	br := bufio.NewReaderSize(c.conn, 64<<10)
	err := c.readReplies(br)
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	if c.closing {
		c.broken = ErrClosed
	}
	err = c.broken
	hs := make([]uint64, 0, len(c.pending))
	for h := range c.pending {
		hs = append(hs, h)
	}
	c.mu.Unlock()
	c.conn.Close()
	for _, h := range hs {
		c.complete(h, err)
	}
}

func (c *Client) readReplies(br *bufio.Reader) error {
	var h [32]byte
	for {
		if _, err := io.ReadFull(br, h[:4]); err != nil {
			return fmt.Errorf("nbd connection to %s: %w", c.addr, err)
		}
		switch binary.BigEndian.Uint32(h[:4]) {
		case magicSimple:
			if _, err := io.ReadFull(br, h[4:16]); err != nil {
				return fmt.Errorf("nbd connection to %s: %w", c.addr, err)
			}
			errno, handle := binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
			cl := c.lookup(handle)
			if cl == nil {
				return fmt.Errorf("nbd connection to %s: reply for unknown handle %d", c.addr, handle)
			}
			if errno != 0 {
				// No payload follows an error the server did not hang up on.
				c.complete(handle, &ReadError{Off: int64(cl.off), Len: int64(len(cl.buf)), Errno: Errno(errno)})
				continue
			}
			if cl.status != nil {
				return fmt.Errorf("nbd connection to %s: simple reply to a block status request", c.addr)
			}
			if _, err := io.ReadFull(br, cl.buf); err != nil {
				return fmt.Errorf("nbd connection to %s: read data: %w", c.addr, err)
			}
			cl.got = len(cl.buf)
			c.complete(handle, nil)
		case magicStructure:
			if !c.structured {
				return fmt.Errorf("nbd connection to %s: structured reply that was not negotiated", c.addr)
			}
			if _, err := io.ReadFull(br, h[4:20]); err != nil {
				return fmt.Errorf("nbd connection to %s: %w", c.addr, err)
			}
			if err := c.chunk(br, h[4:20]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("nbd connection to %s: bad reply magic %#x", c.addr, binary.BigEndian.Uint32(h[:4]))
		}
	}
}

// chunk handles one structured reply chunk (header after the magic).
func (c *Client) chunk(br *bufio.Reader, h []byte) error {
	flags, typ := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
	handle, n := binary.BigEndian.Uint64(h[4:]), binary.BigEndian.Uint32(h[12:])
	cl := c.lookup(handle)
	if cl == nil {
		return fmt.Errorf("nbd connection to %s: reply for unknown handle %d", c.addr, handle)
	}
	bad := func(what string) error {
		return fmt.Errorf("nbd connection to %s: %s in reply to the read at offset %d", c.addr, what, cl.off)
	}
	inside := func(off uint64, ln uint64) bool {
		return off >= cl.off && off+ln <= cl.off+uint64(len(cl.buf))
	}
	switch {
	case typ == replyNone:
		if n != 0 {
			return bad("NBD_REPLY_TYPE_NONE with a payload")
		}
	case typ == replyBlockStatus:
		if cl.status == nil || n < 12 || (n-4)%8 != 0 || n > 4<<20 {
			return bad("block status chunk of a bad length, or for a read")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		if binary.BigEndian.Uint32(b) != c.allocCtx {
			break // another context's answer: not asked for, ignore
		}
		end := cl.off + uint64(cl.statusLen)
		pos := cl.off
		for d := b[4:]; len(d) >= 8 && pos < end; d = d[8:] {
			ln, fl := uint64(binary.BigEndian.Uint32(d)), binary.BigEndian.Uint32(d[4:])
			if ln == 0 {
				return bad("empty block status extent")
			}
			ln = min(ln, end-pos) // the last extent may run past the request
			*cl.status = append(*cl.status, Extent{Off: int64(pos), Len: int64(ln), Zero: fl&2 != 0})
			pos += ln
		}
	case typ == replyOffsetData:
		if n < 9 {
			return bad("short data chunk")
		}
		var ob [8]byte
		if _, err := io.ReadFull(br, ob[:]); err != nil {
			return err
		}
		off, ln := binary.BigEndian.Uint64(ob[:]), uint64(n-8)
		if !inside(off, ln) {
			return bad("data chunk outside the request")
		}
		s := off - cl.off
		if _, err := io.ReadFull(br, cl.buf[s:s+ln]); err != nil {
			return fmt.Errorf("nbd connection to %s: read data: %w", c.addr, err)
		}
		cl.got += int(ln)
	case typ == replyOffsetHole:
		if n != 12 {
			return bad("hole chunk of the wrong length")
		}
		var b [12]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return err
		}
		off, ln := binary.BigEndian.Uint64(b[:]), uint64(binary.BigEndian.Uint32(b[8:]))
		if ln == 0 || !inside(off, ln) {
			return bad("hole chunk outside the request")
		}
		s := off - cl.off
		clear(cl.buf[s : s+ln])
		cl.got += int(ln)
	case typ&(1<<15) != 0:
		if n < 6 || n > maxOptReply {
			return bad("error chunk of a bad length")
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		errno, ml := binary.BigEndian.Uint32(b), int(binary.BigEndian.Uint16(b[4:]))
		if 6+ml > len(b) {
			return bad("error message longer than its chunk")
		}
		re := &ReadError{Off: int64(cl.off), Len: int64(len(cl.buf)), Errno: Errno(errno), Message: string(b[6 : 6+ml])}
		if typ == replyErrorOffset && len(b) >= 6+ml+8 {
			re.Off = int64(binary.BigEndian.Uint64(b[6+ml:]))
		}
		if cl.err == nil {
			cl.err = re
		}
	default:
		return bad(fmt.Sprintf("unknown chunk type %d", typ))
	}
	if flags&replyFlagDone != 0 {
		if cl.err != nil {
			err := cl.err
			cl.got = len(cl.buf) // reported as the error, not as short data
			c.complete(handle, err)
		} else {
			c.complete(handle, nil)
		}
	}
	return nil
}

// Close sends NBD_CMD_DISC when the connection is healthy (the soft
// disconnect the document asks of clients) and closes it. Reads must have
// returned first.
func (c *Client) Close() error {
	c.mu.Lock()
	healthy := c.broken == nil && !c.closing
	c.closing = true
	c.mu.Unlock()
	if healthy {
		var req [28]byte
		binary.BigEndian.PutUint32(req[0:], magicRequest)
		binary.BigEndian.PutUint16(req[6:], cmdDisc)
		c.wmu.Lock()
		_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.conn.Write(req[:])
		c.wmu.Unlock()
		if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}
	// The server hangs up after NBD_CMD_DISC; do not wait long for it.
	select {
	case <-c.loopDone:
	case <-time.After(5 * time.Second):
	}
	c.conn.Close()
	<-c.loopDone
	return nil
}
