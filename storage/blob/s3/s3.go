// Package s3 is a blob.Store on any S3-compatible endpoint (AWS S3, MinIO,
// versitygw, Backblaze B2, Cloudflare R2, Wasabi), built on aws-sdk-go-v2.
//
// The SDK is configured on purpose for non-AWS endpoints rather than left at
// its defaults; docs/storage.md lists each setting, why it is set, and which
// servers it was tested against. In short:
//
//   - path-style addressing for explicit endpoints;
//   - checksums calculated and validated only "when required", because the
//     SDK's newer default (CRC32 trailers on every upload) is rejected by
//     several S3-compatible servers;
//   - an explicit retryer (capped exponential backoff with jitter, no
//     client-side retry quota) that also retries connection resets,
//     timeouts and truncated bodies;
//   - an explicit HTTP transport with dial, TLS, response-header and idle
//     timeouts and enough idle connections for parallel transfers;
//   - a single PutObject up to Options.MultipartThreshold, multipart above;
//   - ranged reads that resume where they stopped when a connection breaks
//     mid-body, pinned to the object's ETag.
//
// Provider errors are normalised at this edge: a missing object wraps
// blob.ErrNotFound; a missing bucket, refused credentials and denied access
// are blob.Permanent with a one-line hint naming the bucket, the endpoint and
// where the credentials came from (never the credentials themselves).
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/vigilops/vigil/storage/blob"
)

// Defaults for the zero values of Options.
const (
	DefaultConnections           = 8
	DefaultPartSize              = 16 << 20
	DefaultMultipartThreshold    = 32 << 20
	DefaultMaxAttempts           = 8
	DefaultMaxBackoff            = 10 * time.Second
	DefaultDialTimeout           = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout           = 30 * time.Second
)

// minPartSize is S3's smallest allowed part (all but the last).
const minPartSize = 5 << 20

// maxParts is S3's largest number of parts in one upload.
const maxParts = 10000

// Options tune a Store. The zero value is usable: every zero field takes the
// matching Default value.
type Options struct {
	// Logger receives warnings (insecure TLS, failed abort of a multipart
	// upload) and debug records of retries. Nil discards.
	Logger *slog.Logger
	// Credentials overrides the SDK's default chain (environment, shared
	// config and credentials files, SSO, web identity, container and instance
	// roles). Leave nil in production; tests use static keys.
	Credentials aws.CredentialsProvider
	// Region overrides the configured region. For an explicit endpoint with no
	// region configured anywhere, "us-east-1" is used, which MinIO and
	// versitygw expect by default.
	Region string
	// Connections bounds the HTTP requests in flight at once from this Store,
	// across all callers. A Get holds one until its reader is closed.
	Connections int
	// PartSize is the size of each multipart part (at least 5 MiB, S3's
	// minimum; raised automatically to stay within 10,000 parts).
	PartSize int64
	// MultipartThreshold: objects up to this size go in one PutObject,
	// larger ones as a multipart upload.
	MultipartThreshold int64
	// MaxAttempts is how often one request is tried before its error is
	// returned (1 disables retries).
	MaxAttempts int
	// MaxBackoff caps the delay between two attempts.
	MaxBackoff time.Duration
	// DialTimeout bounds TCP connect and the TLS handshake.
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response once a request was
	// sent.
	ResponseHeaderTimeout time.Duration
	// IdleTimeout drops a connection on which no byte moved in either
	// direction for this long, so a stalled server cannot hang a transfer.
	IdleTimeout time.Duration
	// CAFile is a PEM file of extra root certificates for a private endpoint.
	CAFile string
	// InsecureTLS disables certificate verification. It logs a warning.
	InsecureTLS bool
	// PayloadHash says which uploads carry the body's SHA-256 in their
	// signature (see PayloadHashAuto); "" is PayloadHashAuto.
	PayloadHash string
}

// Values of Options.PayloadHash. SigV4 can sign a hash of the body, which
// protects it on a path nobody else should touch; it costs a SHA-256 pass
// over every byte on the client and another on servers that verify it. The
// SDK already leaves it out over TLS (TLS protects the body), and vigil's
// own AES-GCM authenticates every object when it is read, so a body changed
// in transit is found by the next check or restore either way; the hash
// only catches it at upload time.
const (
	// PayloadHashAuto hashes bodies sent over plain HTTP to another host; a
	// loopback connection never leaves the machine, TLS protects the rest.
	PayloadHashAuto = "auto"
	// PayloadHashHTTP hashes every body sent over plain HTTP, also to a
	// loopback address (the SDK's own behaviour).
	PayloadHashHTTP = "http"
	// PayloadHashNever hashes no body (UNSIGNED-PAYLOAD), for a plain-HTTP
	// endpoint on a network the admin trusts.
	PayloadHashNever = "never"
)

