package configexport

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"

	"github.com/vigilops/vigil/configs"
)

// Profile describes how to talk to one kind of device over ssh. Built-in
// profiles are data (profiles.yaml); the job's `profiles:` adds more.
type Profile struct {
	Mode         string   `yaml:"mode"`
	Prompt       string   `yaml:"prompt"`
	Answers      []Answer `yaml:"answers"`
	PreCommands  []string `yaml:"pre_commands"`
	Commands     []string `yaml:"commands"`
	FileCommand  string   `yaml:"file_command"`
	Pager        string   `yaml:"pager"`
	PagerAnswer  string   `yaml:"pager_answer"`
	ExitCommand  string   `yaml:"exit_command"`
	Volatile     []string `yaml:"volatile"`
	Redact       []string `yaml:"redact"`
	TermWidth    int      `yaml:"term_width"`
	TermHeight   int      `yaml:"term_height"`
	TerminalType string   `yaml:"terminal_type"`
}

// Answer is sent whenever Expect matches the unfinished output line.
type Answer struct {
	Expect string `yaml:"expect"`
	Send   string `yaml:"send"`
}

//go:embed profiles.yaml
var profilesYAML string

// builtinProfiles returns a fresh copy of the built-in profiles.
func builtinProfiles() map[string]Profile {
	w, err := configs.ParseWith(profilesYAML)
	if err != nil {
		panic(fmt.Sprintf("built-in profiles: %v", err))
	}
	var doc struct {
		Profiles map[string]Profile `yaml:"profiles"`
	}
	if err := w.Decode(&doc); err != nil {
		panic(fmt.Sprintf("built-in profiles: %v", err))
	}
	return maps.Clone(doc.Profiles)
}

// BuiltinProfiles names the profiles every build knows.
func BuiltinProfiles() []string {
	var out []string
	for n := range builtinProfiles() {
		out = append(out, n)
	}
	return out
}

// compiledProfile is a Profile with its regexes compiled.
type compiledProfile struct {
	Profile
	prompt   *regexp.Regexp
	pager    *regexp.Regexp
	answers  []compiledAnswer
	volatile []*regexp.Regexp
	redact   []*regexp.Regexp
}

type compiledAnswer struct {
	expect *regexp.Regexp
	send   string
}

func (p Profile) compile() (*compiledProfile, error) {
	c := &compiledProfile{Profile: p}
	var err error
	switch p.Mode {
	case "exec":
	case "shell":
		if p.Prompt == "" {
			return nil, errors.New("shell mode needs a prompt regex")
		}
	default:
		return nil, fmt.Errorf("mode must be shell or exec, got %q", p.Mode)
	}
	if p.Prompt != "" {
		if c.prompt, err = regexp.Compile(p.Prompt); err != nil {
			return nil, fmt.Errorf("prompt: %w", err)
		}
	}
	if p.Pager != "" {
		if c.pager, err = regexp.Compile(p.Pager); err != nil {
			return nil, fmt.Errorf("pager: %w", err)
		}
	}
	if c.PagerAnswer == "" {
		c.PagerAnswer = " "
	}
	for i, a := range p.Answers {
		re, err := regexp.Compile(a.Expect)
		if err != nil {
			return nil, fmt.Errorf("answers[%d]: %w", i, err)
		}
		c.answers = append(c.answers, compiledAnswer{expect: re, send: a.Send})
	}
	var bad []string
	c.volatile, bad = compileAll(p.Volatile)
	if len(bad) > 0 {
		return nil, fmt.Errorf("volatile: %s", strings.Join(bad, "; "))
	}
	c.redact, bad = compileAll(p.Redact)
	if len(bad) > 0 {
		return nil, fmt.Errorf("redact: %s", strings.Join(bad, "; "))
	}
	if c.TermWidth == 0 {
		c.TermWidth = 511
	}
	if c.TermHeight == 0 {
		c.TermHeight = 200
	}
	if c.TerminalType == "" {
		c.TerminalType = "vt100"
	}
	return c, nil
}
