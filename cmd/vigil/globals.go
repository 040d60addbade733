package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// globals holds the flags shared by every subcommand.
type globals struct {
	repo         string
	passwordFile string
	cacheDir     string
	json         bool
	quiet        bool
	verbose      bool
	s3CAFile     string
	insecureTLS  bool

	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

func (g *globals) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVarP(&g.repo, "repo", "r", "", "repository location: a directory or s3:URL (env VIGIL_REPOSITORY)")
	pf.StringVar(&g.passwordFile, "password-file", "", "file holding the repository password (env VIGIL_PASSWORD_FILE, or VIGIL_PASSWORD)")
	pf.StringVar(&g.cacheDir, "cache-dir", "", "local cache directory (default: $XDG_CACHE_HOME/vigil)")
	pf.BoolVar(&g.json, "json", false, "print JSON lines: progress, then a summary object")
	pf.BoolVarP(&g.quiet, "quiet", "q", false, "print only errors and the summary")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "debug logging")
	pf.StringVar(&g.s3CAFile, "ca-file", "", "PEM file of extra root certificates for a private S3 endpoint")
	pf.BoolVar(&g.insecureTLS, "insecure-tls", false, "do not verify the S3 endpoint's TLS certificate (warns)")
	g.stdout = os.Stdout
	g.stderr = os.Stderr
	root.PersistentPreRun = func(cmd *cobra.Command, args []string) {
		g.stdout = cmd.OutOrStdout()
		g.stderr = cmd.ErrOrStderr()
		level := slog.LevelWarn
		if g.verbose {
			level = slog.LevelDebug
		}
		g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
		if g.repo == "" {
			g.repo = os.Getenv("VIGIL_REPOSITORY")
		}
		if g.passwordFile == "" {
			g.passwordFile = os.Getenv("VIGIL_PASSWORD_FILE")
		}
	}
}

func (g *globals) logger() *slog.Logger {
	if g.log == nil {
		g.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return g.log
}

// emit prints one JSON line on stdout.
func (g *globals) emit(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err = fmt.Fprintf(g.stdout, "%s\n", b)
	return err
}

// printError prints the one-line reason for a failed command.
func (g *globals) printError(err error) {
	w := g.stderr
	if w == nil {
		w = os.Stderr
	}
	if g.json {
		b, _ := json.Marshal(map[string]string{"message_type": "error", "error": err.Error()})
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	fmt.Fprintf(w, "vigil: %s\n", err)
}

// isTerminal reports whether w is an interactive terminal (progress bars, prompts).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "requires exactly", "invalid argument", "flag needs an argument"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}