// unsignedPayload says whether uploads to endpoint skip the body hash.
func unsignedPayload(mode, endpoint string) (bool, error) {
	switch mode {
	case "", PayloadHashAuto:
		u, err := url.Parse(endpoint)
		if err != nil || u.Scheme != "http" {
			return false, nil // TLS: the SDK leaves the hash out already
		}
		h := u.Hostname()
		if h == "localhost" {
			return true, nil
		}
		ip := net.ParseIP(h)
		return ip != nil && ip.IsLoopback(), nil
	case PayloadHashHTTP:
		return false, nil
	case PayloadHashNever:
		return true, nil
	}
	return false, fmt.Errorf("payload hash %q: want auto, http or never", mode)
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	setDefault(&o.Connections, DefaultConnections)
	setDefault(&o.PartSize, DefaultPartSize)
	if o.PartSize < minPartSize {
		o.PartSize = minPartSize
	}
	setDefault(&o.MultipartThreshold, DefaultMultipartThreshold)
	setDefault(&o.MaxAttempts, DefaultMaxAttempts)
	setDefault(&o.MaxBackoff, DefaultMaxBackoff)
	setDefault(&o.DialTimeout, DefaultDialTimeout)
	setDefault(&o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	setDefault(&o.IdleTimeout, DefaultIdleTimeout)
	return o
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Store is a blob.Store in one bucket under an optional key prefix.
type Store struct {
	client     *awss3.Client
	httpClient *http.Client
	loc        Location
	opts       Options
	log        *slog.Logger
	region     string
	// credSource names where the credentials came from (for hints only).
	credSource string
	// slots bounds requests in flight (Options.Connections).
	slots chan struct{}
	// unsigned leaves the body hash out of upload signatures.
	unsigned bool
	// bucketSeen is set once any request on the bucket succeeded; until then
	// a bare 404 from HEAD could mean a missing bucket rather than a missing
	// object, and Stat checks which.
	bucketSeen atomic.Bool
}

var _ blob.Store = (*Store)(nil)

// Open prepares a Store for loc. It resolves the region and retrieves the
// credentials (failing early, with a hint, when there are none) but does not
// contact the endpoint; EnsureBucket does.
func Open(ctx context.Context, loc Location, opts Options) (*Store, error) {
	if err := validBucket(loc.Bucket); err != nil {
		return nil, fmt.Errorf("s3 open: %w", err)
	}
	unsigned, err := unsignedPayload(opts.PayloadHash, loc.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("s3 open: %w", err)
	}
	opts = opts.withDefaults()
	log := opts.Logger
	transportOpts, err := configureTransport(opts, log)
	if err != nil {
		return nil, fmt.Errorf("s3 open: %w", err)
	}
	// Read timeout 0: the SDK's own inactivity timeout only watches reads and
	// so could cut a large upload that is still progressing; idleConn (see
	// transport.go) watches both directions.
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(transportOpts).WithReadTimeout(0)
	load := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer { return newRetryer(opts, log) }),
		config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
		config.WithLogger(sdkLogger{log}),
	}
	if opts.Region != "" {
		load = append(load, config.WithRegion(opts.Region))
	}
	if opts.Credentials != nil {
		load = append(load, config.WithCredentialsProvider(opts.Credentials))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, blob.Permanent(fmt.Errorf("s3 open: load AWS configuration: %w", err),
			"check AWS_PROFILE, AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE")
	}
	if cfg.Region == "" {
		if loc.Endpoint == "" {
			return nil, blob.Permanent(errors.New("s3 open: no AWS region configured"),
				"set AWS_REGION or region in the AWS profile for "+loc.String())
		}
		cfg.Region = "us-east-1"
	}
	// Freeze the client, now that the CA bundle from the AWS configuration
	// is in: the S3 client would otherwise apply AWS_DEFAULTS_MODE timeouts
	// over the ones chosen here.
	buildable, ok := cfg.HTTPClient.(*awshttp.BuildableClient)
	if !ok {
		return nil, fmt.Errorf("s3 open: unexpected HTTP client %T", cfg.HTTPClient)
	}
	frozen, ok := buildable.Freeze().(*http.Client)
	if !ok {
		return nil, fmt.Errorf("s3 open: unexpected frozen HTTP client")
	}
	cfg.HTTPClient = frozen
	s := &Store{
		unsigned:   unsigned,
		httpClient: frozen,
		loc:        loc,
		opts:       opts,
		log:        log,
		region:     cfg.Region,
		slots:      make(chan struct{}, opts.Connections),
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		frozen.CloseIdleConnections()
		return nil, blob.Permanent(fmt.Errorf("s3 open: retrieve credentials: %w", err),
			"no usable credentials for "+s.where()+": set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an instance role")
	}
	s.credSource = creds.Source
	if s.credSource == "" {
		s.credSource = "the SDK default chain"
	}
	// Mark later credential failures (an expired SSO session, a role that can
	// no longer be assumed) so they are reported as permanent.
	cfg.Credentials = credentialsProvider{cfg.Credentials}
	s.client = awss3.NewFromConfig(cfg, func(o *awss3.Options) {
		if loc.Endpoint != "" {
			o.BaseEndpoint = aws.String(loc.Endpoint)
			o.UsePathStyle = true
		}
		// Set again on the client: AWS_REQUEST_CHECKSUM_CALCULATION in the
		// environment must not silently switch the new checksums back on.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.DisableLogOutputChecksumValidationSkipped = true
		// No "Expect: 100-continue": it costs a round trip per upload and some
		// proxies and S3 clones handle it badly.
		o.ContinueHeaderThresholdBytes = -1
	})
	return s, nil
}

