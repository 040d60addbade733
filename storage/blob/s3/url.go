package s3

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Location says where a repository lives in S3: which endpoint, bucket and
// key prefix. It never holds credentials.
type Location struct {
	// Endpoint is the base URL of an S3-compatible service, such as
	// "http://127.0.0.1:9000", addressed path-style. Empty means AWS S3, with
	// the endpoint and addressing chosen by the SDK from the region.
	Endpoint string
	// Bucket is the bucket name.
	Bucket string
	// Prefix is the key prefix under which every object is stored, without
	// leading or trailing slash; empty means the bucket root.
	Prefix string
}

// String returns the repository URL in the form ParseURL accepts.
func (l Location) String() string {
	var b strings.Builder
	if l.Endpoint == "" {
		b.WriteString("s3://")
	} else {
		b.WriteString("s3:")
		b.WriteString(l.Endpoint)
		b.WriteString("/")
	}
	b.WriteString(l.Bucket)
	if l.Prefix != "" {
		b.WriteString("/")
		b.WriteString(l.Prefix)
	}
	return b.String()
}

// ParseURL parses a repository URL:
//
//	s3:http://HOST[:PORT]/BUCKET[/PREFIX]    any S3-compatible endpoint, path-style
//	s3:https://HOST[:PORT]/BUCKET[/PREFIX]
//	s3://BUCKET[/PREFIX]                     AWS S3, region from the usual configuration
//
// Credentials in the URL are refused (and not repeated in the error): they
// would end up in shell history, logs and the process list. Use the SDK's
// default chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, instance roles) instead.
func ParseURL(s string) (Location, error) {
	switch {
	case strings.HasPrefix(s, "s3://"):
		bucket, prefix, err := splitPath(strings.TrimPrefix(s, "s3://"))
		if err != nil {
			return Location{}, err
		}
		return Location{Bucket: bucket, Prefix: prefix}, nil
	case strings.HasPrefix(s, "s3:http://"), strings.HasPrefix(s, "s3:https://"):
		return parseEndpointURL(strings.TrimPrefix(s, "s3:"))
	default:
		return Location{}, errors.New("parse s3 url: want s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]")
	}
}

func parseEndpointURL(raw string) (Location, error) {
	// Check for user info before url.Parse so that no error below can echo a
	// secret: url.Parse errors quote the whole input.
	rest := raw[strings.Index(raw, "://")+3:]
	if host, _, _ := strings.Cut(rest, "/"); strings.Contains(host, "@") {
		return Location{}, errors.New("parse s3 url: credentials in the URL are not accepted; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, fmt.Errorf("parse s3 url: %w", err)
	}
	if u.Host == "" {
		return Location{}, fmt.Errorf("parse s3 url %q: missing host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return Location{}, fmt.Errorf("parse s3 url %q: query and fragment are not supported", raw)
	}
	bucket, prefix, err := splitPath(strings.TrimPrefix(u.Path, "/"))
	if err != nil {
		return Location{}, err
	}
	return Location{Endpoint: u.Scheme + "://" + u.Host, Bucket: bucket, Prefix: prefix}, nil
}

// splitPath splits "BUCKET[/PREFIX]" and validates both parts.
func splitPath(p string) (bucket, prefix string, err error) {
	bucket, prefix, _ = strings.Cut(p, "/")
	if err := validBucket(bucket); err != nil {
		return "", "", err
	}
	prefix = strings.TrimSuffix(prefix, "/")
	if prefix != "" {
		for _, part := range strings.Split(prefix, "/") {
			if part == "" || part == "." || part == ".." {
				return "", "", fmt.Errorf("parse s3 url: invalid prefix %q", prefix)
			}
		}
	}
	return bucket, prefix, nil
}

// validBucket applies the S3 bucket naming rules (3–63 characters of
// lowercase letters, digits, dots and hyphens, starting and ending with a
// letter or digit). Rejecting bad names here gives a clearer message than the
// server's InvalidBucketName, and keeps path-style URLs unambiguous.
func validBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("parse s3 url: bucket name %q must be 3 to 63 characters", b)
	}
	for i, c := range b {
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && c != '-' && c != '.' || (i == 0 || i == len(b)-1) && !alnum {
			return fmt.Errorf("parse s3 url: invalid bucket name %q (lowercase letters, digits, '.' and '-')", b)
		}
	}
	return nil
}
