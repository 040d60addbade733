package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vigilops/vigil/storage/repo"
)

func newBackupCmd(g *globals) *cobra.Command {
	var o repo.BackupOptions
	c := &cobra.Command{
		Use:   "backup PATH...",
		Short: "Back up files and directories into a new snapshot",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			r, err := g.openRepo(ctx)
			if err != nil {
				return err
			}
			o.Paths = args
			p := g.newProgress()
			if p.active() {
				o.Progress = func(pr repo.Progress) {
					p.update("backup", pr.BytesDone, pr.BytesTotal, map[string]any{"files_done": pr.Files, "errors": pr.Errors})
				}
			}
			res, err := r.Backup(ctx, o)
			p.done()
			if err != nil {
				return err
			}
			g.fileErrors("skipped", res.Errors)
			sn := res.Snapshot
			s := sn.Summary
			secs := s.End.Sub(s.Start).Seconds()
			if g.json {
				_ = g.emit(map[string]any{"message_type": "summary", "snapshot_id": sn.ID.String(), "parent": sn.Parent,
					"files_new": s.FilesNew, "files_changed": s.FilesChanged, "files_unchanged": s.FilesUnchanged,
					"dirs": s.Dirs, "bytes_read": s.BytesRead, "bytes_total": s.BytesTotal, "bytes_new": s.BytesNew,
					"bytes_stored": s.BytesStored, "blobs_new": s.BlobsNew, "chunks": s.Chunks, "errors": len(res.Errors),
					"seconds": secs})
			} else {
				g.out("files: %d new, %d changed, %d unchanged; %d dirs\n", s.FilesNew, s.FilesChanged, s.FilesUnchanged, s.Dirs)
				g.out("read %s in %.2fs (%s/s), new data %s, stored %s after compression\n", humanBytes(s.BytesRead), secs,
					humanBytes(int64(float64(s.BytesRead)/max(secs, 0.001))), humanBytes(s.BytesNew), humanBytes(s.BytesStored))
				g.out("snapshot %s saved\n", sn.ID.Short())
			}
			if len(res.Errors) > 0 {
				return &partialError{msg: fmt.Sprintf("backup is partial: %d path(s) could not be read (snapshot %s saved without them)", len(res.Errors), sn.ID.Short())}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringArrayVar(&o.Tags, "tag", nil, "tag for the snapshot (repeatable)")
	f.StringVar(&o.Host, "host", "", "host name to record (default: this host)")
	f.StringVar(&o.Job, "job", "", "job label to record")
	f.StringVar(&o.Chunking, "chunking", "auto", "chunking profile: auto, default or image")
	f.StringArrayVar(&o.Excludes, "exclude", nil, "exclude paths matching a pattern (repeatable)")
	f.StringVar(&o.Parent, "parent", "", "parent snapshot to compare against (default: latest with same host, job and paths; none: read everything)")
	f.DurationVar(&o.LockWait, "lock-wait", 0, "wait this long for a conflicting lock")
	return c
}
