package main

import (
	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

func newInitCmd(g *globals) *cobra.Command {
	var packMiB int
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a new repository",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			st, err := g.openStore(ctx, true)
			if err != nil {
				return err
			}
			pw, err := g.password("new repository password: ")
			if err != nil {
				return err
			}
			r, err := repo.Init(ctx, st, pw, repo.InitOptions{PackSize: packMiB << 20}, g.repoOptions())
			if err != nil {
				return err
			}
			cfg := r.Config()
			if g.json {
				return g.emit(map[string]any{"message_type": "summary", "id": cfg.ID.String(), "repository": st.Location(), "pack_size": cfg.PackSize})
			}
			g.out("created repository %s at %s\n", cfg.ID.Short(), st.Location())
			g.out("keep the password safe: the repository cannot be read without it\n")
			return nil
		},
	}
	c.Flags().IntVar(&packMiB, "pack-size", 16, "target pack size in MiB")
	return c
}
