package loganalyze

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// substrings checks that the parsed fields point into the line: the
// parsers slice, they never invent text.
func substrings(t *testing.T, line []byte, ev *Event) {
	for _, s := range []string{ev.Host, ev.Program, ev.Message, ev.Client, ev.Method, ev.Path} {
		if s != "" && !bytes.Contains(line, []byte(s)) {
			t.Fatalf("field %q is not part of %q", s, line)
		}
	}
}

func fuzzParser(f *testing.F, in Input, seeds []string, check func(*testing.T, []byte, *Event)) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	p, err := newParser(in)
	if err != nil {
		f.Fatal(err)
	}
	p = p.clone(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	params := &Params{MaxSubjects: 20, HTTP5xxRate: 0.01, SudoUsers: []string{"alice"}}
	f.Fuzz(func(t *testing.T, line []byte) {
		// A fresh analyzer per input: one shared across hundreds of
		// thousands of inputs accumulated state until single calls grew
		// slow enough to hit the fuzz engine's deadline.
		an := newAnalyzer(params, nil)
		var ev Event
		if p.parse(line, &ev) {
			if check != nil {
				check(t, line, &ev)
			}
			an.analyze(&ev, line, "fuzz") // the rules must survive any parsed event
		}
	})
}

func FuzzSyslog(f *testing.F) {
	fuzzParser(f, Input{Format: "syslog"}, []string{
		"Mar  1 01:02:03 bastion sshd[2101]: Failed password for invalid user admin from 203.0.113.9 port 50122 ssh2",
		"<38>1 2026-03-01T06:00:00.003Z host1 sshd 4321 - - Failed password for root from 203.0.113.50 port 22 ssh2",
		`<165>1 2026-03-01T06:01:00.000+01:00 host1 app 99 ID47 [a@1 x="\]"][b y="2"] msg`,
		"2026-03-01T04:10:00+0000 web1 systemd[1]: nginx.service: Failed with result 'signal'.",
		"Mar  1 09:01:19 bastion sudo:      bob : 3 incorrect password attempts ; TTY=pts/1",
		"Mar  1 03:12:44 db2 kernel: [1234567.890123] blk_update_request: I/O error, dev sdb, sector 1",
		"Mar  1 05:30:10 db2 kernel: Out of memory: Killed process 4242 (java",
		"<1>", "Mar 99 12:00:00 x y: z",
	}, substrings)
}

func FuzzCombined(f *testing.F) {
	fuzzParser(f, Input{Format: "combined"}, []string{
		`203.0.113.77 - - [01/Mar/2026:10:00:30 +0000] "GET /wp-login.php HTTP/1.1" 404 162 "-" "python-requests/2.31.0"`,
		`::1 - bob [01/Mar/2026:10:00:30 -0130] "GET /a\"b HTTP/1.0" 500 0`,
		`x [01/Mar/2026:10:00:30 +0000] "" 200 -`,
	}, func(t *testing.T, line []byte, ev *Event) {
		c := *ev
		c.Program = "" // "http" is set, not parsed
		substrings(t, line, &c)
		if ev.Status < 100 || ev.Status > 599 {
			t.Fatalf("status %d", ev.Status)
		}
	})
}

func FuzzJSON(f *testing.F) {
	fuzzParser(f, Input{Format: "json", Fields: map[string]string{"message": "m"}}, []string{
		`{"ts":"2026-03-01T07:00:00Z","m":"timeout connecting to db1","status":502}`,
		`{"__REALTIME_TIMESTAMP":"1772348400000000","MESSAGE":"x","SYSLOG_IDENTIFIER":"sshd"}`,
		`{"ts":1772348400.5,"m":{"nested":[1,2]}}`, `{`, `[]`,
	}, nil)
}

func FuzzRegex(f *testing.F) {
	fuzzParser(f, Input{Format: "regex", Pattern: `^(?P<time>\S+) (?P<level>\w+) (?P<message>.*)$`}, []string{
		"2026-03-01T07:00:00Z ERROR disk full on /var",
		"garbage", "2026-13-01T07:00:00Z x y",
	}, substrings)
}

// FuzzLineReader: whatever the stream, the reader's lines plus what it
// skipped add up to the input, offsets never run ahead of the data.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("a\nbb\n\nccc"), 3)
	f.Add([]byte(strings.Repeat("x", 5000)+"\ny\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		chunk = 1 + abs(chunk)%97
		lr := newLineReader(&chunked{data: data, n: chunk}, 0, make([]byte, 16))
		var got []byte
		for {
			line, ok := lr.next()
			if !ok {
				break
			}
			got = append(append(got, line...), '\n')
		}
		got = append(got, lr.rest()...)
		if lr.long == 0 && !bytes.Equal(got, data) {
			t.Fatalf("lines do not add up: %q vs %q", got, data)
		}
		if lr.off+int64(len(lr.rest())) != int64(len(data)) {
			t.Fatalf("offset %d + rest %d != %d", lr.off, len(lr.rest()), len(data))
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

type chunked struct {
	data []byte
	n    int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.data)
	c.data = c.data[n:]
	return n, nil
}
