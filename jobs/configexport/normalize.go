package configexport

import (
	"bytes"
	"regexp"
	"strings"
)

// ansiSeq matches terminal escape sequences: CSI (colours, cursor moves,
// line erases), OSC (window titles) and the two-byte ESC forms (charset
// selection, keypad modes, save/restore cursor).
var ansiSeq = regexp.MustCompile(`\x1b\[[0-9;?<=>]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()*+][0-9A-Za-z]|\x1b[=>78cDEHMNOZ]`)

// stripANSI removes escape sequences and stray control bytes but keeps
// tabs, newlines and carriage returns (terminalLine interprets those).
func stripANSI(s string) string {
	if strings.IndexByte(s, 0x1b) >= 0 {
		s = ansiSeq.ReplaceAllString(s, "")
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r' || r == '\b':
			return r
		case r < 0x20 || r == 0x7f:
			return -1
		}
		return r
	}, s)
}

// terminalLine renders one line the way a terminal would show it: a bare
// carriage return goes back to column 0 (pagers erase their prompt that
// way) and a backspace removes the previous character.
func terminalLine(s string) string {
	s = strings.TrimSuffix(s, "\r")
	if i := strings.LastIndexByte(s, '\r'); i >= 0 {
		rest := s[i+1:]
		// "\r   \r" style erasing leaves only blanks after the last \r; what
		// follows the last \r that carries text is what stays visible.
		if strings.TrimSpace(rest) == "" {
			rest = ""
		}
		s = rest
	}
	if strings.IndexByte(s, '\b') >= 0 {
		var b []rune
		for _, r := range s {
			if r == '\b' {
				if len(b) > 0 {
					b = b[:len(b)-1]
				}
				continue
			}
			b = append(b, r)
		}
		s = string(b)
	}
	return s
}

// normalizer turns a raw export into the text that is stored and diffed.
type normalizer struct {
	volatile []*regexp.Regexp
	pager    *regexp.Regexp // pager prompt residue, may be nil
}

// normalize strips escape sequences and pager residue, drops volatile
// lines, trims trailing blanks and ends the text with one newline, so that
// two exports of the same configuration are byte-identical.
func (n normalizer) normalize(raw []byte) []byte {
	text := stripANSI(string(raw))
	text = strings.ReplaceAll(text, "\r\n", "\n")
	var out bytes.Buffer
	out.Grow(len(text))
	for line := range strings.SplitSeq(text, "\n") {
		line = strings.TrimRight(terminalLine(line), " \t")
		if n.pager != nil && line != "" {
			line = strings.TrimRight(n.pager.ReplaceAllString(line, ""), " \t")
			if line == "" {
				continue
			}
		}
		if n.isVolatile(line) {
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	// Leading and trailing blank lines come and go with banners and prompts.
	b := bytes.TrimLeft(out.Bytes(), "\n")
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return nil
	}
	return append(b, '\n')
}

func (n normalizer) isVolatile(line string) bool {
	for _, re := range n.volatile {
		if re.MatchString(line) {
			return true
		}
	}
	return false
}
