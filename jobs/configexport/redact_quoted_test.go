package configexport

import (
	"fmt"
	"strings"
	"testing"
)

// TestRedactQuotedInErrors: device text quoted into an error message with
// %q has its quotes escaped (\"secret\"), tabs written \t and so on. Every
// secret must still be hidden, the quotes around it kept, and the rest of
// the line left readable. The ssh source redacts before quoting; this is
// the second line of defence, applied to every error message shown.
func TestRedactQuotedInErrors(t *testing.T) {
	cases := []struct {
		line    string
		secrets []string
		keep    string // what the quoted, redacted line must still contain
	}{
		{`snmp-server community "l1brary-ro" operator`, []string{"l1brary-ro"}, `snmp-server community \"<redacted>\" operator`},
		{`snmp-server community "pub lic" manager unrestricted`, []string{"pub", "lic"}, `community \"<redacted>\" manager`},
		{`password manager user-name "admin" sha1 "5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"`, []string{"5baa61e4c9b93f3f0682250b6cf8331b7ee68fd8"}, `user-name \"admin\" sha1 \"<redacted>\"`},
		{`password manager user-name "admin" plaintext "pa ss word"`, []string{"pa ss"}, `plaintext \"<redacted>\"`},
		{`snmpv3 user "mon" auth sha "auth pw 1" priv aes "priv pw 2"`, []string{"auth pw", "priv pw", "pw 1", "pw 2"}, `snmpv3 user \"mon\" auth sha \"<redacted>\" priv aes \"<redacted>\"`},
		{`radius-server host 10.0.0.5 key "key with space"`, []string{"key with", "with space"}, `radius-server host 10.0.0.5 key \"<redacted>\"`},
		{`tacacs-server host 10.0.0.6 key "tac4cs-Sh4red"`, []string{"tac4cs-Sh4red"}, `key \"<redacted>\"`},
		{`wlan guest wpa-passphrase "my wifi pass"`, []string{"my wifi", "wifi pass"}, `wpa-passphrase \"<redacted>\"`},
		{`  "adminPassword": "hunter2",`, []string{"hunter2"}, `\"adminPassword\": \"<redacted>\",`},
		{`{"wlan": {"psk": "abc 123"}, "name": "ok"}`, []string{"abc 123", "abc"}, `\"name\": \"ok\"`},
		{"\tpassword: s3cret-tab", []string{"s3cret-tab"}, `\tpassword: <redacted>`},
		{`username noc password 8 $1$Rt4.$Hx9Pq0wTicxNn0kE7vJ.a1`, []string{"Hx9Pq0wTicxNn0kE7vJ"}, `username noc password 8 <redacted>`},
		{`root:$6$saltsalt$7yH3Zc0M1mQ:19000:0:99999:7:::`, []string{"7yH3Zc0M1mQ"}, `root:<redacted>:19000`},
	}
	for _, c := range cases {
		for _, msg := range []string{
			fmt.Sprintf("ssh 10.0.0.2: the prompt after \"show running-config\" did not come: timed out; last output: %q", c.line),
			// An error that quotes such an error again.
			fmt.Sprintf("export failed: %q", fmt.Sprintf("last output: %q", c.line)),
		} {
			got := defaultRedactor.Redact(msg)
			for _, s := range c.secrets {
				if strings.Contains(got, s) {
					t.Errorf("%s\nshows %q:\n%s", c.line, s, got)
				}
			}
			if strings.Count(msg, `\\`) == 0 && !strings.Contains(got, c.keep) {
				t.Errorf("%s\nredacted too much or lost its quotes; want %s in:\n%s", c.line, c.keep, got)
			}
			if again := defaultRedactor.Redact(got); again != got {
				t.Errorf("not idempotent:\n%s\n%s", got, again)
			}
		}
	}
	// The lines of every device config in the tests, quoted once.
	for _, text := range []string{night1, mustRead(t, "testdata/devices/procurve-running-config.txt"), mustRead(t, "testdata/devices/icx-running-config.txt")} {
		for _, line := range SplitLines(text) {
			got := defaultRedactor.Redact(fmt.Sprintf("last output: %q", line))
			for _, s := range append(append([]string{}, secrets...), deviceSecrets...) {
				if strings.Contains(got, s) {
					t.Errorf("quoted %q shows %q: %s", line, s, got)
				}
			}
		}
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	_, text := deviceConfig(t, strings.TrimPrefix(path, "testdata/devices/"))
	return text
}
