package configs

import (
	"errors"
	"strings"
	"testing"
)

// TestBadConfigs pins the exact message (file:line: path: text) for each
// kind of mistake an admin makes; the message is the product here.
func TestBadConfigs(t *testing.T) {
	const job = "jobs:\n  - name: j\n    kind: command\n    with: {argv: [/bin/true]}\n" // lines 1-4
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"yaml syntax", "jobs:\n  - name: a\n    kind: b: c\n", []string{"b.yaml:3: invalid YAML: mapping values are not allowed in this context"}},
		{"yaml unknown anchor", "jobs: *x\n", []string{"b.yaml: invalid YAML: unknown anchor 'x' referenced"}},
		{"yaml tab", "jobs:\n\t- name: a\n", []string{"b.yaml:2: invalid YAML: found character that cannot start any token"}},
		{"two documents", job + "---\njobs: []\n", []string{"b.yaml:5: invalid YAML: the file holds more than one YAML document"}},
		{"empty file", "# nothing\n", []string{"b.yaml: config is empty"}},
		{"top-level list", "- a\n- b\n", []string{"b.yaml:1: expected a mapping of sections (repository, history, jobs, ...), got a list"}},
		{"unknown section", "jobz: []\n", []string{`b.yaml:1: jobz: unknown field (did you mean "jobs"?)`}},
		{"unknown job field", job + "    retrys: 3\n", []string{`b.yaml:5: jobs[0].retrys: unknown field (did you mean "retries"?)`}},
		{"unknown field no suggestion", job + "    colour: red\n", []string{`b.yaml:5: jobs[0].colour: unknown field`}},
		{"unknown field in with", job + "    timeout: 1h\n" + "  - name: k\n    kind: command\n    with: {argv: [x], shell: true}\n", []string{`b.yaml:8: jobs[1].with.shell: unknown field`}},
		{"duplicate field", job + "    kind: files\n", []string{`b.yaml:5: jobs[0].kind: duplicate field (first set at line 3)`}},
		{"unknown kind", "jobs:\n  - name: j\n    kind: vmware\n", []string{`b.yaml:3: jobs[0].kind: unknown kind "vmware" (known: command, files)`}},
		{"missing kind", "jobs:\n  - name: j\n", []string{`b.yaml:2: jobs[0].kind: is required`}},
		{"missing name", "jobs:\n  - kind: command\n    with: {argv: [x]}\n", []string{`b.yaml:2: jobs[0].name: is required`}},
		{"bad name", "jobs:\n  - name: nightly backup\n    kind: command\n    with: {argv: [x]}\n", []string{`b.yaml:2: jobs[0].name: invalid name "nightly backup": use letters, digits, '.', '_' and '-', at most 64`}},
		{"duplicate job names", job + "  - name: j\n    kind: command\n    with: {argv: [x]}\n", []string{`b.yaml:5: jobs[1].name: duplicate job name "j" (first defined at line 2)`}},
		{"bad cron field count", job + "    schedule: \"* * * *\"\n", []string{`b.yaml:5: jobs[0].schedule: invalid schedule "* * * *": expected exactly 5 fields, found 4: [* * * *]`}},
		{"bad cron range", job + "    schedule: \"0 25 * * *\"\n", []string{`b.yaml:5: jobs[0].schedule: invalid schedule "0 25 * * *": end of range (25) above maximum (23): 25`}},
		{"bad descriptor", job + "    schedule: \"@fortnightly\"\n", []string{`b.yaml:5: jobs[0].schedule: invalid schedule "@fortnightly": unrecognized descriptor: @fortnightly`}},
		{"bad every", job + "    schedule: \"@every 6x\"\n", []string{`b.yaml:5: jobs[0].schedule: invalid schedule "@every 6x": failed to parse duration @every 6x: time: unknown unit "x" in duration "6x"`}},
		{"bad CRON_TZ", job + "    schedule: \"CRON_TZ=Mars/Base 0 2 * * *\"\n", []string{`b.yaml:5: jobs[0].schedule: invalid schedule "CRON_TZ=Mars/Base 0 2 * * *": provided bad location Mars/Base: unknown time zone Mars/Base`}},
		{"CRON_TZ alone", job + "    schedule: \"CRON_TZ=UTC\"\n", []string{`b.yaml:5: jobs[0].schedule: invalid schedule "CRON_TZ=UTC": CRON_TZ= must be followed by a schedule`}},
		{"negative timeout", job + "    timeout: -5m\n", []string{`b.yaml:5: jobs[0].timeout: must be positive`}},
		{"timeout wrong unit", job + "    timeout: 5 minutes\n", []string{`b.yaml:5: jobs[0].timeout: expected a duration like 90s, 15m or 7d, got "5 minutes"`}},
		{"timeout is a list", job + "    timeout: [1h]\n", []string{`b.yaml:5: jobs[0].timeout: expected a duration, got a list`}},
		{"retries not int", job + "    retries: three\n", []string{`b.yaml:5: jobs[0].retries: expected an integer, got "three"`}},
		{"retries too many", job + "    retries: 1000\n", []string{`b.yaml:5: jobs[0].retries: must be between 0 and 100`}},
		{"zero backoff", job + "    retry_backoff: 0\n", []string{`b.yaml:5: jobs[0].retry_backoff: must be positive`}},
		{"enabled not bool", job + "    enabled: yes\n", []string{`b.yaml:5: jobs[0].enabled: expected true or false, got "yes"`}},
		{"bad catch_up", job + "    catch_up: always\n", []string{`b.yaml:5: jobs[0].catch_up: must be "skip" or "once", got "always"`}},
		{"negative lateness", job + "    max_lateness: -1h\n", []string{`b.yaml:5: jobs[0].max_lateness: must not be negative`}},
		{"negative retention", job + "    retention:\n      keep_daily: -1\n", []string{`b.yaml:6: jobs[0].retention.keep_daily: must not be negative`}},
		{"retention unknown rule", job + "    retention: {keep_hourly: 3}\n", []string{`b.yaml:5: jobs[0].retention.keep_hourly: unknown field`}},
		{"retention is a number", job + "    retention: 7\n", []string{`b.yaml:5: jobs[0].retention: expected a mapping, got "7"`}},
		{"jobs not a list", "jobs:\n  name: j\n", []string{`b.yaml:2: jobs: expected a list, got a mapping`}},
		{"missing secret file", "repository:\n  url: /r\n  password_file: /secrets/nope\n", []string{`b.yaml:3: repository.password_file: read secret: open /secrets/nope: no such file or directory`}},
		{"empty secret file", "repository:\n  password_file: /secrets/empty\n", []string{`b.yaml:2: repository.password_file: secret file /secrets/empty is empty`}},
		{"secret twice", "repository:\n  password: x\n  password_file: /secrets/pw\n", []string{`b.yaml:3: repository.password_file: set only one of password and password_file`}},
		{"secret in with from missing file", job + "  - name: k\n    kind: command\n    with:\n      argv: [x]\n      token_file: /secrets/nope\n", []string{`b.yaml:9: jobs[1].with.token_file: read secret: open /secrets/nope: no such file or directory`}},
		{"unset env", "repository:\n  url: ${NOT_SET}\n", []string{`b.yaml:2: repository.url: environment variable NOT_SET is not set`}},
		{"files kind needs repository", "jobs:\n  - name: f\n    kind: files\n", []string{`b.yaml:3: jobs[0].kind: kind "files" needs a repository: set repository.url`}},
		{"bad timezone", job + "timezone: Mars/Base\n", []string{`b.yaml:5: timezone: unknown time zone "Mars/Base"`}},
		{"bad default timeout reported once", "defaults:\n  timeout: 0s\n" + job, []string{`b.yaml:2: defaults.timeout: must be positive`}},
		{"bad chunking", "repository:\n  chunking: {min_size: 4MiB, avg_size: 1MiB, max_size: 8MiB}\n", []string{`b.yaml:2: repository.chunking: need min_size <= avg_size <= max_size`}},
		{"bad size", "repository:\n  chunking: {min_size: 4 megs}\n", []string{`b.yaml:2: repository.chunking.min_size: expected a size like 4096, 512KiB or 8MiB, got "4 megs"`}},
		{"concurrency group zero", job + "concurrency_groups: {vm: 0}\n", []string{`b.yaml:5: concurrency_groups.vm: must be at least 1`}},
		{"float not a number", job + "  - name: k\n    kind: command\n    with:\n      argv: [x]\n      ratio: 5%\n", []string{`b.yaml:9: jobs[1].with.ratio: expected a number like 0.05, got "5%"`}},
		{"float decimal comma", "jobs:\n  - name: j\n    kind: command\n    with: {argv: [x], ratio: \"0,5\"}\n", []string{`b.yaml:4: jobs[0].with.ratio: expected a number like 0.05, got "0,5"`}},
		{"float not finite", "jobs:\n  - name: j\n    kind: command\n    with: {argv: [x], ratio: NaN}\n", []string{`b.yaml:4: jobs[0].with.ratio: expected a number like 0.05, got "NaN"`}},
		{"float is a list", "jobs:\n  - name: j\n    kind: command\n    with: {argv: [x], ratio: [1]}\n", []string{`b.yaml:4: jobs[0].with.ratio: expected a number, got a list`}},
		{"kind check error", "jobs:\n  - name: j\n    kind: command\n    with: {}\n", []string{`b.yaml:4: jobs[0].with.argv: is required`}},
		{"many errors at once", "jobs:\n  - name: a\n    kind: command\n    timeout: -1s\n    retries: -1\n    catch_up: never\n    with: {argv: [x]}\n", []string{
			`b.yaml:4: jobs[0].timeout: must be positive`,
			`b.yaml:5: jobs[0].retries: must be between 0 and 100`,
			`b.yaml:6: jobs[0].catch_up: must be "skip" or "once", got "never"`,
		}},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("b.yaml", []byte(tt.src), testOptions(t))
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %T %v, want Errors", err, err)
			}
			var got []string
			for _, e := range es {
				got = append(got, e.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
