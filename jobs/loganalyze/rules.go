package loganalyze

import (
	"bytes"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/vigilops/vigil/runner"
)

// Built-in rule codes. They are stable: reports and alerting match them.
const (
	codeSSHFailedPassword = "ssh.failed_password"
	codeSSHInvalidUser    = "ssh.invalid_user"
	codeSudoAuthFailure   = "sudo.auth_failure"
	codeSudoUnexpected    = "sudo.unexpected_user"
	codePAMAuthFailure    = "pam.auth_failure"
	codeLockout           = "account.lockout"
	codeKernelIO          = "kernel.io_error"
	codeKernelFS          = "kernel.fs_error"
	codeOOMKill           = "kernel.oom_kill"
	codeServiceFailed     = "systemd.service_failed"
	codeServiceRestart    = "systemd.service_restart"
	codeHTTP5xx           = "http.5xx_rate"
	codeHTTPTop4xx        = "http.top_4xx"
	codeCertExpiry        = "tls.cert_expiry"
)

var builtinCodes = []string{codeSSHFailedPassword, codeSSHInvalidUser, codeSudoAuthFailure, codeSudoUnexpected, codePAMAuthFailure,
	codeLockout, codeKernelIO, codeKernelFS, codeOOMKill, codeServiceFailed, codeServiceRestart, codeHTTP5xx, codeHTTPTop4xx, codeCertExpiry}

// builtin describes how a built-in rule reports.
type builtin struct {
	sev       runner.Severity
	threshold int // minimum count per subject for a finding
	// high raises the severity to error at this count (0: never).
	high int
	what string // "%d <what> <subject-phrase>"
	subj string
}

var builtins = map[string]builtin{
	codeSSHFailedPassword: {runner.SeverityWarning, 5, 100, "failed SSH password(s)", "from"},
	codeSSHInvalidUser:    {runner.SeverityWarning, 5, 100, "SSH login(s) as unknown users", "from"},
	codeSudoAuthFailure:   {runner.SeverityWarning, 1, 10, "failed sudo password attempt(s)", "by"},
	codeSudoUnexpected:    {runner.SeverityWarning, 1, 0, "sudo use(s) by an unexpected user", "by"},
	codePAMAuthFailure:    {runner.SeverityWarning, 3, 50, "PAM authentication failure(s)", "for"},
	codeLockout:           {runner.SeverityWarning, 1, 3, "account lockout(s)", "of"},
	codeKernelIO:          {runner.SeverityError, 1, 0, "kernel I/O error(s)", "on"},
	codeKernelFS:          {runner.SeverityCritical, 1, 0, "filesystem error(s)", "on"},
	codeOOMKill:           {runner.SeverityError, 1, 0, "OOM kill(s)", "of"},
	codeServiceFailed:     {runner.SeverityError, 1, 0, "service failure(s)", "of"},
	codeServiceRestart:    {runner.SeverityWarning, 3, 0, "automatic restart(s)", "of"},
	codeHTTP5xx:           {runner.SeverityError, 10, 0, "HTTP 5xx response(s)", "in"},
	codeHTTPTop4xx:        {runner.SeverityInfo, 10, 0, "HTTP 4xx response(s)", "for"},
	codeCertExpiry:        {runner.SeverityWarning, 1, 0, "certificate expiry message(s)", "from"},
}

const (
	maxExamples   = 3
	maxSecondary  = 10
	maxAggregates = 100000 // per run; beyond it, new subjects are counted as "(other)"
)

// agg aggregates the events of one (code, subject).
type agg struct {
	code, subject string
	count         int64
	first, last   time.Time
	examples      []string
	secondary     map[string]int64 // users per source, sources per user...
	// windowed user rules: recent event times and the largest burst.
	recent []time.Time
	burst  int
}

type userRule struct {
	UserRule
	re    *regexp.Regexp
	sev   runner.Severity
	group int // index of the group_by subexpression, -1 if a field
}

