package configexport

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

func TestRedactEverySecretKind(t *testing.T) {
	got := defaultRedactor.Redact(night1)
	assertNoSecrets(t, "redacted config", got)
	for _, want := range []string{
		`password manager user-name "admin" sha1 "<redacted>"`,
		`password ciphertext <redacted>`,
		`username noc password 8 <redacted>`,
		`snmp-server community "<redacted>" operator`,
		`snmp-server community <redacted> rw`,
		`snmpv3 user "mon" auth sha "<redacted>" priv aes "<redacted>"`,
		`radius-server host 10.0.0.5 key "<redacted>"`,
		`wlan guest wpa-passphrase <redacted>`,
		`api_token: <redacted>`,
		`root:<redacted>:19000`,
		`hostname "switch-core-2"`, // untouched
		`   name "staff"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("redacted text lacks %q:\n%s", want, got)
		}
	}
	if again := defaultRedactor.Redact(got); again != got {
		t.Errorf("redaction is not idempotent:\n%s", again)
	}
	// Device lines quoted into error messages (%q escapes the quotes).
	for _, line := range SplitLines(night1) {
		assertNoSecrets(t, "quoted line", defaultRedactor.Redact(fmt.Sprintf("last output: %q", line)))
	}
	js := "{\n  \"adminPassword\": \"hunter2\\\"x\",\n  \"wlan\": {\"psk\": \"abc123\"},\n  \"name\": \"ok\"\n}"
	red := defaultRedactor.Redact(js)
	if strings.Contains(red, "hunter2") || strings.Contains(red, "abc123") || !strings.Contains(red, `"name": "ok"`) {
		t.Errorf("json redaction: %s", red)
	}
	pem := "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\n"
	if red := defaultRedactor.Redact(pem); strings.Contains(red, "b3BlbnNzaC1rZXk") {
		t.Errorf("pem redaction: %s", red)
	}
	custom := newRedactor([]*regexp.Regexp{regexp.MustCompile(`license (\S+)`), regexp.MustCompile(`SERIAL-\d+`)})
	if got := custom.Redact("license ABC-123\nid SERIAL-42\n"); got != "license <redacted>\nid <redacted>\n" {
		t.Errorf("custom rules: %q", got)
	}
}

func TestNormalize(t *testing.T) {
	n := normalizer{volatile: []*regexp.Regexp{regexp.MustCompile(`^; Uptime`)}, pager: regexp.MustCompile(`-- MORE --.*`)}
	raw := "\r\n\x1b[1;24r\x1b[24;1HRunning configuration:\r\n\r\n; Uptime 3d\r\nhostname \x1b[1mcore\x1b[0m   \r\n" +
		"-- MORE --, next page: Space\r                 \rvlan 1\r\nfoo\bo\r\n\r\n"
	got := string(n.normalize([]byte(raw)))
	want := "Running configuration:\n\nhostname core\nvlan 1\nfoo\n"
	if got != want {
		t.Errorf("normalize:\n%q\nwant\n%q", got, want)
	}
}
