package main

import (
	"context"
	"os"
	"strconv"
	"time"

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
	opts := s3.Options{Logger: g.logger(), CAFile: g.s3CAFile, InsecureTLS: g.insecureTLS}
	if err := s3OptionsFromEnv(&opts); err != nil {
		return nil, err
	}
	st, err := s3.Open(ctx, loc, opts)
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

// s3OptionsFromEnv applies VIGIL_S3_TIMEOUT, VIGIL_S3_RETRIES and
// VIGIL_S3_PAYLOAD_HASH (see s3.Options.PayloadHash). The store's
// defaults ride out minutes of endpoint trouble, which is right for a nightly
// backup but not for a run that must end by a deadline, or for a test; these
// two settings make the time a dead endpoint takes to report computable:
//
//	one request gives up after about  attempts × timeout + retries × min(timeout, 10s)
//
// with attempts = retries + 1 ("about": an attempt that first waits out a
// connect and then an answer can take up to twice the timeout). The timeout covers connecting, waiting for an
// answer and any stall mid-transfer alike, so that one number bounds them
// all; the backoff between attempts is capped by it too, so a short timeout
// is not undone by the default 10 s waits. docs/storage.md has the bound for
// a whole backup.
func s3OptionsFromEnv(o *s3.Options) error {
	if v := os.Getenv("VIGIL_S3_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return usageErr("VIGIL_S3_TIMEOUT=%q: want a positive duration such as 30s", v)
		}
		o.DialTimeout = d
		o.ResponseHeaderTimeout = d
		o.IdleTimeout = d
		o.MaxBackoff = min(d, s3.DefaultMaxBackoff)
	}
	if v := os.Getenv("VIGIL_S3_RETRIES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return usageErr("VIGIL_S3_RETRIES=%q: want a whole number of retries, 0 or more", v)
		}
		o.MaxAttempts = n + 1
	}
	if v := os.Getenv("VIGIL_S3_PAYLOAD_HASH"); v != "" {
		switch v {
		case s3.PayloadHashAuto, s3.PayloadHashHTTP, s3.PayloadHashNever:
			o.PayloadHash = v
		default:
			return usageErr("VIGIL_S3_PAYLOAD_HASH=%q: want auto, http or never", v)
		}
	}
	return nil
}