// analyzer applies the rules to events and keeps the aggregates.
type analyzer struct {
	p        *Params
	rules    []*userRule
	disabled map[string]bool
	aggs     map[string]*agg // code + "\x00" + subject
	http     map[string]*httpStats
	programs map[string]*int64 // pointers: assigning to an existing key would store the unsafe view
	sudoOK   map[string]bool
	overflow int64
}

type httpStats struct {
	total, s5xx int64
	first, last time.Time
	paths5xx    map[string]int64
	example     string
}

func newAnalyzer(p *Params, rules []*userRule) *analyzer {
	a := &analyzer{p: p, rules: rules, disabled: map[string]bool{}, aggs: map[string]*agg{}, http: map[string]*httpStats{},
		programs: map[string]*int64{}, sudoOK: map[string]bool{}}
	for _, c := range p.Disable {
		a.disabled[c] = true
	}
	for _, u := range p.SudoUsers {
		a.sudoOK[u] = true
	}
	return a
}

// hit records one event for (code, subject); subject and secondary may
// point into the line buffer and are cloned when kept.
func (a *analyzer) hit(code, subject, secondary string, n int64, ev *Event, line []byte) *agg {
	if a.disabled[code] {
		return nil
	}
	key := code + "\x00" + subject
	g := a.aggs[key]
	if g == nil {
		if len(a.aggs) >= maxAggregates {
			a.overflow++
			subject, key = "(other)", code+"\x00(other)"
			if g = a.aggs[key]; g != nil {
				goto have
			}
		}
		g = &agg{code: code, subject: strings.Clone(subject)}
		a.aggs[key] = g
	}
have:
	g.count += n
	if !ev.Time.IsZero() {
		if g.first.IsZero() || ev.Time.Before(g.first) {
			g.first = ev.Time
		}
		if ev.Time.After(g.last) {
			g.last = ev.Time
		}
	}
	if len(g.examples) < maxExamples {
		// Masked only if reported (result): most aggregates never are,
		// and masking is a regular expression.
		g.examples = append(g.examples, string(line[:min(len(line), 1000)]))
	}
	if secondary != "" {
		if g.secondary == nil {
			g.secondary = map[string]int64{}
		}
		if _, ok := g.secondary[secondary]; ok || len(g.secondary) < maxSecondary {
			g.secondary[strings.Clone(secondary)] += n
		}
	}
	return g
}

var (
	bFailedPassword = []byte("Failed password for ")
	bInvalidUser    = []byte("Invalid user ")
	bAuthFailure    = []byte("authentication failure")
	bPAMUnix        = []byte("pam_unix(")
	bFailedLogin    = []byte("FAILED LOGIN")
	bIncorrect      = []byte("incorrect password attempt")
	bNotInSudoers   = []byte("NOT in sudoers")
	bCommand        = []byte("COMMAND=")
	bLocked         = []byte("locked")
	bTally          = []byte("pam_tally")
	bIOError        = []byte("I/O error")
	bMediumError    = []byte("critical medium error")
	bOOM            = []byte("Killed process ")
	bFailedResult   = []byte(".service: Failed with result")
	bRestart        = []byte(".service: Scheduled restart job")
	bCertificate    = []byte("ertificate")
	bExpir          = []byte("xpir")
)

