package configs

import (
	"fmt"
	"sort"
	"strings"
)

// FieldError is one problem found in a config file, located by file, line
// and field path (for example "jobs[2].schedule") so an admin can jump to it.
type FieldError struct {
	File string
	Line int    // 0 when the position is unknown (config built in code)
	Path string // dotted field path; empty for file-level problems (YAML syntax)
	Msg  string
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:", e.Line)
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found while loading and validating a config.
// Loading never stops at the first problem: the admin fixes them all in one pass.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// sorted orders errors by line, then path, for stable output.
func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Path < es[j].Path
	})
	return es
}

// orNil returns nil for an empty list so callers can write `if err != nil`.
func (es Errors) orNil() error {
	if len(es) == 0 {
		return nil
	}
	return es.sorted()
}

// flatten appends err to es, unpacking Errors and FieldError values; any other
// error becomes a FieldError at the given fallback position.
func (es Errors) flatten(err error, fallback FieldError) Errors {
	switch e := err.(type) {
	case nil:
		return es
	case Errors:
		return append(es, e...)
	case *FieldError:
		return append(es, e)
	default:
		fe := fallback
		fe.Msg = err.Error()
		return append(es, &fe)
	}
}
