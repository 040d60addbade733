package s3

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/vigilops/vigil/storage/blob"
)

func TestParseURL(t *testing.T) {
	good := []struct {
		in   string
		want Location
	}{
		{"s3://my-bucket", Location{Bucket: "my-bucket"}},
		{"s3://my-bucket/", Location{Bucket: "my-bucket"}},
		{"s3://my.bucket/vigil/host1", Location{Bucket: "my.bucket", Prefix: "vigil/host1"}},
		{"s3:http://127.0.0.1:9000/backups", Location{Endpoint: "http://127.0.0.1:9000", Bucket: "backups"}},
		{"s3:https://s3.example.org/backups/repo/", Location{Endpoint: "https://s3.example.org", Bucket: "backups", Prefix: "repo"}},
		{"s3:https://[::1]:9000/b01/p", Location{Endpoint: "https://[::1]:9000", Bucket: "b01", Prefix: "p"}},
	}
	for _, c := range good {
		got, err := ParseURL(c.in)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseURL(%q) = %+v, want %+v", c.in, got, c.want)
		}
		// String gives back a URL that parses to the same location.
		again, err := ParseURL(got.String())
		if err != nil || again != got {
			t.Errorf("ParseURL(%q.String() = %q) = %+v, %v", c.in, got.String(), again, err)
		}
	}
	bad := []string{
		"", "s3:", "s3://", "http://host/bucket", "s3:ftp://host/bucket", "s3:http:///bucket",
		"s3://ab", "s3://Upper", "s3://-bucket", "s3://bucket-", "s3://under_score",
		"s3://" + strings.Repeat("a", 64),
		"s3:http://host:9000", "s3:http://host:9000/",
		"s3://bucket/a//b", "s3://bucket/../x", "s3://bucket/./x",
		"s3:http://host/bucket?versionId=1", "s3:http://host/bucket#frag",
	}
	for _, in := range bad {
		if loc, err := ParseURL(in); err == nil {
			t.Errorf("ParseURL(%q) = %+v, want an error", in, loc)
		}
	}
}

func TestParseURLNeverEchoesCredentials(t *testing.T) {
	for _, in := range []string{
		"s3:http://AKIDEXAMPLE:supersecret@host:9000/bucket",
		"s3:https://AKIDEXAMPLE:supersecret%zz@host/bucket", // also malformed
		"s3:http://supersecret@host/bucket",
	} {
		_, err := ParseURL(in)
		if err == nil {
			t.Fatalf("ParseURL accepted credentials in %q", in)
		}
		if strings.Contains(err.Error(), "supersecret") {
			t.Fatalf("error repeats the secret: %v", err)
		}
	}
}

func TestLocationHasNoSecrets(t *testing.T) {
	secret := "wJalrXUtnFEMI-not-a-real-secret"
	loc, err := ParseURL("s3:http://127.0.0.1:9/bucket/prefix")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), loc, Options{Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", secret, "token-secret")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := s.Location(); got != "s3:http://127.0.0.1:9/bucket/prefix" || strings.Contains(got, secret) {
		t.Fatalf("Location() = %q", got)
	}
}

// isolateAWSConfig points the SDK's default chain at nothing, so the tests
// below do not depend on the machine's AWS setup.
func isolateAWSConfig(t *testing.T) {
	t.Helper()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

func TestOpenWithoutCredentials(t *testing.T) {
	isolateAWSConfig(t)
	_, err := Open(context.Background(), Location{Endpoint: "http://127.0.0.1:9", Bucket: "bucket"}, Options{})
	if err == nil || !blob.IsPermanent(err) {
		t.Fatalf("open without credentials: %v, want a permanent error", err)
	}
	for _, want := range []string{"AWS_ACCESS_KEY_ID", "bucket \"bucket\"", "http://127.0.0.1:9"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("hint does not mention %s: %v", want, err)
		}
	}
}

func TestOpenAWSNeedsRegion(t *testing.T) {
	isolateAWSConfig(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret-from-env")
	_, err := Open(context.Background(), Location{Bucket: "bucket"}, Options{})
	if err == nil || !blob.IsPermanent(err) || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Fatalf("open s3://bucket without a region: %v, want a permanent error naming AWS_REGION", err)
	}
	t.Setenv("AWS_REGION", "eu-central-1")
	s, err := Open(context.Background(), Location{Bucket: "bucket"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.region != "eu-central-1" || s.credSource != "EnvConfigCredentials" {
		t.Fatalf("region %q, credentials from %q", s.region, s.credSource)
	}
	if h := s.hint("x"); !strings.Contains(h, "AWS S3 region eu-central-1") || strings.Contains(h, "secret-from-env") {
		t.Fatalf("hint %q", h)
	}
}

func TestInvalidNames(t *testing.T) {
	s, err := Open(context.Background(), Location{Endpoint: "http://127.0.0.1:9", Bucket: "bucket"},
		Options{Credentials: credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "x", "")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, name := range []string{"", "/abs", "dir/", "a//b", "a/../b", "./a"} {
		if err := s.Put(context.Background(), name, strings.NewReader("")); err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Errorf("put %q: %v, want an invalid-name error", name, err)
		}
	}
}

// expiringProvider hands out credentials that expire at once, then fails:
// an SSO session or assumed role that can no longer be refreshed.
type expiringProvider struct{ calls *int }

func (p expiringProvider) Retrieve(context.Context) (aws.Credentials, error) {
	*p.calls++
	if *p.calls > 1 {
		return aws.Credentials{}, errors.New("token has expired and refresh failed")
	}
	return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "s", Source: "SSOProvider",
		CanExpire: true, Expires: time.Now().Add(-time.Second)}, nil
}

func TestCredentialRefreshFailureIsPermanent(t *testing.T) {
	var calls int
	s, err := Open(context.Background(), Location{Endpoint: "http://127.0.0.1:9", Bucket: "bucket"},
		Options{Credentials: expiringProvider{&calls}, MaxAttempts: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Stat(context.Background(), "config")
	if !blob.IsPermanent(err) || errors.Is(err, blob.ErrNotFound) || !strings.Contains(err.Error(), "SSOProvider") {
		t.Fatalf("stat with credentials that cannot be refreshed: %v, want a permanent error naming the source", err)
	}
	if calls != 2 {
		t.Fatalf("credentials retrieved %d times, want 2 (no retries of a permanent failure)", calls)
	}
}

func TestPartSizeFor(t *testing.T) {
	for _, size := range []int64{1, 16 << 20, 100 << 30, 156<<30 + 1, 1 << 40, 5 << 40} {
		ps := partSizeFor(size, DefaultPartSize)
		parts := (size + ps - 1) / ps
		if parts > maxParts || ps < DefaultPartSize || ps%(1<<20) != 0 {
			t.Errorf("size %d: part size %d gives %d parts", size, ps, parts)
		}
		if size <= DefaultPartSize*maxParts && ps != DefaultPartSize {
			t.Errorf("size %d: part size raised to %d without need", size, ps)
		}
	}
}