// analyze applies every rule to one event. line is the raw line, for examples.
func (a *analyzer) analyze(ev *Event, line []byte, source string) {
	if ev.Program != "" {
		a.countProgram(ev.Program)
	}
	msg := unsafeBytes(ev.Message)
	switch ev.Program {
	case "sshd":
		a.sshd(ev, msg, line)
	case "sudo":
		a.sudo(ev, msg, line)
	case "kernel":
		a.kernel(ev, msg, line)
	case "systemd":
		a.systemd(ev, msg, line)
	default:
		if bytes.Contains(msg, bAuthFailure) || bytes.Contains(msg, bFailedLogin) {
			a.pam(ev, msg, line)
		}
	}
	if bytes.Contains(msg, bLocked) || bytes.Contains(msg, bTally) {
		a.lockout(ev, msg, line)
	}
	if bytes.Contains(msg, bCertificate) && bytes.Contains(msg, bExpir) {
		subj := ev.Program
		if subj == "" {
			subj = ev.Host
		}
		a.hit(codeCertExpiry, subj, "", 1, ev, line)
	}
	if ev.Status != 0 {
		a.web(ev, line, source)
	}
	for _, r := range a.rules {
		a.userRule(r, ev, line)
	}
}

func (a *analyzer) countProgram(p string) {
	if n := a.programs[p]; n != nil {
		*n++
	} else if len(a.programs) < 10000 {
		one := int64(1)
		a.programs[strings.Clone(p)] = &one
	}
}

