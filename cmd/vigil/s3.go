package main

import (
	"context"

	"github.com/vigilops/vigil/storage/blob"
	"github.com/vigilops/vigil/storage/blob/s3"
)

// openS3 opens an s3: repository URL. With create (vigil init) a missing
// bucket is created, and the admin is told.
func (g *globals) openS3(ctx context.Context, create bool) (blob.Store, error) {
	loc, err := s3.ParseURL(g.repo)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	st, err := s3.Open(ctx, loc, s3.Options{Logger: g.logger(), CAFile: g.s3CAFile, InsecureTLS: g.insecureTLS})
	if err != nil {
		return nil, err
	}
	if create {
		created, err := st.EnsureBucket(ctx)
		if err != nil {
			return nil, err
		}
		if created {
			g.out("created bucket for %s\n", st.Location())
		}
	}
	return st, nil
}
