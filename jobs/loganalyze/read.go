package loganalyze

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// testHookOpened lets a test rotate a file between open and read.
var testHookOpened func(path string)

// maxLine is the longest line analysed; longer ones are skipped (counted).
const maxLine = 1 << 20

// headLen is how many leading content bytes identify a file. 1 KiB of log
// lines carries timestamps, so two different files practically never
// share it; a file shorter than that is identified by what it has.
const headLen = 1024

// cursor remembers how far one file's content was read. It is keyed by
// content (the hash of its first bytes), not by name, so that auth.log
// renamed to auth.log.1 and later compressed to auth.log.2.gz is still the
// same file, read exactly once.
type cursor struct {
	Hash    uint64 `json:"hash"`
	HeadLen int    `json:"head_len"`
	Offset  int64  `json:"offset"` // content bytes consumed (decompressed for .gz)
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
	Size    int64  `json:"size"` // on-disk size when last read
	Gzip    bool   `json:"gzip,omitempty"`
	// Complete means a .gz was read to its end: the same inode and size
	// need not be decompressed again.
	Complete bool      `json:"complete,omitempty"`
	Path     string    `json:"path"`
	Seen     time.Time `json:"seen"`
}

// cursorTTL drops cursors of files gone for this long.
const cursorTTL = 60 * 24 * time.Hour

type cursors struct {
	List []*cursor `json:"cursors"`
}

func hashHead(b []byte) uint64 {
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64()
}

// match finds the cursor of a file whose content starts with head,
// preferring the longest known head, then the same inode.
func (cs *cursors) match(head []byte, dev, ino uint64) *cursor {
	var best *cursor
	for _, c := range cs.List {
		if c.HeadLen == 0 || c.HeadLen > len(head) || hashHead(head[:c.HeadLen]) != c.Hash {
			continue
		}
		if best == nil || c.HeadLen > best.HeadLen || c.HeadLen == best.HeadLen && c.Dev == dev && c.Ino == ino {
			best = c
		}
	}
	return best
}

// input is one file to read in this run.
type input struct {
	path   string
	parser *parser
	source string // the glob, which names the input in findings
	mtime  time.Time
}

// discover expands the globs; the oldest files come first so that rotated
// content is read before the live file that continues it.
func (r *run) discover() []input {
	seen := map[string]bool{}
	var out []input
	for i, in := range r.j.p.Inputs {
		for _, g := range in.Paths {
			matches, err := filepath.Glob(g)
			if err != nil {
				r.note("bad glob", "glob", g, "err", err)
				continue
			}
			if len(matches) == 0 {
				r.log.Info("no file matches", "glob", g)
			}
			for _, m := range matches {
				if seen[m] {
					continue
				}
				seen[m] = true
				fi, err := os.Stat(m)
				if err != nil || !fi.Mode().IsRegular() {
					continue
				}
				out = append(out, input{path: m, parser: r.parsers[i], source: g, mtime: fi.ModTime()})
			}
		}
	}
	sort.SliceStable(out, func(a, b int) bool {
		if !out[a].mtime.Equal(out[b].mtime) {
			return out[a].mtime.Before(out[b].mtime)
		}
		return rotationRank(out[a].path) > rotationRank(out[b].path)
	})
	return out
}

// rotationRank orders files with equal mtimes: app.log.2.gz before
// app.log.1 before app.log.
func rotationRank(p string) int {
	base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".gz"), ".zst")
	if i := strings.LastIndexByte(base, '.'); i >= 0 {
		if n, err := strconv.Atoi(base[i+1:]); err == nil {
			return n
		}
	}
	return 0
}

func (r *run) loadCursors(ctx context.Context) {
	r.cursors = &cursors{}
	b, ok, err := r.state.Get(ctx, "cursors")
	switch {
	case err != nil:
		r.note("cursors unreadable; reading as on a first run", "err", err)
	case !ok:
		r.firstRun = true
	default:
		if err := json.Unmarshal(b, r.cursors); err != nil {
			r.note("cursors corrupt; reading as on a first run", "err", err)
			r.cursors, r.firstRun = &cursors{}, true
		}
	}
}