// unsafeBytes views s as bytes without copying; callers never write to it.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// wordAfter returns the token after marker in b (up to a space).
func wordAfter(b, marker []byte) []byte {
	i := bytes.Index(b, marker)
	if i < 0 {
		return nil
	}
	rest := b[i+len(marker):]
	if j := bytes.IndexAny(rest, " ,;)"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

var (
	bFrom        = []byte(" from ")
	bInvalidPfx  = []byte("invalid user ")
	bUserEq      = []byte(" user=")
	bDev         = []byte("dev ")
	bDevice      = []byte("(device ")
	bFor         = []byte(" for user ")
	bForUserTick = []byte("FOR '")
)

func (a *analyzer) sshd(ev *Event, msg, line []byte) {
	switch {
	case bytes.HasPrefix(msg, bFailedPassword):
		rest := msg[len(bFailedPassword):]
		rest = bytes.TrimPrefix(rest, bInvalidPfx)
		user := rest
		if i := bytes.Index(rest, bFrom); i >= 0 {
			user = rest[:i]
		}
		src := wordAfter(msg, bFrom)
		a.hit(codeSSHFailedPassword, str(src), str(user), 1, ev, line)
	case bytes.HasPrefix(msg, bInvalidUser):
		rest := msg[len(bInvalidUser):]
		user := rest
		if i := bytes.Index(rest, bFrom); i >= 0 {
			user = rest[:i]
		}
		a.hit(codeSSHInvalidUser, str(wordAfter(msg, bFrom)), str(user), 1, ev, line)
	}
}

func (a *analyzer) sudo(ev *Event, msg, line []byte) {
	// "alice : 3 incorrect password attempts ; TTY=..." / "alice : TTY=... ; COMMAND=..."
	colon := bytes.Index(msg, []byte(" : "))
	if colon <= 0 {
		return
	}
	user := bytes.TrimSpace(msg[:colon])
	rest := msg[colon+3:]
	switch {
	case bytes.Contains(rest, bIncorrect):
		n := int64(1)
		if sp := bytes.IndexByte(rest, ' '); sp > 0 {
			if v, ok := atoi(rest[:sp]); ok && v > 0 {
				n = int64(v)
			}
		}
		a.hit(codeSudoAuthFailure, str(user), "", n, ev, line)
	case bytes.Contains(rest, bNotInSudoers):
		a.hit(codeSudoUnexpected, str(user), "not in sudoers", 1, ev, line)
	case len(a.sudoOK) > 0 && bytes.Contains(rest, bCommand) && !a.sudoOK[str(user)]:
		a.hit(codeSudoUnexpected, str(user), "", 1, ev, line)
	}
}

func (a *analyzer) pam(ev *Event, msg, line []byte) {
	var service, user []byte
	if i := bytes.Index(msg, bPAMUnix); i >= 0 {
		service = msg[i+len(bPAMUnix):]
		if j := bytes.IndexAny(service, ":)"); j >= 0 {
			service = service[:j]
		}
		user = wordAfter(msg, bUserEq)
	} else if bytes.Contains(msg, bFailedLogin) {
		service = []byte(ev.Program)
		user = wordAfter(msg, bForUserTick)
		user = bytes.TrimSuffix(user, []byte("'"))
		if i := bytes.IndexByte(user, '\''); i >= 0 {
			user = user[:i]
		}
	} else {
		return
	}
	if s := string(service); s == "sudo" || s == "sshd" {
		return // counted by their own rules
	}
	subj := string(service)
	if len(user) > 0 {
		subj += "/" + string(user)
	}
	a.hit(codePAMAuthFailure, subj, "", 1, ev, line)
}

func (a *analyzer) lockout(ev *Event, msg, line []byte) {
	var user []byte
	switch {
	case bytes.Contains(msg, []byte("Consecutive login failures")) || bytes.Contains(msg, []byte("account temporarily locked")):
		user = wordAfter(msg, bFor)
	case bytes.Contains(msg, bTally) && bytes.Contains(msg, []byte(", deny ")):
		user = wordAfter(msg, []byte("): user "))
	case bytes.Contains(msg, []byte("account locked")) || bytes.Contains(msg, []byte("Account locked")):
		if user = wordAfter(msg, bUserEq); user == nil {
			user = wordAfter(msg, bFor)
		}
	default:
		return
	}
	if len(user) == 0 {
		user = []byte("(unknown)")
	}
	a.hit(codeLockout, str(user), "", 1, ev, line)
}

func (a *analyzer) kernel(ev *Event, msg, line []byte) {
	// The kernel's own timestamp, "[12345.678901] ", is noise here.
	if len(msg) > 0 && msg[0] == '[' {
		if i := bytes.IndexByte(msg, ']'); i > 0 && i < 20 {
			msg = bytes.TrimLeft(msg[i+1:], " ")
		}
	}
	switch {
	case bytes.Contains(msg, []byte("-fs error")) || bytes.Contains(msg, []byte("BTRFS error")) || bytes.HasPrefix(msg, []byte("XFS (")) && bytes.Contains(msg, []byte("orruption")):
		dev := wordAfter(msg, bDevice)
		if dev == nil && bytes.HasPrefix(msg, []byte("XFS (")) {
			dev = msg[5:]
			if i := bytes.IndexByte(dev, ')'); i >= 0 {
				dev = dev[:i]
			}
		}
		a.hit(codeKernelFS, str(dev), "", 1, ev, line)
	case bytes.Contains(msg, bIOError) || bytes.Contains(msg, bMediumError):
		dev := wordAfter(msg, bDev)
		if dev == nil {
			dev = wordAfter(msg, []byte("on dev "))
		}
		a.hit(codeKernelIO, str(dev), "", 1, ev, line)
	case bytes.Contains(msg, bOOM):
		// "Out of memory: Killed process 1234 (java) total-vm:..."
		name := msg[bytes.Index(msg, bOOM)+len(bOOM):]
		if i := bytes.IndexByte(name, '('); i >= 0 {
			name = name[i+1:]
			if j := bytes.IndexByte(name, ')'); j >= 0 {
				name = name[:j]
			}
		}
		a.hit(codeOOMKill, str(name), "", 1, ev, line)
	}
}

func (a *analyzer) systemd(ev *Event, msg, line []byte) {
	unit := func(marker []byte) string {
		i := bytes.Index(msg, marker)
		return str(msg[:i+len(".service")])
	}
	switch {
	case bytes.Contains(msg, bFailedResult):
		a.hit(codeServiceFailed, unit(bFailedResult), "", 1, ev, line)
	case bytes.Contains(msg, bRestart):
		a.hit(codeServiceRestart, unit(bRestart), "", 1, ev, line)
	}
}

func (a *analyzer) web(ev *Event, line []byte, source string) {
	h := a.http[source]
	if h == nil {
		h = &httpStats{paths5xx: map[string]int64{}}
		a.http[source] = h
	}
	h.total++
	if h.first.IsZero() || ev.Time.Before(h.first) {
		h.first = ev.Time
	}
	if ev.Time.After(h.last) {
		h.last = ev.Time
	}
	path := normalizePath(ev.Path)
	switch {
	case ev.Status >= 500:
		h.s5xx++
		if len(h.paths5xx) < 1000 {
			h.paths5xx[strings.Clone(path)]++
		}
		if h.example == "" {
			h.example = string(line[:min(len(line), 1000)])
		}
	case ev.Status >= 400:
		a.hit(codeHTTPTop4xx, path, strconv.Itoa(ev.Status), 1, ev, line)
	}
}

// normalizePath drops the query string (it carries tokens and makes every
// path unique) and turns numeric segments into ":n", so /api/orders/123
// and /api/orders/456 count as one path.
func normalizePath(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	numeric := false
	for i := 0; i < len(p); i++ {
		if p[i] >= '0' && p[i] <= '9' && (i == 0 || p[i-1] == '/') {
			numeric = true
			break
		}
	}
	if !numeric {
		return p
	}
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if digits([]byte(s)) {
			parts[i] = ":n"
		}
	}
	return strings.Join(parts, "/")
}

func (a *analyzer) userRule(r *userRule, ev *Event, line []byte) {
	if r.Program != "" && ev.Program != r.Program {
		return
	}
	m := r.re.FindStringSubmatchIndex(ev.Message)
	if m == nil {
		return
	}
	subj := ""
	switch {
	case r.GroupBy == "":
	case r.group > 0 && m[2*r.group] >= 0:
		subj = ev.Message[m[2*r.group]:m[2*r.group+1]]
	default:
		subj = ev.field(r.GroupBy)
	}
	g := a.hit(r.Code, subj, "", 1, ev, line)
	if g == nil || r.Window <= 0 || ev.Time.IsZero() {
		if g != nil {
			g.burst = int(min(g.count, 1<<30))
		}
		return
	}
	// Sliding window: keep the last threshold-1 times; the burst is how
	// many events fall within the window ending at this one.
	g.recent = append(g.recent, ev.Time)
	cut := 0
	for cut < len(g.recent) && ev.Time.Sub(g.recent[cut]) > r.Window.D() {
		cut++
	}
	g.recent = g.recent[cut:]
	g.burst = max(g.burst, len(g.recent))
	if len(g.recent) > 10000 {
		g.recent = g.recent[1:] // bounded memory; bursts above this are reported as 10000
	}
}

// secretRE finds values that look like credentials in example lines.
var secretRE = regexp.MustCompile(`(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth|authorization|session|cookie|signature|sig)["']?\s*[:=]\s*["']?)(bearer\s+|basic\s+)?[^\s"'&;,]+`)

// longTokenRE finds long opaque strings (keys, JWTs) anywhere.
var longTokenRE = regexp.MustCompile(`\b[A-Za-z0-9+/_\-]{32,}={0,2}(\.[A-Za-z0-9+/_\-]{8,}){0,2}\b`)

// maskSecrets hides credential-like values in an example line and cuts it
// to a readable length.
func maskSecrets(s string) string {
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	s = strings.ToValidUTF8(s, "?")
	s = secretRE.ReplaceAllString(s, "${1}${2}***")
	return longTokenRE.ReplaceAllString(s, "***")
}

// result turns the aggregates into findings (before deltas).
func (a *analyzer) result() []runner.Finding {
	var out []runner.Finding
	byCode := map[string][]*agg{}
	for _, g := range a.aggs {
		byCode[g.code] = append(byCode[g.code], g)
	}
	for source, h := range a.http {
		if a.disabled[codeHTTP5xx] || h.total == 0 {
			continue
		}
		th := a.threshold(codeHTTP5xx)
		rate := float64(h.s5xx) / float64(h.total)
		if h.s5xx >= int64(th) && rate >= a.p.HTTP5xxRate {
			top := topN(h.paths5xx, 5)
			f := runner.Finding{Severity: runner.SeverityError, Code: codeHTTP5xx, Subject: source, Count: h.s5xx, FirstSeen: h.first, LastSeen: h.last,
				Message: fmt.Sprintf("%d of %d HTTP responses were 5xx (%.1f%%) in %s; top paths: %s", h.s5xx, h.total, rate*100, source, joinTop(top)),
				Extra:   map[string]any{"total": h.total, "rate": rate, "top_paths": top}}
			if h.example != "" {
				f.Examples = []string{maskSecrets(h.example)}
			}
			out = append(out, f)
		}
	}
	codes := make([]string, 0, len(byCode))
	for c := range byCode {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, code := range codes {
		list := byCode[code]
		sort.Slice(list, func(i, j int) bool {
			if list[i].count != list[j].count {
				return list[i].count > list[j].count
			}
			return list[i].subject < list[j].subject
		})
		n := 0
		for _, g := range list {
			f, ok := a.finding(g)
			if !ok {
				continue
			}
			if n++; n > a.maxSubjects(code) {
				break
			}
			out = append(out, f)
		}
	}
	return out
}

func (a *analyzer) maxSubjects(code string) int {
	if code == codeHTTPTop4xx {
		return min(a.p.MaxSubjects, 10)
	}
	return a.p.MaxSubjects
}

func (a *analyzer) threshold(code string) int {
	if n, ok := a.p.Thresholds[code]; ok {
		return n
	}
	return builtins[code].threshold
}

func (a *analyzer) finding(g *agg) (runner.Finding, bool) {
	f := runner.Finding{Code: g.code, Subject: g.subject, Count: g.count, FirstSeen: g.first, LastSeen: g.last}
	for _, ex := range g.examples {
		f.Examples = append(f.Examples, maskSecrets(ex))
	}
	if b, ok := builtins[g.code]; ok {
		if g.count < int64(a.threshold(g.code)) {
			return f, false
		}
		f.Severity = b.sev
		if b.high > 0 && g.count >= int64(b.high) && f.Severity.AtLeast(runner.SeverityWarning) && !f.Severity.AtLeast(runner.SeverityError) {
			f.Severity = runner.SeverityError
		}
		subj := g.subject
		if subj == "" {
			subj = "(unknown)"
		}
		f.Message = fmt.Sprintf("%d %s %s %s", g.count, b.what, b.subj, subj)
		if len(g.secondary) > 0 {
			top := topN(g.secondary, 5)
			label := "users"
			switch g.code {
			case codeHTTPTop4xx:
				label = "statuses"
			case codeSudoUnexpected:
				label = "reason"
			}
			f.Message += fmt.Sprintf(" (%s: %s)", label, joinTop(top))
			f.Extra = map[string]any{label: top}
		}
		return f, true
	}
	for _, r := range a.rules {
		if r.Code != g.code {
			continue
		}
		if g.burst < r.Threshold {
			return f, false
		}
		f.Severity = r.sev
		what := r.Message
		if what == "" {
			what = "event(s) matching " + r.Code
		}
		f.Message = fmt.Sprintf("%d %s", g.count, what)
		if g.subject != "" {
			f.Message += " for " + g.subject
		}
		if r.Window > 0 {
			f.Message += fmt.Sprintf(" (up to %d within %s)", g.burst, r.Window)
			f.Extra = map[string]any{"max_in_window": g.burst}
		}
		return f, true
	}
	return f, false
}

type kv struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

func topN(m map[string]int64, n int) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	return out[:min(n, len(out))]
}

func joinTop(list []kv) string {
	parts := make([]string, len(list))
	for i, e := range list {
		parts[i] = fmt.Sprintf("%s×%d", e.Key, e.Count)
	}
	return strings.Join(parts, ", ")
}
