package configs

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The decoder walks yaml.Node trees itself instead of using yaml.Unmarshal
// so that it can (1) collect every error instead of stopping at the first,
// (2) put file:line and a field path on each, (3) reject unknown fields,
// (4) expand ${ENV} inside values only, where it cannot change the YAML
// structure, and (5) read *_file secrets without the value ever appearing
// in an error message.

// maxNodes bounds the work done on one file: aliases can make a small file
// expand exponentially ("billion laughs").
const maxNodes = 200000

type decoder struct {
	file     string
	lookup   func(string) (string, bool)
	readFile func(string) ([]byte, error)
	pos      map[string]int
	errs     Errors
	nodes    int
	tooLarge bool
}

// spend counts n more values against maxNodes; once over, it reports the
// problem a single time and returns false.
func (d *decoder) spend(n, line int, path string) bool {
	d.nodes += n
	if d.nodes < maxNodes {
		return true
	}
	if !d.tooLarge {
		d.tooLarge = true
		d.errAt(line, path, "config is too large (more than %d values after expanding aliases)", maxNodes)
	}
	return false
}

func (d *decoder) errAt(line int, path, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	durationType = reflect.TypeFor[Duration]()
	sizeType     = reflect.TypeFor[ByteSize]()
	secretType   = reflect.TypeFor[Secret]()
	withType     = reflect.TypeFor[With]()
)

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an unsupported value"
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// scalar returns a scalar's value with ${ENV} expanded.
func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errAt(n.Line, path, "expected %s, got %s", want, kindName(n))
		return "", false
	}
	v, err := expandEnv(n.Value, d.lookup)
	if err != nil {
		d.errAt(n.Line, path, "%v", err)
		return "", false
	}
	return v, true
}

func (d *decoder) decode(n *yaml.Node, path string, v reflect.Value) {
	n = resolve(n)
	if n == nil || n.Kind == yaml.AliasNode {
		d.errAt(0, path, "alias nesting is too deep")
		return
	}
	if !d.spend(1, n.Line, path) {
		return
	}
	switch v.Type() {
	case withType:
		v.Set(reflect.ValueOf(With{node: n, file: d.file, path: path, lookup: d.lookup, readFile: d.readFile}))
		return
	case secretType:
		// Messages for secrets never include the value.
		if n.Kind != yaml.ScalarNode {
			d.errAt(n.Line, path, "expected a string, got %s", kindName(n))
			return
		}
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.Set(reflect.ValueOf(Secret{value: s}))
		}
		return
	case durationType:
		if s, ok := d.scalar(n, path, "a duration"); ok {
			dur, err := ParseDuration(s)
			if err != nil {
				d.errAt(n.Line, path, "%v", err)
				return
			}
			v.SetInt(int64(dur))
		}
		return
	case sizeType:
		if s, ok := d.scalar(n, path, "a size"); ok {
			sz, err := ParseByteSize(s)
			if err != nil {
				d.errAt(n.Line, path, "%v", err)
				return
			}
			v.SetInt(int64(sz))
		}
		return
	}
	switch v.Kind() {
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if s, ok := d.scalar(n, path, "an integer"); ok {
			i, err := strconv.ParseInt(s, 10, v.Type().Bits())
			if err != nil {
				d.errAt(n.Line, path, "expected an integer, got %q", s)
				return
			}
			v.SetInt(i)
		}
	case reflect.Float64, reflect.Float32:
		if s, ok := d.scalar(n, path, "a number"); ok {
			f, err := strconv.ParseFloat(s, v.Type().Bits())
			// NaN and infinities pass ParseFloat but make no sense as a
			// threshold or a ratio, and NaN fails every range check.
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.errAt(n.Line, path, "expected a number like 0.05, got %q", s)
				return
			}
			v.SetFloat(f)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path, "true or false"); ok {
			switch strings.ToLower(s) {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.errAt(n.Line, path, "expected true or false, got %q", s)
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.errAt(n.Line, path, "expected a list, got %s", kindName(n))
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			d.pos[p] = resolve(item).Line
			if !isNull(resolve(item)) {
				d.decode(item, p, out.Index(i))
			}
		}
		v.Set(out)
	case reflect.Map:
		pairs, ok := d.pairs(n, path)
		if !ok {
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, kv := range pairs {
			p := joinPath(path, kv.key.Value)
			d.pos[p] = kv.key.Line
			elem := reflect.New(v.Type().Elem()).Elem()
			if !isNull(resolve(kv.value)) {
				d.decode(kv.value, p, elem)
			}
			v.SetMapIndex(reflect.ValueOf(kv.key.Value), elem)
		}
	case reflect.Struct:
		d.decodeStruct(n, path, v)
	default:
		d.errAt(n.Line, path, "cannot decode into %s", v.Type())
	}
}

type pair struct{ key, value *yaml.Node }

