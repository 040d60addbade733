package loganalyze

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// Event is one parsed line. Its strings point into the reader's buffer
// and are valid only until the next line: rules that keep one clone it.
// Parsing without copying is what keeps the reader near disk speed.
type Event struct {
	Time    time.Time // zero when the line has none
	Host    string
	Program string
	Message string
	// Web access logs.
	Client, Method, Path string
	Status               int
	// Fields holds other JSON fields or named regex groups (user rules).
	Fields map[string]string
}

func (e *Event) reset() {
	fields := e.Fields
	clear(fields)
	*e = Event{Fields: fields}
}

// field returns a named field for group_by.
func (e *Event) field(name string) string {
	switch name {
	case "host":
		return e.Host
	case "program":
		return e.Program
	case "client":
		return e.Client
	case "path":
		return e.Path
	case "method":
		return e.Method
	case "status":
		if e.Status == 0 {
			return ""
		}
		return strconv.Itoa(e.Status)
	case "message":
		return e.Message
	}
	return e.Fields[name]
}

// str views b as a string without copying (see Event).
func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

type format int

const (
	fmtSyslog format = iota
	fmtCombined
	fmtJSON
	fmtRegex
	fmtAuto
)

// parser parses one input's lines. It is not safe for concurrent use: it
// caches the last timestamp, since consecutive lines mostly share it.
type parser struct {
	in      Input
	format  format
	re      *regexp.Regexp
	names   []string
	fields  map[string][]string // event field -> JSON keys to try
	layout  string
	now     time.Time // for the year of RFC 3164 timestamps
	lastTS  []byte
	lastT   time.Time
	lastOK  bool
	jsonMap map[string]any
}

var defaultJSONFields = map[string][]string{
	"time":    {"time", "timestamp", "ts", "@timestamp", "__REALTIME_TIMESTAMP"},
	"message": {"msg", "message", "MESSAGE", "log"},
	"host":    {"host", "hostname", "_HOSTNAME"},
	"program": {"program", "app", "logger", "SYSLOG_IDENTIFIER", "_COMM"},
	"status":  {"status", "status_code"},
	"path":    {"path", "uri", "url"},
	"client":  {"client", "remote_addr", "client_ip"},
	"method":  {"method"},
}

var eventFields = []string{"time", "message", "host", "program", "status", "path", "client", "method"}

