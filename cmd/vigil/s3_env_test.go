package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigilops/vigil/storage/blob/s3"
)

func TestS3OptionsFromEnv(t *testing.T) {
	t.Setenv("VIGIL_S3_TIMEOUT", "3s")
	t.Setenv("VIGIL_S3_RETRIES", "2")
	t.Setenv("VIGIL_S3_PAYLOAD_HASH", "http")
	var o s3.Options
	if err := s3OptionsFromEnv(&o); err != nil {
		t.Fatal(err)
	}
	if o.ResponseHeaderTimeout != 3*time.Second || o.MaxAttempts != 3 || o.PayloadHash != s3.PayloadHashHTTP {
		t.Fatalf("options %+v", o)
	}
	for _, c := range []struct{ env, val, want string }{
		{"VIGIL_S3_TIMEOUT", "soon", "VIGIL_S3_TIMEOUT=\"soon\""},
		{"VIGIL_S3_RETRIES", "-1", "VIGIL_S3_RETRIES=\"-1\""},
		{"VIGIL_S3_PAYLOAD_HASH", "sometimes", "want auto, http or never"},
	} {
		t.Run(c.env, func(t *testing.T) {
			t.Setenv(c.env, c.val)
			err := s3OptionsFromEnv(&s3.Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) || exitCode(context.Background(), err) != exitUsage {
				t.Fatalf("%s=%s: %v (exit %d), want a usage error with %q", c.env, c.val, err, exitCode(context.Background(), err), c.want)
			}
		})
	}
}