// Location implements blob.Store. It holds no secrets.
func (s *Store) Location() string { return s.loc.String() }

// Close releases idle connections.
func (s *Store) Close() error {
	s.httpClient.CloseIdleConnections()
	return nil
}

func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) release() { <-s.slots }

// key maps an object name to its S3 key.
func (s *Store) key(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") {
		return "", fmt.Errorf("s3: invalid object name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("s3: invalid object name %q", name)
		}
	}
	return s.keyPrefix() + name, nil
}

// keyPrefix is what every key of this store starts with: "" or "PREFIX/".
func (s *Store) keyPrefix() string {
	if s.loc.Prefix == "" {
		return ""
	}
	return s.loc.Prefix + "/"
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, name string, p blob.Payload) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3 put %s: %w", name, err)
	}
	if _, err := p.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("s3 put %s: rewind payload: %w", name, err)
	}
	size := p.Size()
	if size > s.opts.MultipartThreshold {
		return s.putMultipart(ctx, key, name, p, size)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("s3 put %s: %w", name, err)
	}
	defer s.release()
	// The payload is an io.ReadSeeker, so the SDK can hash it for the
	// signature and rewind it for each retry.
	_, err = s.client.PutObject(ctx, &awss3.PutObjectInput{
		Bucket:        aws.String(s.loc.Bucket),
		Key:           aws.String(key),
		Body:          p,
		ContentLength: aws.Int64(size),
	}, s.uploadOptions)
	if err != nil {
		return s.wrap(ctx, "put", name, err)
	}
	s.bucketSeen.Store(true)
	return nil
}

// uploadOptions applies Options.PayloadHash to one upload request.
func (s *Store) uploadOptions(o *awss3.Options) {
	if s.unsigned {
		o.APIOptions = append(o.APIOptions, v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware)
	}
}

// Get implements blob.Store. The returned reader holds one of the Store's
// connection slots until it is closed.
func (s *Store) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("s3 get %s: negative offset or length", name)
	}
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("s3 get %s: %w", name, err)
	}
	r := &reader{s: s, ctx: ctx, key: key, name: name, pos: offset, end: -1}
	if length > 0 {
		r.end = offset + length - 1
	}
	if err := r.open(); err != nil {
		s.release()
		if isInvalidRange(err) {
			// Asking for bytes past the end: the contract says return what
			// exists, which is nothing, if the object exists at all.
			if _, serr := s.Stat(ctx, name); serr != nil {
				return nil, serr
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, s.wrap(ctx, "get", name, err)
	}
	s.bucketSeen.Store(true)
	return r, nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	key, err := s.key(name)
	if err != nil {
		return blob.Info{}, err
	}
	if err := s.acquire(ctx); err != nil {
		return blob.Info{}, fmt.Errorf("s3 stat %s: %w", name, err)
	}
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{
		Bucket: aws.String(s.loc.Bucket),
		Key:    aws.String(key),
	})
	s.release()
	if err != nil {
		err = s.wrap(ctx, "stat", name, err)
		if errors.Is(err, blob.ErrNotFound) && !s.bucketSeen.Load() {
			// HEAD responses have no body, so a missing bucket also looks
			// like a plain 404; find out which before saying "no object".
			if berr := s.checkBucket(ctx, "stat "+name); berr != nil {
				return blob.Info{}, berr
			}
		}
		return blob.Info{}, err
	}
	s.bucketSeen.Store(true)
	return blob.Info{
		Name:    name,
		Size:    aws.ToInt64(out.ContentLength),
		ModTime: aws.ToTime(out.LastModified),
	}, nil
}