func (r *run) saveCursors(ctx context.Context) error {
	kept := r.cursors.List[:0]
	for _, c := range r.cursors.List {
		if r.now.Sub(c.Seen) < cursorTTL {
			kept = append(kept, c)
		}
	}
	r.cursors.List = kept
	b, err := json.Marshal(r.cursors)
	if err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	if err := r.state.Put(ctx, "cursors", b); err != nil {
		return fmt.Errorf("save cursors: %w", err)
	}
	return nil
}

// readFile reads what is new in one file and feeds it to the analyser.
func (r *run) readFile(ctx context.Context, in input) error {
	f, err := os.Open(in.path)
	if err != nil {
		r.note("cannot open", "path", in.path, "err", err)
		return nil
	}
	defer f.Close()
	if testHookOpened != nil {
		testHookOpened(in.path)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read %s: %w", in.path, err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	dev, ino, size := uint64(sys.Dev), sys.Ino, fi.Size()
	gz := strings.HasSuffix(in.path, ".gz")
	for _, c := range r.cursors.List {
		if c.Gzip && c.Complete && c.Dev == dev && c.Ino == ino && c.Size == size {
			c.Seen = r.now
			return nil // read to its end already
		}
	}
	if size == 0 {
		return nil
	}
	var rd io.Reader = f
	if gz {
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
		if err != nil {
			r.note("not a readable gzip file; skipped", "path", in.path, "err", err)
			return nil
		}
		defer zr.Close()
		rd = zr
	} else if strings.HasSuffix(in.path, ".zst") || strings.HasSuffix(in.path, ".bz2") || strings.HasSuffix(in.path, ".xz") {
		r.note("compressed with something other than gzip; skipped", "path", in.path)
		return nil
	}
	head := make([]byte, headLen)
	n, err := io.ReadFull(rd, head)
	head = head[:n]
	var headErr error
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		headErr = err
	} else if gz && errors.Is(err, io.ErrUnexpectedEOF) {
		headErr = err // a gzip stream shorter than its header promised
	}
	if n == 0 {
		if headErr != nil {
			r.note("truncated gzip file: nothing readable", "path", in.path, "err", headErr)
		}
		return nil
	}
	c := r.cursors.match(head, dev, ino)
	start := int64(0)
	switch {
	case c != nil && !gz && c.Offset > size:
		r.note("file is shorter than when last read (truncated in place); reading it from the start", "path", in.path, "was", c.Offset, "now", size)
		c = nil
	case c != nil:
		start = c.Offset
	}
	if c == nil {
		c = &cursor{}
		r.cursors.List = append(r.cursors.List, c)
	}
	c.Hash, c.HeadLen, c.Dev, c.Ino, c.Size, c.Gzip, c.Path, c.Seen = hashHead(head), len(head), dev, ino, size, gz, in.path, r.now
	if start >= int64(n) && !gz {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			return fmt.Errorf("read %s: %w", in.path, err)
		}
		head = nil
	} else if start >= int64(n) {
		if _, err := io.CopyN(io.Discard, rd, start-int64(n)); err != nil {
			r.note("truncated gzip file: shorter than what was read before", "path", in.path, "err", err)
			return nil
		}
		head = nil
	} else {
		head = head[start:]
	}
	if headErr != nil {
		rd = errReader{headErr}
	}
	lr := newLineReader(io.MultiReader(bytes.NewReader(head), ctxReader{ctx, rd}), start, r.buf)
	p := in.parser
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		r.line(p, line, in.source)
		if r.lines%65536 == 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("read %s: %w", in.path, err)
			}
		}
	}
	r.buf = lr.buf // keep the grown buffer for the next file
	readErr := lr.err
	if readErr == errEOF {
		readErr = nil
	}
	if errors.Is(readErr, context.Canceled) || errors.Is(readErr, context.DeadlineExceeded) {
		return fmt.Errorf("read %s: %w", in.path, readErr)
	}
	// The last line without a newline: a writer may be in the middle of
	// it. It is read once the file has been quiet for a while, or when the
	// file is compressed (final).
	if rest := lr.rest(); len(rest) > 0 && (gz || readErr != nil || r.now.Sub(fi.ModTime()) > time.Hour) {
		r.line(p, rest, in.source)
		lr.consume(len(rest))
	}
	c.Offset = lr.off
	r.bytes += lr.off - start
	if lr.long > 0 {
		r.longLines += lr.long
		r.note("lines over 1 MiB skipped", "path", in.path, "lines", lr.long)
	}
	switch {
	case readErr == nil && gz:
		c.Complete = true
	case errors.Is(readErr, io.ErrUnexpectedEOF) && gz:
		r.note("truncated gzip file: read up to the damage", "path", in.path, "bytes", lr.off)
		c.Complete = true // it will not get better by rereading
	case readErr != nil:
		r.note("read error; the rest of the file is read next run", "path", in.path, "err", readErr)
	}
	// Rotated or truncated while being read: what the descriptor saw was
	// read; whatever is at the path now is read by the next pass/run.
	if now, err := os.Stat(in.path); err != nil || now.Sys().(*syscall.Stat_t).Ino != ino {
		r.note("file was rotated while being read; finished the old file through its descriptor", "path", in.path)
	} else if !gz && now.Size() < lr.off {
		r.note("file was truncated while being read", "path", in.path, "read", lr.off, "size_now", now.Size())
		c.Offset = 0
	}
	r.files++
	return nil
}

