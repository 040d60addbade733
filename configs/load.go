package configs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Options adjusts loading; the zero value uses the process environment and
// file system and skips job-kind checks.
type Options struct {
	// Kinds checks job kinds and their with: sections (jobs.Registry).
	Kinds KindChecker
	// LookupEnv resolves ${NAME}; default os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile reads *_file secrets; default os.ReadFile.
	ReadFile func(string) ([]byte, error)
}

// KindChecker is what validation needs to know about job kinds. The jobs
// registry implements it; configs itself knows no kind.
type KindChecker interface {
	// Kinds lists the known kind names, sorted.
	Kinds() []string
	// NeedsRepository reports whether jobs of kind store into the repository.
	NeedsRepository(kind string) bool
	// CheckJob validates the kind-owned parts of a job (its with: section),
	// returning Errors or a *FieldError located with Job.With.Errorf.
	CheckJob(job Job) error
}

// Load reads and validates the config file at path. On validation errors
// it returns the config as far as it could be read together with an Errors
// value listing every problem.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	return Parse(path, data, opts)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse is Load for config text already in memory; file names it in errors.
func Parse(file string, data []byte, opts Options) (*Config, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	c := Default()
	c.File = file
	c.pos = map[string]int{}

	root, err := parseYAML(data)
	if err != nil {
		return c, Errors{syntaxError(file, err)}
	}
	if root == nil {
		return c, Errors{{File: file, Msg: "config is empty"}}
	}
	d := &decoder{file: file, lookup: opts.LookupEnv, readFile: opts.ReadFile, pos: c.pos}
	if root.Kind != yaml.MappingNode {
		d.errAt(root.Line, "", "expected a mapping of sections (repository, history, jobs, ...), got %s", kindName(root))
		return c, d.errs.orNil()
	}
	d.decode(root, "", reflect.ValueOf(c).Elem())
	c.applyJobDefaults()
	errs := d.errs
	if err := c.Validate(opts.Kinds); err != nil {
		// A field that could not be decoded is also zero for validation;
		// report only the decode error for it.
		bad := map[string]bool{}
		for _, e := range d.errs {
			bad[e.Path] = true
		}
		for _, e := range Errors(nil).flatten(err, FieldError{File: file}) {
			if !bad[e.Path] {
				errs = append(errs, e)
			}
		}
	}
	return c, dedupe(errs).orNil()
}

func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, fmt.Errorf("yaml: line %d: the file holds more than one YAML document", extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	return doc.Content[0], nil
}

func syntaxError(file string, err error) *FieldError {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &FieldError{File: file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	if len(msg) > 6 && msg[:6] == "yaml: " {
		msg = msg[6:]
	}
	return &FieldError{File: file, Msg: "invalid YAML: " + msg}
}

// dedupe drops repeated identical errors; a YAML alias used twice would
// otherwise report the same problem twice.
func dedupe(es Errors) Errors {
	seen := map[string]bool{}
	out := es[:0]
	for _, e := range es {
		k := e.Error()
		if !seen[k] {
			seen[k] = true
			out = append(out, e)
		}
	}
	return out
}

// applyJobDefaults fills each job field that the file did not set from
// the defaults section. Presence, not zero-ness, decides: "retries: 0"
// overrides a default of 3.
func (c *Config) applyJobDefaults() {
	loc, _ := loadLocation(c.Timezone) // nil if bad; Validate reports it
	for i := range c.Jobs {
		j := &c.Jobs[i]
		j.Location = loc
		set := func(field string) bool {
			_, ok := c.pos[fmt.Sprintf("jobs[%d].%s", i, field)]
			return ok
		}
		if !set("timeout") {
			j.Timeout = c.Defaults.Timeout
		}
		if !set("retries") {
			j.Retries = c.Defaults.Retries
		}
		if !set("retry_backoff") {
			j.RetryBackoff = c.Defaults.RetryBackoff
		}
		if !set("catch_up") {
			j.CatchUp = c.Defaults.CatchUp
		}
		if !set("max_lateness") {
			j.MaxLateness = c.Defaults.MaxLateness
		}
		if !set("retention") {
			j.Retention = c.Defaults.Retention
		}
		if !set("enabled") {
			j.Enabled = true
		}
	}
}