// List implements blob.Store. fn runs without holding a connection slot, so
// it may call other methods of the Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	if strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("s3 list: invalid prefix %q", prefix)
	}
	base := s.keyPrefix()
	pages := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{
		Bucket: aws.String(s.loc.Bucket),
		Prefix: aws.String(base + prefix),
	})
	for pages.HasMorePages() {
		if err := s.acquire(ctx); err != nil {
			return fmt.Errorf("s3 list %s: %w", prefix, err)
		}
		page, err := pages.NextPage(ctx)
		s.release()
		if err != nil {
			return s.wrap(ctx, "list", prefix, err)
		}
		s.bucketSeen.Store(true)
		for _, obj := range page.Contents {
			name := strings.TrimPrefix(aws.ToString(obj.Key), base)
			// Keys ending in "/" are folder markers made by other tools.
			if name == "" || strings.HasSuffix(name, "/") {
				continue
			}
			info := blob.Info{Name: name, Size: aws.ToInt64(obj.Size), ModTime: aws.ToTime(obj.LastModified)}
			if err := fn(info); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete implements blob.Store. S3 answers 204 for a missing key; a server
// that answers 404 instead is treated the same, keeping Delete idempotent.
func (s *Store) Delete(ctx context.Context, name string) error {
	key, err := s.key(name)
	if err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("s3 delete %s: %w", name, err)
	}
	defer s.release()
	_, err = s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{
		Bucket: aws.String(s.loc.Bucket),
		Key:    aws.String(key),
	})
	if err != nil {
		err = s.wrap(ctx, "delete", name, err)
		if errors.Is(err, blob.ErrNotFound) {
			return nil
		}
		return err
	}
	s.bucketSeen.Store(true)
	return nil
}

// EnsureBucket creates the bucket if it does not exist and reports whether it
// did, so `vigil init` can say so.
func (s *Store) EnsureBucket(ctx context.Context) (created bool, err error) {
	if err := s.acquire(ctx); err != nil {
		return false, fmt.Errorf("s3 ensure bucket: %w", err)
	}
	defer s.release()
	_, err = s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: aws.String(s.loc.Bucket)})
	if err == nil {
		s.bucketSeen.Store(true)
		return false, nil
	}
	if httpStatus(err) != http.StatusNotFound {
		return false, s.wrap(ctx, "check bucket", "", err)
	}
	in := &awss3.CreateBucketInput{Bucket: aws.String(s.loc.Bucket)}
	// AWS wants the region spelled out outside us-east-1; other servers may
	// reject a constraint they do not know, so send none to them.
	if s.loc.Endpoint == "" && s.region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(s.region),
		}
	}
	if _, err := s.client.CreateBucket(ctx, in); err != nil {
		var owned *types.BucketAlreadyOwnedByYou
		if errors.As(err, &owned) || apiCode(err) == "BucketAlreadyOwnedByYou" {
			// Created concurrently by another host of ours: fine.
			s.bucketSeen.Store(true)
			return false, nil
		}
		if apiCode(err) == "BucketAlreadyExists" {
			return false, blob.Permanent(fmt.Errorf("s3 create bucket: %w", err),
				fmt.Sprintf("bucket %q at %s belongs to another account; choose another bucket name", s.loc.Bucket, s.endpointName()))
		}
		return false, s.wrap(ctx, "create bucket", "", err)
	}
	s.bucketSeen.Store(true)
	s.log.Info("s3: created bucket", "bucket", s.loc.Bucket, "endpoint", s.endpointName())
	return true, nil
}

// checkBucket tells a missing bucket (or refused credentials, which some
// servers report as 404 too) from a missing object after a bare 404 from
// HEAD. It lists at most one key, because a GET carries the error code that
// HEAD cannot. It returns nil when the bucket is fine or when it cannot tell.
func (s *Store) checkBucket(ctx context.Context, op string) error {
	if err := s.acquire(ctx); err != nil {
		return nil
	}
	defer s.release()
	_, err := s.client.ListObjectsV2(ctx, &awss3.ListObjectsV2Input{
		Bucket:  aws.String(s.loc.Bucket),
		Prefix:  aws.String(s.keyPrefix()),
		MaxKeys: aws.Int32(1),
	})
	if err == nil {
		s.bucketSeen.Store(true)
		return nil
	}
	if code := apiCode(err); code == "NoSuchBucket" || credentialCodes[code] {
		return s.wrap(ctx, op, "", err)
	}
	return nil
}
