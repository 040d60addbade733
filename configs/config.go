// Package configs defines vigil's configuration file and loads it
// predictably: built-in defaults, then the YAML file with ${ENV} expansion
// applied to its values, then validation that reports every problem with
// its file:line and field path. Unknown fields are errors, never ignored:
// a misspelt "retries" silently meaning "no retries" is how backups stop.
package configs

import (
	"time"
)

// Config is one vigil configuration file.
type Config struct {
	Repository Repository `yaml:"repository"`
	History    History    `yaml:"history"`
	// Timezone is the IANA zone cron schedules are read in, unless a job's
	// schedule starts with CRON_TZ=, and the one retention's days, weeks
	// and months are cut in. "Local" means the host's zone.
	Timezone string   `yaml:"timezone"`
	Defaults Defaults `yaml:"defaults"`
	// ConcurrencyGroups sets how many jobs of a group may run at once;
	// a group that is not listed here allows one.
	ConcurrencyGroups map[string]int `yaml:"concurrency_groups"`
	Jobs              []Job          `yaml:"jobs"`
	// Notify is reserved for the reports issue; it is kept unparsed.
	Notify With `yaml:"notify"`

	// File is the path the config was loaded from ("" when built in code).
	File string `yaml:"-"`
	// pos maps field paths to the line they were written on.
	pos map[string]int
}

// Repository is where backup jobs store data. The repository CLI reads the
// same section, so it stays a plain struct.
type Repository struct {
	// URL is a directory or an s3: URL.
	URL string `yaml:"url"`
	// Password may be given inline (usually as ${VIGIL_PASSWORD}) or
	// through PasswordFile; loading reads the file into Password.
	Password     Secret   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
	Chunking     Chunking `yaml:"chunking"`
}

// Chunking sets content-defined chunk sizes for new data; zero values leave
// the repository's own defaults in place.
type Chunking struct {
	MinSize ByteSize `yaml:"min_size"`
	AvgSize ByteSize `yaml:"avg_size"`
	MaxSize ByteSize `yaml:"max_size"`
}

// History configures the SQLite run history.
type History struct {
	Path string `yaml:"path"`
	// Keep is how long finished runs are kept; 0 keeps them forever.
	Keep Duration `yaml:"keep"`
	// MaxLogLines caps the log lines stored per run (the rest is counted).
	MaxLogLines int `yaml:"max_log_lines"`
}

// Defaults apply to every job that does not set the field itself.
type Defaults struct {
	Timeout      Duration  `yaml:"timeout"`
	Retries      int       `yaml:"retries"`
	RetryBackoff Duration  `yaml:"retry_backoff"`
	Retention    Retention `yaml:"retention"`
	CatchUp      string    `yaml:"catch_up"`
	MaxLateness  Duration  `yaml:"max_lateness"`
}

// Retention says which snapshots a backup job keeps; zero keeps everything.
type Retention struct {
	KeepLast    int `yaml:"keep_last"`
	KeepDaily   int `yaml:"keep_daily"`
	KeepWeekly  int `yaml:"keep_weekly"`
	KeepMonthly int `yaml:"keep_monthly"`
	KeepYearly  int `yaml:"keep_yearly"`
}

// IsZero reports whether no keep rule is set (keep everything).
func (r Retention) IsZero() bool { return r == Retention{} }

// Catch-up policies for schedules that passed while vigil was down.
const (
	CatchUpSkip = "skip" // record the missed run, do not run it
	CatchUpOnce = "once" // run once at start-up if within max_lateness
)

// Job is one scheduled job.
type Job struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// Schedule is a five-field cron expression, a descriptor such as
	// @daily or "@every 6h", optionally prefixed by CRON_TZ=Zone. Empty
	// means the kind's default schedule, or manual runs only.
	Schedule         string    `yaml:"schedule"`
	Timeout          Duration  `yaml:"timeout"`
	Retries          int       `yaml:"retries"`
	RetryBackoff     Duration  `yaml:"retry_backoff"`
	ConcurrencyGroup string    `yaml:"concurrency_group"`
	CatchUp          string    `yaml:"catch_up"`
	MaxLateness      Duration  `yaml:"max_lateness"`
	Retention        Retention `yaml:"retention"`
	Enabled          bool      `yaml:"enabled"`
	// With is the kind's own section, decoded by the kind (With.Decode).
	With With `yaml:"with"`
	// Location is the config's timezone, set by Load (nil means
	// time.Local), for kinds that cut time into days and weeks: retention
	// keeps "one per day" in the admin's days, not the server's.
	Location *time.Location `yaml:"-" json:"-"`
}

// Default returns the built-in defaults that a config file overrides.
func Default() *Config {
	return &Config{
		Timezone: "Local",
		History: History{
			Path:        "/var/lib/vigil/history.db",
			Keep:        Duration(400 * 24 * time.Hour),
			MaxLogLines: 5000,
		},
		Defaults: Defaults{
			Timeout:      Duration(6 * time.Hour),
			Retries:      0,
			RetryBackoff: Duration(time.Minute),
			CatchUp:      CatchUpOnce,
			MaxLateness:  Duration(12 * time.Hour),
		},
	}
}

// Location returns the configured time zone (validated by Load).
func (c *Config) Location() (*time.Location, error) {
	return loadLocation(c.Timezone)
}

func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return time.Local, nil
	}
	return time.LoadLocation(name)
}

// Job returns the job called name.
func (c *Config) Job(name string) (Job, bool) {
	for _, j := range c.Jobs {
		if j.Name == name {
			return j, true
		}
	}
	return Job{}, false
}

// Line returns the line a field path was written on, or the line of its
// closest written parent, or 0.
func (c *Config) Line(path string) int {
	return lineOf(c.pos, path)
}