func newParser(in Input) (*parser, error) {
	p := &parser{in: in, layout: in.TimeLayout}
	switch in.Format {
	case "", "syslog":
		p.format = fmtSyslog
	case "combined", "nginx", "apache":
		p.format = fmtCombined
	case "json":
		p.format = fmtJSON
		p.fields = map[string][]string{}
		for k, v := range defaultJSONFields {
			p.fields[k] = v
		}
		for k, v := range in.Fields {
			if !contains(eventFields, k) {
				return nil, fmt.Errorf("fields: unknown event field %q (known: %v)", k, eventFields)
			}
			p.fields[k] = []string{v}
		}
	case "auto":
		// For trees where services log in different formats: each line
		// is tried as syslog, then combined, then JSON.
		p.format = fmtAuto
		p.fields = defaultJSONFields
	case "regex":
		p.format = fmtRegex
		if in.Pattern == "" {
			return nil, errors.New("format regex needs a pattern")
		}
		re, err := regexp.Compile(in.Pattern)
		if err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		if re.NumSubexp() == 0 {
			return nil, errors.New("pattern has no named groups")
		}
		p.re, p.names = re, re.SubexpNames()
	default:
		return nil, fmt.Errorf("format %q: want syslog, combined, json, regex or auto", in.Format)
	}
	if in.Format != "json" && in.Format != "regex" && len(in.Fields) > 0 {
		return nil, errors.New("fields is for format json")
	}
	return p, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// clone returns a parser with its own caches, for one run.
func (p *parser) clone(now time.Time) *parser {
	c := *p
	c.now, c.lastTS, c.lastOK, c.jsonMap = now, nil, false, nil
	return &c
}

// parse fills ev from line (without its newline); false means the line is
// not in the input's format.
func (p *parser) parse(line []byte, ev *Event) bool {
	ev.reset()
	switch p.format {
	case fmtSyslog:
		return p.parseSyslog(line, ev)
	case fmtCombined:
		return p.parseCombined(line, ev)
	case fmtJSON:
		return p.parseJSON(line, ev)
	case fmtAuto:
		if p.parseSyslog(line, ev) {
			return true
		}
		ev.reset()
		if p.parseCombined(line, ev) {
			return true
		}
		ev.reset()
		return len(line) > 0 && line[0] == '{' && p.parseJSON(line, ev)
	default:
		return p.parseRegex(line, ev)
	}
}

// cachedTime parses ts with fn unless it equals the previous timestamp.
func (p *parser) cachedTime(ts []byte, fn func([]byte) (time.Time, bool)) (time.Time, bool) {
	if p.lastTS != nil && bytes.Equal(ts, p.lastTS) {
		return p.lastT, p.lastOK
	}
	t, ok := fn(ts)
	p.lastTS = append(p.lastTS[:0], ts...)
	p.lastT, p.lastOK = t, ok
	return t, ok
}

func (p *parser) parseSyslog(b []byte, ev *Event) bool {
	if len(b) > 0 && b[0] == '<' {
		i := bytes.IndexByte(b, '>')
		if i < 2 || i > 4 || !digits(b[1:i]) {
			return false
		}
		b = b[i+1:]
		if len(b) > 2 && b[0] >= '1' && b[0] <= '9' && b[1] == ' ' {
			return p.parse5424(b[2:], ev)
		}
	}
	var ok bool
	switch {
	case len(b) >= 16 && b[3] == ' ' && b[15] == ' ' && monthIndex(b[:3]) > 0:
		ev.Time, ok = p.cachedTime(b[:15], p.rfc3164Time)
		b = b[16:]
	case len(b) >= 20 && b[4] == '-' && b[10] == 'T':
		sp := bytes.IndexByte(b, ' ')
		if sp < 0 {
			return false
		}
		ev.Time, ok = p.cachedTime(b[:sp], isoTime)
		b = b[sp+1:]
	}
	if !ok {
		return false
	}
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 {
		return false
	}
	ev.Host = str(b[:sp])
	b = b[sp+1:]
	// The tag: "prog[pid]: msg" or "prog: msg"; lines without a tag keep
	// everything as the message.
	end := min(len(b), 128)
	colon := bytes.IndexByte(b[:end], ':')
	if colon <= 0 || bytes.IndexByte(b[:colon], ' ') >= 0 {
		ev.Message = str(b)
		return true
	}
	tag := b[:colon]
	if i := bytes.IndexByte(tag, '['); i > 0 {
		tag = tag[:i]
	}
	ev.Program = str(tag)
	msg := b[colon+1:]
	if len(msg) > 0 && msg[0] == ' ' {
		msg = msg[1:]
	}
	ev.Message = str(msg)
	return true
}

// parse5424 parses what follows "<PRI>1 ".
func (p *parser) parse5424(b []byte, ev *Event) bool {
	var tok [5][]byte // timestamp host app procid msgid
	for i := range tok {
		sp := bytes.IndexByte(b, ' ')
		if sp <= 0 {
			return false
		}
		tok[i], b = b[:sp], b[sp+1:]
	}
	if len(tok[0]) == 1 && tok[0][0] == '-' {
		ev.Time = time.Time{}
	} else {
		t, ok := p.cachedTime(tok[0], isoTime)
		if !ok {
			return false
		}
		ev.Time = t
	}
	if string(tok[1]) != "-" {
		ev.Host = str(tok[1])
	}
	if string(tok[2]) != "-" {
		ev.Program = str(tok[2])
	}
	// Structured data: "-" or one or more [id k="v" ...] with \] escapes.
	switch {
	case len(b) > 0 && b[0] == '-':
		b = b[1:]
	case len(b) > 0 && b[0] == '[':
		i, inQuote := 0, false
		for ; i < len(b); i++ {
			c := b[i]
			switch {
			case c == '\\' && inQuote:
				i++
			case c == '"':
				inQuote = !inQuote
			case c == ']' && !inQuote && (i+1 == len(b) || b[i+1] != '['):
				goto done
			}
		}
		return false
	done:
		b = b[i+1:]
	default:
		return false
	}
	if len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	ev.Message = str(b)
	return true
}

var months = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func monthIndex(b []byte) int {
	for i, m := range months {
		if string(b) == m {
			return i + 1
		}
	}
	return 0
}

func digits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(b) > 0
}

func atoi(b []byte) (int, bool) {
	if !digits(b) || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n, true
}

