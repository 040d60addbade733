package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vigilops/vigil/storage/blob"
	"github.com/vigilops/vigil/storage/blob/local"
	"github.com/vigilops/vigil/storage/repo"
)

// addRepoCommands wires the repository commands.
func addRepoCommands(root *cobra.Command, g *globals) {
	root.AddCommand(
		newInitCmd(g),
		newBackupCmd(g),
		newSnapshotsCmd(g),
		newLsCmd(g),
		newRestoreCmd(g),
		newCheckCmd(g),
		newForgetCmd(g),
		newPruneCmd(g),
		newStatsCmd(g),
		newKeyCmd(g),
		newLocksCmd(g),
		newRepairCmd(g),
		newBenchCmd(g),
		newDemoCmd(g),
	)
}

// partialError marks a command that did part of its work (exit 3).
type partialError struct{ msg string }

func (e *partialError) Error() string { return e.msg }

// repoExitCode maps repository errors to exit codes; 0 means "not a repository error".
func repoExitCode(err error) int {
	var pe *partialError
	switch {
	case errors.As(err, &pe):
		return exitPartial
	case errors.Is(err, repo.ErrNoRepository):
		return exitNoRepo
	case errors.Is(err, repo.ErrWrongPassword):
		return exitWrongPass
	case errors.Is(err, repo.ErrLocked):
		return exitLocked
	}
	return 0
}

// openStore opens the store named by --repo.
func (g *globals) openStore(ctx context.Context, create bool) (blob.Store, error) {
	if g.repo == "" {
		return nil, usageErr("no repository given: use --repo or VIGIL_REPOSITORY")
	}
	if strings.HasPrefix(g.repo, "s3:") {
		return g.openS3(ctx, create)
	}
	st, err := local.Open(g.repo, create)
	if err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return nil, fmt.Errorf("open %s: %w", g.repo, repo.ErrNoRepository)
		}
		return nil, err
	}
	return st, nil
}

func (g *globals) repoOptions() repo.Options {
	o := repo.Options{Logger: g.logger(), CacheDir: g.cachePath()}
	if strings.HasPrefix(g.repo, "s3:") {
		// Remote stores need more requests in flight to fill the link;
		// each may hold one pack in memory.
		o.Connections = 4
		o.Uploads = 4
	}
	if v := os.Getenv("VIGIL_KDF_N"); v != "" {
		// Tests lower the KDF cost for new keys; stored keys carry their own.
		var n int
		fmt.Sscanf(v, "%d", &n)
		o.KDF = repo.KDFParams{N: n, R: 8, P: 1}
	}
	return o
}

func (g *globals) cachePath() string {
	if g.cacheDir == "off" {
		return ""
	}
	if g.cacheDir != "" {
		return g.cacheDir
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "vigil")
	}
	return ""
}

// password reads the repository password from --password-file,
// VIGIL_PASSWORD_FILE, VIGIL_PASSWORD or, on a terminal, a prompt.
func (g *globals) password(prompt string) (string, error) {
	if g.passwordFile != "" {
		b, err := os.ReadFile(g.passwordFile)
		if err != nil {
			return "", usageErr("read password file: %v", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", usageErr("password file %s is empty", g.passwordFile)
		}
		return pw, nil
	}
	if pw := os.Getenv("VIGIL_PASSWORD"); pw != "" {
		return pw, nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(os.Stderr, prompt)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return string(b), nil
	}
	return "", usageErr("no password: use --password-file, VIGIL_PASSWORD_FILE or VIGIL_PASSWORD")
}

// openRepo opens the repository for a command.
func (g *globals) openRepo(ctx context.Context) (*repo.Repository, error) {
	st, err := g.openStore(ctx, false)
	if err != nil {
		return nil, err
	}
	pw, err := g.password("repository password: ")
	if err != nil {
		return nil, err
	}
	return repo.Open(ctx, st, pw, g.repoOptions())
}

// progress prints a one-line progress bar on a terminal, or JSON status
// lines with --json; nothing otherwise.
type progress struct {
	g     *globals
	start time.Time
	tty   bool
}

func (g *globals) newProgress() *progress {
	return &progress{g: g, start: time.Now(), tty: !g.quiet && !g.json && isTerminal(g.stderr)}
}

func (p *progress) active() bool { return p.tty || p.g.json }

func (p *progress) update(kind string, done, total int64, extra map[string]any) {
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(done) / el
	}
	eta := ""
	etaS := 0.0
	if rate > 0 && total > done {
		etaS = float64(total-done) / rate
		eta = fmt.Sprintf(" ETA %s", (time.Duration(etaS) * time.Second).String())
	}
	if p.g.json {
		m := map[string]any{"message_type": "status", "operation": kind, "bytes_done": done, "bytes_total": total,
			"seconds_elapsed": el, "bytes_per_second": rate, "seconds_remaining": etaS}
		for k, v := range extra {
			m[k] = v
		}
		_ = p.g.emit(m)
		return
	}
	if !p.tty {
		return
	}
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	const width = 24
	fill := int(pct / 100 * width)
	fill = max(0, min(width, fill))
	fmt.Fprintf(p.g.stderr, "\r[%s%s] %5.1f%% %s / %s  %s/s%s   ", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
		pct, humanBytes(done), humanBytes(total), humanBytes(int64(rate)), eta)
}

func (p *progress) done() {
	if p.tty {
		fmt.Fprint(p.g.stderr, "\r\033[K")
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// confirm asks a yes/no question on a terminal.
func confirm(q string) bool {
	fmt.Fprint(os.Stderr, q+" [y/N] ")
	s, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	return strings.TrimSpace(strings.ToLower(s)) == "y"
}

// out prints human output unless --json or --quiet.
func (g *globals) out(format string, args ...any) {
	if g.json || g.quiet {
		return
	}
	fmt.Fprintf(g.stdout, format, args...)
}

// fileErrors reports per-file failures of a partial backup or restore.
func (g *globals) fileErrors(verb string, errs []repo.FileError) {
	for _, fe := range errs {
		if g.json {
			_ = g.emit(map[string]any{"message_type": "error", "path": fe.Path, "error": fe.Err.Error()})
		} else {
			fmt.Fprintf(g.stderr, "vigil: %s %s\n", verb, fe.Error())
		}
	}
}
