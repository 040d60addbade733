// Command vigil is the operations and backup orchestrator's CLI. This package
// only wires concrete types together and maps errors to exit codes; every
// subcommand lives in its own file.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

// Exit codes are part of the CLI contract (see README).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitPartial     = 3
	exitNoRepo      = 10
	exitLocked      = 11
	exitWrongPass   = 12
	exitInterrupted = 130
)

// exitError carries an explicit exit code through cobra.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string { return e.err.Error() }
func (e *codeError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codeError{code: code, err: err}
}

func usageErr(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Backups cycle through large, reused, pointer-free buffers and little
	// else, so a low GC target costs almost no CPU and keeps peak memory near
	// the live set (2 GiB image backup: GOGC=100 135 MiB, 25 122 MiB,
	// 10 115 MiB peak RSS at the same speed).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(10)
	}

	if point := os.Getenv("VIGIL_TEST_CRASH_AT"); point != "" {
		// Crash-safety tests: die like a killed process at a named point.
		repo.SetCrashHook(func(p string) {
			if p == point {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		})
	}
	// VIGIL_CPUPROFILE writes a CPU profile, for performance work.
	if p := os.Getenv("VIGIL_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			_ = pprof.StartCPUProfile(f)
			code := run(ctx, os.Args[1:])
			pprof.StopCPUProfile()
			f.Close()
			if hp, err := os.Create(p + ".heap"); err == nil {
				_ = pprof.Lookup("heap").WriteTo(hp, 0)
				hp.Close()
			}
			os.Exit(code)
		}
	}
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	g := &globals{}
	root := &cobra.Command{
		Use:           "vigil",
		Short:         "vigil: scheduled backups, log analysis and config exports into one encrypted, deduplicating repository",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g.register(root)
	// Subcommands; each constructor lives in its own file.
	root.AddCommand(
		newVersionCmd(g),
		newVMCmd(g),
		newConfigsCmd(g),
	)
	addRepoCommands(root, g)
	addRunnerCommands(root, g)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return withCode(exitUsage, err) })
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(ctx, err)
	g.printError(err)
	return code
}

func exitCode(ctx context.Context, err error) int {
	var ce *codeError
	if errors.As(err, &ce) {
		return ce.code
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return exitInterrupted
	}
	if c := repoExitCode(err); c != 0 {
		return c
	}
	// cobra reports unknown commands and bad args as plain errors.
	if isCobraUsage(err) {
		return exitUsage
	}
	return exitError
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.json {
				return g.emit(map[string]string{"version": version})
			}
			fmt.Fprintln(cmd.OutOrStdout(), "vigil", version)
			return nil
		},
	}
}

var version = "0.1.0-dev"