// pairs returns a mapping's key/value pairs with YAML merge keys (<<)
// applied: explicit keys win over merged ones. Duplicate explicit keys are
// reported here.
func (d *decoder) pairs(n *yaml.Node, path string) ([]pair, bool) {
	if n.Kind != yaml.MappingNode {
		d.errAt(n.Line, path, "expected a mapping, got %s", kindName(n))
		return nil, false
	}
	var explicit, merged []pair
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errAt(k.Line, path, "expected a field name, got %s", kindName(k))
			continue
		}
		if k.Tag == "!!merge" {
			merged = append(merged, d.mergePairs(val, path)...)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errAt(k.Line, joinPath(path, k.Value), "duplicate field (first set at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		explicit = append(explicit, pair{k, val})
	}
	for _, p := range merged {
		if _, ok := seen[p.key.Value]; !ok {
			seen[p.key.Value] = p.key.Line
			explicit = append(explicit, p)
		}
	}
	return explicit, true
}

func (d *decoder) mergePairs(v *yaml.Node, path string) []pair {
	v = resolve(v)
	var sources []*yaml.Node
	switch {
	case v == nil:
	case v.Kind == yaml.MappingNode:
		sources = []*yaml.Node{v}
	case v.Kind == yaml.SequenceNode:
		for _, s := range v.Content {
			sources = append(sources, resolve(s))
		}
	}
	var out []pair
	for _, s := range sources {
		if s == nil || s.Kind != yaml.MappingNode {
			d.errAt(v.Line, path, "merge key << needs a mapping or a list of mappings")
			return nil
		}
		if !d.spend(len(s.Content), s.Line, path) {
			return nil
		}
		ps, _ := d.pairs(s, path)
		out = append(out, ps...)
	}
	return out
}

type fieldInfo struct {
	index int
	typ   reflect.Type
}

func structFields(t reflect.Type) (map[string]fieldInfo, []string) {
	m := map[string]fieldInfo{}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		m[name] = fieldInfo{index: i, typ: f.Type}
		names = append(names, name)
	}
	return m, names
}

func (d *decoder) decodeStruct(n *yaml.Node, path string, v reflect.Value) {
	pairs, ok := d.pairs(n, path)
	if !ok {
		return
	}
	fields, names := structFields(v.Type())
	// secretFiles holds "<secret>_file" keys that the struct does not
	// declare itself: every Secret field accepts them.
	secretFiles := map[string]pair{}
	present := map[string]int{}
	for _, kv := range pairs {
		key := kv.key.Value
		p := joinPath(path, key)
		fi, known := fields[key]
		if !known {
			base := strings.TrimSuffix(key, "_file")
			if bf, ok := fields[base]; ok && base != key && bf.typ == secretType {
				secretFiles[base] = kv
				present[key] = kv.key.Line
				d.pos[p] = kv.key.Line
				continue
			}
			d.errAt(kv.key.Line, p, "unknown field%s", suggest(key, names))
			continue
		}
		if isNull(resolve(kv.value)) {
			continue // "field:" with no value means "not set"
		}
		present[key] = kv.key.Line
		d.pos[p] = kv.key.Line
		d.decode(kv.value, p, v.Field(fi.index))
	}
	// Resolve <name>_file for every Secret field.
	for _, name := range names {
		fi := fields[name]
		fileKey := name + "_file"
		if fi.typ != secretType {
			continue
		}
		fileLine, hasFile := present[fileKey]
		if !hasFile {
			continue
		}
		if _, inline := present[name]; inline {
			d.errAt(fileLine, joinPath(path, fileKey), "set only one of %s and %s", name, fileKey)
			continue
		}
		var file string
		if declared, ok := fields[fileKey]; ok && declared.typ.Kind() == reflect.String {
			file = v.Field(declared.index).String()
		} else if kv, ok := secretFiles[name]; ok && !isNull(resolve(kv.value)) {
			s, ok := d.scalar(resolve(kv.value), joinPath(path, fileKey), "a file path")
			if !ok {
				continue
			}
			file = s
		}
		if file == "" {
			d.errAt(fileLine, joinPath(path, fileKey), "is empty")
			continue
		}
		b, err := d.readFile(file)
		if err != nil {
			d.errAt(fileLine, joinPath(path, fileKey), "read secret: %v", err)
			continue
		}
		secret := strings.TrimRight(string(b), "\r\n")
		if secret == "" {
			d.errAt(fileLine, joinPath(path, fileKey), "secret file %s is empty", file)
			continue
		}
		v.Field(fi.index).Set(reflect.ValueOf(Secret{value: secret}))
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// lineOf returns the line of path or of its closest recorded parent.
func lineOf(pos map[string]int, path string) int {
	for path != "" {
		if l, ok := pos[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// suggest returns ` (did you mean "x"?)` for a close known name.
func suggest(key string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if dist := levenshtein(key, n); dist < bestDist {
			best, bestDist = n, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func levenshtein(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// expandEnv replaces ${NAME} and ${NAME:-default} in s; "$$" is a literal
// "$" and a "$" not followed by "{" is kept as is. A variable that is not
// set (and has no default) is an error, so a typo cannot become "".
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated ${ in value")
		}
		expr := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return "", fmt.Errorf("invalid environment variable name %q", name)
		}
		val, ok := lookup(name)
		switch {
		case ok && (val != "" || !hasDef):
			b.WriteString(val)
		case hasDef:
			b.WriteString(def)
		default:
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		i += 2 + end
	}
	return b.String(), nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if !(r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}
