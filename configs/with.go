package configs

import (
	"fmt"
	"os"
	"reflect"

	"gopkg.in/yaml.v3"
)

// With is a job's kind-owned "with:" section. The configs package does not
// know its schema; the kind decodes it with Decode, which applies the same
// rules as the rest of the file (unknown fields are errors, ${ENV}
// expansion, *_file secrets, file:line on every error).
type With struct {
	node     *yaml.Node
	file     string
	path     string
	lookup   func(string) (string, bool)
	readFile func(string) ([]byte, error)
}

// ParseWith builds a With from YAML text; it is meant for tests and for
// code that builds jobs without a config file.
func ParseWith(src string) (With, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		return With{}, fmt.Errorf("parse with section: %w", err)
	}
	w := With{path: "with", lookup: os.LookupEnv, readFile: os.ReadFile}
	if len(doc.Content) > 0 {
		w.node = doc.Content[0]
	}
	return w, nil
}

// IsZero reports whether the section is absent.
func (w With) IsZero() bool { return w.node == nil }

// Path is the section's field path, e.g. "jobs[3].with".
func (w With) Path() string { return w.path }

// Decode fills the struct pointed to by v. It returns Errors listing every
// problem, or nil. An absent section leaves v unchanged.
func (w With) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode %s: need a non-nil pointer, got %T", w.path, v)
	}
	if w.node == nil || isNull(w.node) {
		return nil
	}
	d := w.decoder()
	d.decode(w.node, w.path, rv.Elem())
	return d.errs.orNil()
}

func (w With) decoder() *decoder {
	d := &decoder{file: w.file, lookup: w.lookup, readFile: w.readFile, pos: map[string]int{}}
	if d.lookup == nil {
		d.lookup = os.LookupEnv
	}
	if d.readFile == nil {
		d.readFile = os.ReadFile
	}
	return d
}

// Errorf returns a FieldError for field (a path relative to the section,
// "" for the section itself) located at the line where it was written.
func (w With) Errorf(field, format string, args ...any) *FieldError {
	path := w.path
	if field != "" {
		path = joinPath(w.path, field)
	}
	line := 0
	if w.node != nil {
		line = w.node.Line
		if n := lookupNode(w.node, field); n != nil {
			line = n.Line
		}
	}
	return &FieldError{File: w.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// lookupNode finds the key node of a dotted field (no list indexes).
func lookupNode(n *yaml.Node, field string) *yaml.Node {
	if field == "" {
		return nil
	}
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	head, rest, _ := cutDot(field)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == head {
			if rest == "" {
				return n.Content[i]
			}
			return lookupNode(n.Content[i+1], rest)
		}
	}
	return nil
}

func cutDot(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// MarshalText shows that the section exists without dumping it (it can
// hold secrets).
func (w With) MarshalText() ([]byte, error) {
	if w.IsZero() {
		return nil, nil
	}
	return []byte("{...}"), nil
}