// line handles one line (without its newline).
func (r *run) line(p *parser, line []byte, source string) {
	r.lines++
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) == 0 {
		return
	}
	if bytes.IndexByte(line, 0) >= 0 {
		r.nulLines++
		// Leading NULs are what a writer without O_APPEND leaves after a
		// copytruncate; the text after them is a normal line.
		line = bytes.TrimLeft(line, "\x00")
		if len(line) == 0 {
			return
		}
		if bytes.IndexByte(line, 0) >= 0 {
			r.unparsed(line)
			return
		}
	}
	if !p.parse(line, &r.ev) {
		r.unparsed(line)
		return
	}
	if !r.sinceCut.IsZero() && !r.ev.Time.IsZero() && r.ev.Time.Before(r.sinceCut) {
		r.skippedOld++
		return
	}
	r.an.analyze(&r.ev, line, source)
}

const maxSamples = 5

func (r *run) unparsed(line []byte) {
	r.parseErrors++
	if len(r.samples) < maxSamples {
		s := string(line[:min(len(line), 200)])
		r.samples = append(r.samples, maskSecrets(strconv.Quote(s)))
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// lineReader splits a stream into lines without copying them, tracking
// the content offset and skipping lines longer than maxLine.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int
	off        int64 // content offset of buf[start]
	err        error
	skipping   bool
	long       int64
}

func newLineReader(r io.Reader, off int64, buf []byte) *lineReader {
	if cap(buf) < 256<<10 {
		buf = make([]byte, 256<<10)
	}
	return &lineReader{r: r, buf: buf[:cap(buf)], off: off}
}

// next returns the next complete line (valid until the following call).
func (l *lineReader) next() ([]byte, bool) {
	for {
		if i := bytes.IndexByte(l.buf[l.start:l.end], '\n'); i >= 0 {
			line := l.buf[l.start : l.start+i]
			l.start += i + 1
			l.off += int64(i + 1)
			if l.skipping {
				l.skipping = false
				continue
			}
			return line, true
		}
		if l.err != nil {
			return nil, false
		}
		if l.start > 0 {
			copy(l.buf, l.buf[l.start:l.end])
			l.end -= l.start
			l.start = 0
		}
		if l.end == len(l.buf) {
			if len(l.buf) <= maxLine {
				nb := make([]byte, min(2*len(l.buf), maxLine+1))
				copy(nb, l.buf[:l.end])
				l.buf = nb
			} else {
				// Over 1 MiB without a newline: drop it up to its end.
				if !l.skipping {
					l.long++
				}
				l.skipping = true
				l.off += int64(l.end)
				l.end = 0
			}
		}
		n, err := l.r.Read(l.buf[l.end:])
		l.end += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errEOF
			}
			l.err = err
		}
	}
}

// errEOF marks a clean end; lineReader.err reports nil for it.
var errEOF = errors.New("eof")

// rest is the unterminated tail left at the end of the stream.
func (l *lineReader) rest() []byte {
	if l.skipping {
		return nil
	}
	return l.buf[l.start:l.end]
}

func (l *lineReader) consume(n int) {
	l.start += n
	l.off += int64(n)
}
