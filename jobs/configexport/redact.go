package configexport

import (
	"regexp"
	"strings"
)

// Redacted replaces every secret in text that is shown.
const Redacted = "<redacted>"

// Built-in redaction rules. Each replaces its capture groups. They cover
// the secrets that device configs actually carry: local user password
// hashes (ProCurve "password manager ... sha1 ...", Aruba CX "password
// ciphertext ...", ICX "password 8 ..."), SNMP communities and v3 keys,
// RADIUS/TACACS shared keys, Wi-Fi pre-shared keys, API tokens, and in
// JSON/YAML any key whose name says it is a secret.
var builtinRules = []*regexp.Regexp{
	// keyword [modifiers...] SECRET, e.g. `password manager user-name "admin" sha1 "5baa..."`,
	// `snmp-server community "public" unrestricted`, `wpa-passphrase xyz`,
	// `password: hunter2` (YAML), `token=abc` (ini). In a quoted message a
	// keyword may follow an escaped tab or newline (\tpassword).
	regexp.MustCompile(`(?i)(?:\b|_|\\[tnr])(?:password|passwd|passphrase|wpa-passphrase|wpa_passphrase|psk|pre-shared-key|preshared-key|shared-secret|secret|community|auth-key|priv-key|auth-pass|priv-pass|key-string|api[-_]?key|api[-_]?token|access[-_]?token|bearer|token)(?:\s*[:=]\s*|\s+)` +
		`(?:(?:[0-9]|sha1|sha256|sha512|md5|plaintext|plain|ciphertext|cipher|encrypted|hashed|hash|manager|operator|unrestricted|restricted|user-name\s+\S+|sha|aes|des|auth|priv)\s+)*` +
		`(` + quotedSecret + `|'[^'\n]*'|` + bareSecret + `)`),
	// RADIUS and TACACS+ server keys: `radius-server host 10.1.1.1 key "s3cret"`, `tacacs-server key 2 $x`.
	regexp.MustCompile(`(?i)\b(?:radius|tacacs)\S*\s[^\n]*?\bkey\s+(?:[0-9]\s+)?(` + quotedSecret + `|\S+)`),
	// SNMPv3 users: `snmpv3 user "mon" auth sha "pw" priv aes "pw"`.
	regexp.MustCompile(`(?i)\bsnmpv3\s+user\s+\S+\s+auth\s+\S+\s+(` + quotedSecret + `|\S+)(?:\s+priv\s+\S+\s+(` + quotedSecret + `|\S+))?`),
	// JSON string values under secret-like keys: "adminPassword": "x"; also
	// when quoted into a message (\"adminPassword\": \"x\").
	regexp.MustCompile(`(?i)"[^"\n]*(?:password|passwd|passphrase|secret|token|psk|apikey|api_key|api-key|community|privatekey|private_key)[^"\n]*"\s*:\s*("(?:[^"\\\n]|\\.)*"|\\+"[^"\n]*?\\+")`),
	// crypt(3) hashes, as in /etc/shadow: user:$6$salt$hash:...
	regexp.MustCompile(`(?m)(?:^|[\s"])[^:\s"]+:(\$[0-9a-z]+\$[^:\s]+):`),
	// PEM private keys.
	regexp.MustCompile(`(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----(.*?)-----END [A-Z ]*PRIVATE KEY-----`),
}

// Device text quoted into an error message (%q) has its quotes escaped,
// and quoted again they gain more backslashes: a quoted secret is matched
// from an opening quote, escaped any number of times, to the next one.
const quotedSecret = `\\*"[^"\n]*?\\*"`

// bareSecret is an unquoted secret; it stops before an escaped quote, the
// end of the message that quotes it.
const bareSecret = `(?:[^\s"'\\]|\\+[^\s"'\\])+`

// redactor hides secrets in text that is shown: diffs, findings, logs,
// error messages and --json output.
type redactor struct {
	rules []*regexp.Regexp
}

func newRedactor(extra []*regexp.Regexp) *redactor {
	rules := append([]*regexp.Regexp{}, builtinRules...)
	return &redactor{rules: append(rules, extra...)}
}

// Redact returns text with every secret replaced by Redacted. Quoted
// secrets keep their quotes, so the line still reads as config. Applying
// it twice changes nothing more.
func (r *redactor) Redact(text string) string {
	if r == nil {
		r = defaultRedactor
	}
	for _, re := range r.rules {
		text = redactAll(re, text)
	}
	return text
}

var defaultRedactor = newRedactor(nil)

func redactAll(re *regexp.Regexp, text string) string {
	matches := re.FindAllStringSubmatchIndex(text, -1)
	if matches == nil {
		return text
	}
	var b strings.Builder
	last := 0
	for _, m := range matches {
		spans := [][2]int{}
		if len(m) == 2 {
			spans = append(spans, [2]int{m[0], m[1]})
		}
		for g := 2; g+1 < len(m); g += 2 {
			if m[g] >= 0 && m[g+1] > m[g] {
				spans = append(spans, [2]int{m[g], m[g+1]})
			}
		}
		for _, s := range spans {
			if s[0] < last {
				continue
			}
			b.WriteString(text[last:s[0]])
			b.WriteString(mask(text[s[0]:s[1]]))
			last = s[1]
		}
	}
	b.WriteString(text[last:])
	return b.String()
}

// mask keeps surrounding quotes, escaped or not, so the redacted line
// keeps its shape.
func mask(secret string) string {
	open := len(secret) - len(strings.TrimLeft(secret, `\`))
	if open < len(secret) && (secret[open] == '"' || secret[open] == '\'') {
		q := secret[:open+1]
		if len(secret) >= 2*len(q) && strings.HasSuffix(secret, q) {
			return q + Redacted + q
		}
	}
	return Redacted
}