// rfc3164Time parses "Mar  1 02:00:00". The year is not in the line: it is
// the current one, or the previous one for dates ahead of now (a January
// run reading December lines).
func (p *parser) rfc3164Time(b []byte) (time.Time, bool) {
	mon := monthIndex(b[:3])
	day, ok1 := atoi(bytes.TrimLeft(b[4:6], " "))
	h, ok2 := atoi(b[7:9])
	m, ok3 := atoi(b[10:12])
	s, ok4 := atoi(b[13:15])
	if mon == 0 || !ok1 || !ok2 || !ok3 || !ok4 || b[9] != ':' || b[12] != ':' || day < 1 || day > 31 || h > 23 || m > 59 || s > 60 {
		return time.Time{}, false
	}
	now := p.now
	if now.IsZero() {
		now = time.Now()
	}
	t := time.Date(now.Year(), time.Month(mon), day, h, m, s, 0, now.Location())
	if t.After(now.Add(48 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	return t, true
}

// isoTime parses RFC 3339 and the variants journald and rsyslog write:
// "2026-03-01T02:00:00Z", "...00.123456+01:00", "...00+0100".
func isoTime(b []byte) (time.Time, bool) {
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || (b[10] != 'T' && b[10] != ' ') || b[13] != ':' || b[16] != ':' {
		return time.Time{}, false
	}
	y, ok1 := atoi(b[0:4])
	mo, ok2 := atoi(b[5:7])
	d, ok3 := atoi(b[8:10])
	h, ok4 := atoi(b[11:13])
	mi, ok5 := atoi(b[14:16])
	s, ok6 := atoi(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 {
		return time.Time{}, false
	}
	rest := b[19:]
	ns := 0
	if len(rest) > 0 && (rest[0] == '.' || rest[0] == ',') {
		i := 1
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			if i <= 9 {
				ns = ns*10 + int(rest[i]-'0')
			}
			i++
		}
		for k := i; k <= 9; k++ {
			ns *= 10
		}
		rest = rest[i:]
	}
	loc := time.UTC
	switch {
	case len(rest) == 0:
		loc = time.Local
	case len(rest) == 1 && rest[0] == 'Z':
	case (rest[0] == '+' || rest[0] == '-') && (len(rest) == 6 && rest[3] == ':' || len(rest) == 5):
		oh, ok1 := atoi(rest[1:3])
		om, ok2 := atoi(rest[len(rest)-2:])
		if !ok1 || !ok2 {
			return time.Time{}, false
		}
		off := oh*3600 + om*60
		if rest[0] == '-' {
			off = -off
		}
		loc = time.FixedZone("", off)
	default:
		return time.Time{}, false
	}
	return time.Date(y, time.Month(mo), d, h, mi, s, ns, loc), true
}

// parseCombined parses the Apache/nginx combined (and common) format:
// client ident user [02/Mar/2026:10:00:00 +0000] "GET /p HTTP/1.1" 200 123 "ref" "ua"
func (p *parser) parseCombined(b []byte, ev *Event) bool {
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 {
		return false
	}
	ev.Client = str(b[:sp])
	lb := bytes.IndexByte(b, '[')
	if lb < 0 || lb+28 > len(b) || b[lb+27] != ']' {
		return false
	}
	t, ok := p.cachedTime(b[lb+1:lb+27], clfTime)
	if !ok {
		return false
	}
	ev.Time = t
	b = b[lb+28:]
	if len(b) < 2 || b[0] != ' ' || b[1] != '"' {
		return false
	}
	b = b[2:]
	q := -1
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' {
			i++
			continue
		}
		if b[i] == '"' {
			q = i
			break
		}
	}
	if q < 0 {
		return false
	}
	req := b[:q]
	ev.Message, ev.Program = str(req), "http"
	if sp := bytes.IndexByte(req, ' '); sp > 0 {
		ev.Method = str(req[:sp])
		path := req[sp+1:]
		if sp2 := bytes.LastIndexByte(path, ' '); sp2 > 0 {
			path = path[:sp2]
		}
		ev.Path = str(path)
	}
	b = b[q+1:]
	if len(b) < 4 || b[0] != ' ' {
		return false
	}
	st, ok := atoi(b[1:4])
	if !ok || st < 100 || st > 599 || (len(b) > 4 && b[4] != ' ') {
		return false
	}
	ev.Status = st
	return true
}

