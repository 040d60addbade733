package main

import "github.com/spf13/cobra"

// addRunnerCommands wires the scheduler, job and history commands
// (daemon, run, jobs, runs, config). Owned by the runner work (issue 4).
func addRunnerCommands(root *cobra.Command, g *globals) {
	_ = root
	_ = g
}