// clfTime parses "02/Mar/2026:10:00:00 +0000".
func clfTime(b []byte) (time.Time, bool) {
	if len(b) != 26 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[20] != ' ' {
		return time.Time{}, false
	}
	d, ok1 := atoi(b[0:2])
	mon := monthIndex(b[3:6])
	y, ok2 := atoi(b[7:11])
	h, ok3 := atoi(b[12:14])
	mi, ok4 := atoi(b[15:17])
	s, ok5 := atoi(b[18:20])
	oh, ok6 := atoi(b[22:24])
	om, ok7 := atoi(b[24:26])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || mon == 0 || (b[21] != '+' && b[21] != '-') || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60 {
		return time.Time{}, false
	}
	off := oh*3600 + om*60
	if b[21] == '-' {
		off = -off
	}
	return time.Date(y, time.Month(mon), d, h, mi, s, 0, time.FixedZone("", off)), true
}

func (p *parser) parseJSON(b []byte, ev *Event) bool {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '{' {
		return false
	}
	if p.jsonMap == nil {
		p.jsonMap = map[string]any{}
	}
	clear(p.jsonMap)
	if err := json.Unmarshal(b, &p.jsonMap); err != nil {
		return false
	}
	get := func(field string) (any, bool) {
		for _, k := range p.fields[field] {
			if v, ok := p.jsonMap[k]; ok {
				return v, true
			}
		}
		return nil, false
	}
	text := func(v any) string {
		switch x := v.(type) {
		case string:
			return x
		case float64:
			return strconv.FormatFloat(x, 'f', -1, 64)
		case bool:
			return strconv.FormatBool(x)
		case nil:
			return ""
		}
		out, _ := json.Marshal(v)
		return string(out)
	}
	if v, ok := get("time"); ok {
		ev.Time = p.jsonTime(v)
	}
	if v, ok := get("message"); ok {
		ev.Message = text(v)
	}
	if v, ok := get("host"); ok {
		ev.Host = text(v)
	}
	if v, ok := get("program"); ok {
		ev.Program = text(v)
	}
	if v, ok := get("path"); ok {
		ev.Path = text(v)
	}
	if v, ok := get("client"); ok {
		ev.Client = text(v)
	}
	if v, ok := get("method"); ok {
		ev.Method = text(v)
	}
	if v, ok := get("status"); ok {
		if n, err := strconv.Atoi(text(v)); err == nil {
			ev.Status = n
		}
	}
	if ev.Fields == nil {
		ev.Fields = map[string]string{}
	}
	for k, v := range p.jsonMap {
		ev.Fields[k] = text(v)
	}
	return true
}

// jsonTime accepts RFC 3339 strings, the input's layout, Unix seconds and
// journald's microsecond __REALTIME_TIMESTAMP.
func (p *parser) jsonTime(v any) time.Time {
	switch x := v.(type) {
	case string:
		if p.layout != "" {
			if t, err := time.Parse(p.layout, x); err == nil {
				return t
			}
		}
		if t, ok := isoTime([]byte(x)); ok {
			return t
		}
		if n, err := strconv.ParseInt(x, 10, 64); err == nil && n > 1e15 {
			return time.UnixMicro(n)
		}
	case float64:
		if x > 1e15 {
			return time.UnixMicro(int64(x))
		}
		sec := int64(x)
		return time.Unix(sec, int64((x-float64(sec))*1e9))
	}
	return time.Time{}
}

func (p *parser) parseRegex(b []byte, ev *Event) bool {
	m := p.re.FindSubmatchIndex(b)
	if m == nil {
		return false
	}
	ev.Message = str(b)
	for i, name := range p.names {
		if name == "" || m[2*i] < 0 {
			continue
		}
		v := b[m[2*i]:m[2*i+1]]
		switch name {
		case "time":
			layout := p.layout
			if layout == "" {
				t, ok := isoTime(v)
				if !ok {
					return false
				}
				ev.Time = t
				continue
			}
			t, err := time.Parse(layout, string(v))
			if err != nil {
				return false
			}
			ev.Time = t
		case "host":
			ev.Host = str(v)
		case "program":
			ev.Program = str(v)
		case "message":
			ev.Message = str(v)
		case "client":
			ev.Client = str(v)
		case "path":
			ev.Path = str(v)
		case "method":
			ev.Method = str(v)
		case "status":
			ev.Status, _ = atoi(v)
		default:
			if ev.Fields == nil {
				ev.Fields = map[string]string{}
			}
			ev.Fields[name] = strings.Clone(str(v))
		}
	}
	return true
}
