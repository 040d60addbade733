package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vigilops/vigil/storage/blob"
	"github.com/vigilops/vigil/storage/blob/blobtest"
	"github.com/vigilops/vigil/storage/blob/s3/s3test"
)

// The integration tests run against the real servers that
// `scripts/s3-servers.sh start ENVFILE` starts, found through
// VIGIL_TEST_{MINIO,VERSITYGW}_{ENDPOINT,ACCESS_KEY,SECRET_KEY} (see
// s3test.ForEachServer: skipped when missing, failed under CI=true).

type testServer = s3test.Server

var forEachServer = s3test.ForEachServer

func creds(srv testServer) aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, "")
}

// testOptions are quick to give up, so failing tests fail fast.
func options(srv testServer) Options {
	return Options{
		Credentials:           creds(srv),
		DialTimeout:           2 * time.Second,
		ResponseHeaderTimeout: 20 * time.Second,
		IdleTimeout:           20 * time.Second,
		MaxBackoff:            500 * time.Millisecond,
	}
}

func openStore(t *testing.T, loc Location, opts Options) *Store {
	t.Helper()
	s, err := Open(context.Background(), loc, opts)
	if err != nil {
		t.Fatalf("open %s: %v", loc, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// newBucket creates a fresh bucket on srv and removes it, with everything in
// it, when the test ends.
func newBucket(t *testing.T, srv testServer) string {
	t.Helper()
	bucket := "vigil-test-" + randomHex(t, 6)
	s := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket}, options(srv))
	created, err := s.EnsureBucket(context.Background())
	if err != nil {
		t.Fatalf("create bucket: %v", err)
	}
	if !created {
		t.Fatalf("EnsureBucket on a new name reported created=false")
	}
	t.Cleanup(func() { removeBucket(t, s) })
	return bucket
}

func removeBucket(t testing.TB, s *Store) {
	ctx := context.Background()
	uploads, err := s.client.ListMultipartUploads(ctx, &awss3.ListMultipartUploadsInput{Bucket: aws.String(s.loc.Bucket)})
	if err == nil {
		for _, u := range uploads.Uploads {
			_, _ = s.client.AbortMultipartUpload(ctx, &awss3.AbortMultipartUploadInput{Bucket: aws.String(s.loc.Bucket), Key: u.Key, UploadId: u.UploadId})
		}
	}
	if err := s.List(ctx, "", func(i blob.Info) error { return s.Delete(ctx, i.Name) }); err != nil {
		t.Errorf("empty bucket %s: %v", s.loc.Bucket, err)
	}
	if _, err := s.client.DeleteBucket(ctx, &awss3.DeleteBucketInput{Bucket: aws.String(s.loc.Bucket)}); err != nil {
		t.Errorf("delete bucket %s: %v", s.loc.Bucket, err)
	}
}

func TestContract(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		bucket := newBucket(t, srv)
		var n atomic.Int32
		blobtest.Run(t, func(t *testing.T) blob.Store {
			// Each store gets its own prefix: empty, and it proves that
			// prefixes keep stores apart.
			return openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket, Prefix: fmt.Sprintf("repo/c%d", n.Add(1))}, options(srv))
		})
	})
}

func TestContractAtBucketRoot(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		blobtest.Run(t, func(t *testing.T) blob.Store {
			return openStore(t, Location{Endpoint: srv.Endpoint, Bucket: newBucket(t, srv)}, options(srv))
		})
	})
}

func TestEnsureBucket(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		loc := Location{Endpoint: srv.Endpoint, Bucket: "vigil-test-" + randomHex(t, 6)}
		s := openStore(t, loc, options(srv))
		if _, err := s.Stat(ctx, "config"); !blob.IsPermanent(err) || errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat before the bucket exists: %v, want a permanent missing-bucket error", err)
		}
		created, err := s.EnsureBucket(ctx)
		if err != nil || !created {
			t.Fatalf("first EnsureBucket: created=%v err=%v", created, err)
		}
		t.Cleanup(func() { removeBucket(t, s) })
		created, err = s.EnsureBucket(ctx)
		if err != nil || created {
			t.Fatalf("second EnsureBucket: created=%v err=%v, want false, nil", created, err)
		}
		if _, err := s.Stat(ctx, "config"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat in the new bucket: %v, want ErrNotFound", err)
		}
	})
}

// TestRequestsAsConfigured checks on the wire that the SDK settings are in
// effect: path-style URLs, no flexible checksums, no Expect header, and a
// signed payload hash, so the server verifies what it stores.
func TestRequestsAsConfigured(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		// The proxy is on 127.0.0.1, so "auto" leaves the body hash out;
		// "http" keeps it. Both servers must accept either, for a single
		// PUT and for multipart parts.
		for _, mode := range []string{PayloadHashAuto, PayloadHashHTTP, PayloadHashNever} {
			t.Run(mode, func(t *testing.T) {
				ctx := context.Background()
				bucket := newBucket(t, srv)
				p := s3test.NewFaultProxy(t, srv.Endpoint, 0)
				opts := options(srv)
				opts.PayloadHash = mode
				opts.PartSize = minPartSize
				opts.MultipartThreshold = 6 << 20
				s := openStore(t, Location{Endpoint: p.URL(), Bucket: bucket, Prefix: "pre"}, opts)
				small, big := randomBytes(t, 3<<20), randomBytes(t, 11<<20)
				for name, data := range map[string][]byte{"data/00/small": small, "data/00/big": big} {
					if err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
						t.Fatal(err)
					}
					got, err := blob.ReadAll(ctx, s, name)
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("read back %s: %v (equal %v)", name, err, bytes.Equal(got, data))
					}
				}
				hexHash := regexp.MustCompile(`^[0-9a-f]{64}$`)
				var puts, parts, gets int
				for _, r := range p.Requests() {
					if !strings.HasPrefix(r.URL.Path, "/"+bucket) {
						t.Errorf("%s %s: not path-style", r.Method, r.URL)
					}
					for k := range r.Header {
						if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-amz-checksum") || lk == "x-amz-sdk-checksum-algorithm" || lk == "x-amz-trailer" {
							t.Errorf("%s %s sends %s: checksums must be calculated only when required", r.Method, r.URL, k)
						}
					}
					if r.Header.Get("Expect") != "" {
						t.Errorf("%s %s sends Expect: %s", r.Method, r.URL, r.Header.Get("Expect"))
					}
					switch r.Method {
					case "PUT":
						if r.URL.Query().Has("partNumber") {
							parts++
						} else {
							puts++
						}
						h := r.Header.Get("X-Amz-Content-Sha256")
						if mode == PayloadHashHTTP && !hexHash.MatchString(h) {
							t.Errorf("%s: PUT payload hash %q, want a signed SHA-256", mode, h)
						}
						if mode != PayloadHashHTTP && h != "UNSIGNED-PAYLOAD" {
							t.Errorf("%s: PUT payload hash %q, want UNSIGNED-PAYLOAD on loopback", mode, h)
						}
					case "GET":
						gets++
					}
				}
				if puts != 1 || parts != 3 || gets < 2 {
					t.Fatalf("saw %d PUT, %d part uploads and %d GET requests, want 1, 3 and at least 2", puts, parts, gets)
				}
			})
		}
	})
}

func TestUnsignedPayloadChoice(t *testing.T) {
	for _, c := range []struct {
		mode, endpoint string
		want           bool
	}{
		{"", "http://127.0.0.1:9000", true},
		{PayloadHashAuto, "http://[::1]:9000", true},
		{PayloadHashAuto, "http://localhost:9000", true},
		{PayloadHashAuto, "http://10.0.0.5:9000", false},
		{PayloadHashAuto, "http://minio.library.lan:9000", false},
		{PayloadHashAuto, "https://10.0.0.5:9000", false}, // the SDK itself sends UNSIGNED-PAYLOAD over TLS
		{PayloadHashAuto, "", false},                      // AWS, over TLS
		{PayloadHashHTTP, "http://127.0.0.1:9000", false},
		{PayloadHashNever, "http://10.0.0.5:9000", true},
	} {
		got, err := unsignedPayload(c.mode, c.endpoint)
		if err != nil || got != c.want {
			t.Errorf("unsignedPayload(%q, %q) = %v, %v; want %v", c.mode, c.endpoint, got, err, c.want)
		}
	}
	if _, err := unsignedPayload("sometimes", "http://127.0.0.1"); err == nil || !strings.Contains(err.Error(), "auto, http or never") {
		t.Fatalf("a bad mode gave %v", err)
	}
}

// hideReaderAt hides io.ReaderAt so Put takes the serial multipart path.
type hideReaderAt struct{ *bytes.Reader }

func TestMultipart(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		p := s3test.NewFaultProxy(t, srv.Endpoint, 0)
		opts := options(srv)
		opts.PartSize = minPartSize
		opts.MultipartThreshold = minPartSize + 1
		s := openStore(t, Location{Endpoint: p.URL(), Bucket: bucket, Prefix: "mp"}, opts)
		data := randomBytes(t, 2*minPartSize+12345) // three parts, the last short

		payloads := map[string]blob.Payload{
			"data/parallel": bytes.NewReader(data),
			"data/serial":   hideReaderAt{bytes.NewReader(data)},
		}
		for name, pl := range payloads {
			if err := s.Put(ctx, name, pl); err != nil {
				t.Fatalf("put %s: %v", name, err)
			}
			got, err := blob.ReadAll(ctx, s, name)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: read back %d bytes (err %v), content differs", name, len(got), err)
			}
			// A range across the first part boundary.
			rc, err := s.Get(ctx, name, minPartSize-10, 20)
			if err != nil {
				t.Fatal(err)
			}
			part, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(part, data[minPartSize-10:minPartSize+10]) {
				t.Fatalf("%s: range across parts differs", name)
			}
		}
		var creates, parts int
		for _, r := range p.Requests() {
			q := r.URL.Query()
			if r.Method == "POST" && q.Has("uploads") {
				creates++
			}
			if r.Method == "PUT" && q.Has("partNumber") {
				parts++
			}
		}
		if creates != 2 || parts != 6 {
			t.Fatalf("saw %d multipart uploads with %d parts, want 2 and 6", creates, parts)
		}
		// At the threshold, a single PutObject.
		before := len(p.Requests())
		if err := s.Put(ctx, "data/single", bytes.NewReader(data[:opts.MultipartThreshold])); err != nil {
			t.Fatal(err)
		}
		if n := len(p.Requests()) - before; n != 1 {
			t.Fatalf("object at the threshold took %d requests, want 1 PutObject", n)
		}
	})
}

// cancelAt cancels the Put's context once a read reaches offset at.
type cancelAt struct {
	*bytes.Reader
	at     int64
	cancel context.CancelFunc
}

func (c cancelAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= c.at {
		c.cancel()
	}
	return c.Reader.ReadAt(p, off)
}

func TestMultipartCancelLeavesNothing(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		bucket := newBucket(t, srv)
		opts := options(srv)
		opts.PartSize = minPartSize
		opts.MultipartThreshold = minPartSize
		opts.Connections = 1 // parts go one by one, so the cancel lands mid-upload
		s := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket}, opts)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		data := randomBytes(t, 3*minPartSize)
		err := s.Put(ctx, "data/cancelled", cancelAt{bytes.NewReader(data), 2 * minPartSize, cancel})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled multipart put: %v, want context.Canceled", err)
		}
		if _, err := s.Stat(context.Background(), "data/cancelled"); !errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("cancelled put left an object: %v", err)
		}
		out, err := s.client.ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Uploads) != 0 {
			t.Fatalf("%d multipart uploads left behind, want them aborted", len(out.Uploads))
		}
	})
}

func TestConnectionsBound(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		p := s3test.NewFaultProxy(t, srv.Endpoint, 0)
		opts := options(srv)
		opts.Connections = 3
		s := openStore(t, Location{Endpoint: p.URL(), Bucket: bucket}, opts)
		var wg sync.WaitGroup
		errs := make(chan error, 24)
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.Put(ctx, fmt.Sprintf("data/%02d", i), bytes.NewReader(make([]byte, 256<<10)))
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, _, maxIn := p.Stats(); maxIn > 3 || maxIn < 2 {
			t.Fatalf("at most %d requests in flight, want 2..3 with Connections=3", maxIn)
		}
	})
}

// TestFaultInjection puts, gets and lists many objects through a proxy that
// fails 10 % of all requests: 500s, 503s, resets mid-body and stalls past
// the client timeouts. Every byte must come back exact.
func TestFaultInjection(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		p := s3test.NewFaultProxy(t, srv.Endpoint, 0.10, s3test.AllFaults...)
		opts := options(srv)
		opts.ResponseHeaderTimeout = 2 * time.Second
		opts.IdleTimeout = time.Second
		opts.MaxBackoff = 200 * time.Millisecond
		opts.PartSize = minPartSize
		opts.MultipartThreshold = minPartSize
		var logs syncBuffer
		opts.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		s := openStore(t, Location{Endpoint: p.URL(), Bucket: bucket, Prefix: "faulty"}, opts)

		objects := map[string][]byte{}
		for i := range 150 {
			objects[fmt.Sprintf("data/%02x/obj-%03d", i%16, i)] = randomBytes(t, 1+i*1500)
		}
		objects["data/big/multipart"] = randomBytes(t, 2*minPartSize+777)

		parallel(t, objects, func(name string, data []byte) error {
			return s.Put(ctx, name, bytes.NewReader(data))
		})
		parallel(t, objects, func(name string, data []byte) error {
			got, err := blob.ReadAll(ctx, s, name)
			if err != nil {
				return err
			}
			if !bytes.Equal(got, data) {
				return fmt.Errorf("%s: got %d bytes, want %d, content differs", name, len(got), len(data))
			}
			third := len(data) / 3
			if third == 0 {
				return nil // length 0 would mean "to the end"
			}
			rc, err := s.Get(ctx, name, int64(third), int64(third))
			if err != nil {
				return err
			}
			defer rc.Close()
			part, err := io.ReadAll(rc)
			if err != nil {
				return err
			}
			if want := data[third : 2*third]; !bytes.Equal(part, want) {
				return fmt.Errorf("%s: ranged read differs", name)
			}
			return nil
		})
		for range 5 {
			listed := map[string]int64{}
			if err := s.List(ctx, "data/", func(i blob.Info) error { listed[i.Name] = i.Size; return nil }); err != nil {
				t.Fatalf("list: %v", err)
			}
			if len(listed) != len(objects) {
				t.Fatalf("listed %d objects, want %d", len(listed), len(objects))
			}
			for name, data := range objects {
				if listed[name] != int64(len(data)) {
					t.Fatalf("list: %s has size %d, want %d", name, listed[name], len(data))
				}
			}
		}
		parallel(t, objects, func(name string, _ []byte) error { return s.Delete(ctx, name) })

		requests, faults, _ := p.Stats()
		t.Logf("%d requests, faults injected: %v", requests, faults)
		for _, mode := range s3test.AllFaults {
			if faults[mode] < 3 {
				t.Errorf("fault %q injected %d times, want at least 3", mode, faults[mode])
			}
		}
		// Both recovery paths must have been taken: the SDK's retries, and
		// resuming a download that broke mid-body.
		retries := strings.Count(logs.String(), "retrying request")
		resumes := strings.Count(logs.String(), "resuming broken download")
		t.Logf("%d retried requests, %d resumed downloads", retries, resumes)
		if retries == 0 || resumes == 0 {
			t.Errorf("retries=%d resumes=%d, want both > 0", retries, resumes)
		}
	})
}

// TestSlowTransfersAreNotCut moves 768 KiB each way through a proxy that
// trickles bodies (32 KiB every 100 ms, about 2.4 s per transfer) with an idle
// timeout of 1 s: a transfer that is slow but moving must not time out.
// The upload half fails if writes do not push the idle deadline out, because
// the transport's read for the response waits through the whole upload.
func TestSlowTransfersAreNotCut(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		p := s3test.NewFaultProxy(t, srv.Endpoint, 0)
		p.Slow = 100 * time.Millisecond
		opts := options(srv)
		opts.IdleTimeout = time.Second
		opts.MaxAttempts = 1 // a cut transfer must show, not be retried away
		s := openStore(t, Location{Endpoint: p.URL(), Bucket: bucket}, opts)
		data := randomBytes(t, 768<<10)
		if err := s.Put(ctx, "data/slow", bytes.NewReader(data)); err != nil {
			t.Fatalf("slow upload: %v", err)
		}
		got, err := blob.ReadAll(ctx, s, "data/slow")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("slow download: %d bytes, %v", len(got), err)
		}
	})
}

func TestRetryerPolicy(t *testing.T) {
	r := newRetryer(Options{MaxAttempts: 5, MaxBackoff: time.Second}.withDefaults(), slog.New(slog.DiscardHandler))
	if r.MaxAttempts() != 5 {
		t.Fatalf("max attempts %d", r.MaxAttempts())
	}
	retry := []error{
		fmt.Errorf("read body: %w", io.ErrUnexpectedEOF),
		&net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")},
		&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")},
	}
	for _, err := range retry {
		if !r.IsErrorRetryable(err) {
			t.Errorf("%v not retried", err)
		}
	}
	if r.IsErrorRetryable(errors.New("some logic error")) {
		t.Error("an unknown error is retried")
	}
	// The retry quota is off: many failures in a row still get retry tokens.
	rv2 := r.(aws.RetryerV2)
	for i := range 1000 {
		if _, err := rv2.GetRetryToken(context.Background(), io.ErrUnexpectedEOF); err != nil {
			t.Fatalf("retry token %d refused: %v", i, err)
		}
	}
}

// parallel runs fn for every object with 8 workers and fails on any error.
func parallel(t *testing.T, objects map[string][]byte, fn func(string, []byte) error) {
	t.Helper()
	names := make(chan string)
	errs := make(chan error, len(objects))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range names {
				if err := fn(n, objects[n]); err != nil {
					errs <- err
				}
			}
		}()
	}
	for n := range objects {
		names <- n
	}
	close(names)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestWrongCredentials(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		cases := map[string]testServer{
			"wrong secret": {Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: "not-the-secret-" + randomHex(t, 8)},
			"unknown key":  {Endpoint: srv.Endpoint, AccessKey: "nosuchkey" + randomHex(t, 4), SecretKey: "not-the-secret-" + randomHex(t, 8)},
		}
		for name, bad := range cases {
			t.Run(name, func(t *testing.T) {
				s := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket}, options(bad))
				start := time.Now()
				var errs []error
				errs = append(errs, s.Put(ctx, "data/x", bytes.NewReader([]byte("x"))))
				_, err := s.Stat(ctx, "data/x")
				errs = append(errs, err)
				_, err = s.Get(ctx, "config", 0, 0)
				errs = append(errs, err)
				errs = append(errs, s.List(ctx, "", func(blob.Info) error { return nil }))
				for _, err := range errs {
					checkPermanentHint(t, err, bucket, srv.Endpoint, "StaticCredentials")
					if strings.Contains(err.Error(), bad.SecretKey) {
						t.Fatalf("error shows the secret: %v", err)
					}
				}
				// Permanent errors are not retried: four calls, no backoff.
				if d := time.Since(start); d > 3*time.Second {
					t.Fatalf("refused credentials took %v; they must not be retried", d)
				}
			})
		}
	})
}

func TestMissingBucket(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := "vigil-missing-" + randomHex(t, 6)
		s := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket, Prefix: "repo"}, options(srv))
		check := func(op string, err error) {
			t.Helper()
			checkPermanentHint(t, err, bucket, srv.Endpoint, "StaticCredentials")
			if !strings.Contains(err.Error(), "bucket does not exist") {
				t.Fatalf("%s: missing bucket error does not say so: %v", op, err)
			}
			// The repository turns this into "no repository" (exit 10).
			if !errors.Is(err, blob.ErrNoContainer) {
				t.Fatalf("%s: missing bucket error does not match blob.ErrNoContainer: %v", op, err)
			}
		}
		check("put", s.Put(ctx, "config", bytes.NewReader([]byte("x"))))
		_, err := s.Get(ctx, "config", 0, 0)
		check("get", err)
		_, err = s.Stat(ctx, "config")
		check("stat", err)
		check("list", s.List(ctx, "snapshots/", func(blob.Info) error { return nil }))
	})
}

func checkPermanentHint(t *testing.T, err error, bucket, endpoint, credSource string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error")
	}
	t.Log(err)
	if !blob.IsPermanent(err) || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("error is not a permanent (non-not-found) error: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{bucket, endpoint, credSource} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error does not name %q: %v", want, msg)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Fatalf("error is not one line: %q", msg)
	}
}

// checkTransportMessage wants the short form of an error that got no HTTP
// response: which endpoint, how many attempts, the network's reason, and none
// of the SDK's empty response fields or the signed URL.
func checkTransportMessage(t *testing.T, err error, endpoint string, attempts int) {
	t.Helper()
	msg := err.Error()
	want := fmt.Sprintf("no answer from %s (%d attempts): ", endpoint, attempts)
	if !strings.Contains(msg, want) || strings.Contains(msg, "RequestID") || strings.Contains(msg, "x-id=") {
		t.Fatalf("transport error %q, want it to contain %q and no SDK response fields", msg, want)
	}
	if blob.IsPermanent(err) {
		t.Fatalf("transport error marked permanent: %v", err)
	}
}

func TestUnreachableEndpointFailsFast(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret-never-used", "")
	ctx := context.Background()

	t.Run("refused", func(t *testing.T) {
		// A port nobody listens on: the listener is closed again at once.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := "http://" + ln.Addr().String()
		ln.Close()
		opts := Options{Credentials: creds, MaxAttempts: 4, MaxBackoff: 200 * time.Millisecond, DialTimeout: time.Second}
		s := openStore(t, Location{Endpoint: addr, Bucket: "vigil-test"}, opts)
		start := time.Now()
		_, err = s.Stat(ctx, "config")
		elapsed := time.Since(start)
		if err == nil || errors.Is(err, blob.ErrNotFound) {
			t.Fatalf("stat on a closed port: %v", err)
		}
		if !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("error does not say why: %v", err)
		}
		checkTransportMessage(t, err, addr, 4)
		if elapsed > 2*time.Second {
			t.Fatalf("took %v to give up, want < 2s (4 attempts, 200ms max backoff)", elapsed)
		}
	})

	t.Run("hung", func(t *testing.T) {
		opts := Options{Credentials: creds, MaxAttempts: 2, MaxBackoff: 100 * time.Millisecond, ResponseHeaderTimeout: 500 * time.Millisecond}
		s := openStore(t, Location{Endpoint: s3test.Blackhole(t), Bucket: "vigil-test"}, opts)
		start := time.Now()
		err := s.Put(ctx, "data/x", bytes.NewReader([]byte("x")))
		elapsed := time.Since(start)
		if err == nil {
			t.Fatal("put to a hung endpoint succeeded")
		}
		if !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("error does not say why: %v", err)
		}
		checkTransportMessage(t, err, s.loc.Endpoint, 2)
		if !blob.IsRetried(err) || blob.IsPermanent(err) {
			t.Fatalf("a timeout after the client's retries must be marked Retried (and not Permanent): %v", err)
		}
		if elapsed < time.Second || elapsed > 3*time.Second {
			t.Fatalf("took %v to give up, want about 2 × 500ms", elapsed)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		opts := Options{Credentials: creds, MaxAttempts: 100}
		s := openStore(t, Location{Endpoint: s3test.Blackhole(t), Bucket: "vigil-test"}, opts)
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := s.Get(cctx, "config", 0, 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("get with an expiring context: %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("took %v after the context expired", d)
		}
	})
}

// syncBuffer collects log output from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestTLS runs a TLS reverse proxy with a self-signed certificate in front of
// the server: refused without the CA, accepted with CAFile, and accepted with
// InsecureTLS, which must log a warning.
func TestTLS(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		tlsProxy := s3test.NewTLSProxy(t, srv.Endpoint)
		caFile := filepath.Join(t.TempDir(), "ca.pem")
		cert := tlsProxy.Server().Certificate()
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
			t.Fatal(err)
		}
		loc := Location{Endpoint: tlsProxy.URL(), Bucket: bucket}

		opts := options(srv)
		opts.MaxAttempts = 2
		plain := openStore(t, loc, opts)
		if err := plain.Put(ctx, "data/tls", bytes.NewReader([]byte("x"))); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("put to an unknown CA: %v, want a certificate error", err)
		}

		opts.CAFile = caFile
		withCA := openStore(t, loc, opts)
		if err := withCA.Put(ctx, "data/tls", bytes.NewReader([]byte("with CA"))); err != nil {
			t.Fatalf("put with CA file: %v", err)
		}

		var logs syncBuffer
		opts.CAFile = ""
		opts.InsecureTLS = true
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		insecure := openStore(t, loc, opts)
		got, err := blob.ReadAll(ctx, insecure, "data/tls")
		if err != nil || string(got) != "with CA" {
			t.Fatalf("insecure get: %q, %v", got, err)
		}
		if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "insecure") {
			t.Fatalf("insecure TLS logged no warning: %q", logs.String())
		}
	})
}

func TestReadPastEnd(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		s := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: newBucket(t, srv)}, options(srv))
		if err := s.Put(ctx, "data/ten", bytes.NewReader([]byte("0123456789"))); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, "data/empty", bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name     string
			off, n   int64
			want     string
			notFound bool
		}{
			{"data/ten", 8, 10, "89", false},
			{"data/ten", 10, 0, "", false},
			{"data/ten", 50, 5, "", false},
			{"data/empty", 0, 10, "", false},
			{"data/empty", 3, 0, "", false},
			{"data/none", 50, 5, "", true},
		}
		for _, c := range cases {
			rc, err := s.Get(ctx, c.name, c.off, c.n)
			if c.notFound {
				if !errors.Is(err, blob.ErrNotFound) {
					t.Fatalf("get %s past the end: %v, want ErrNotFound", c.name, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("get %s %d+%d: %v", c.name, c.off, c.n, err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != c.want {
				t.Fatalf("get %s %d+%d = %q, %v; want %q", c.name, c.off, c.n, got, err, c.want)
			}
		}
	})
}

// TestCredentialsFromEnvironment goes through the SDK's default chain, as
// production does, and checks that the hint names that source and never
// the secret.
func TestCredentialsFromEnvironment(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv testServer) {
		ctx := context.Background()
		bucket := newBucket(t, srv)
		isolateAWSConfig(t)
		t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
		opts := options(srv)
		opts.Credentials = nil
		good := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket}, opts)
		if err := good.Put(ctx, "config", bytes.NewReader([]byte("c"))); err != nil {
			t.Fatalf("put with credentials from the environment: %v", err)
		}

		wrong := "wrong-" + randomHex(t, 10)
		t.Setenv("AWS_SECRET_ACCESS_KEY", wrong)
		bad := openStore(t, Location{Endpoint: srv.Endpoint, Bucket: bucket}, opts)
		_, err := bad.Get(ctx, "config", 0, 0)
		checkPermanentHint(t, err, bucket, srv.Endpoint, "EnvConfigCredentials")
		if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), srv.SecretKey) {
			t.Fatalf("error shows a secret: %v", err)
		}
	})
}

// BenchmarkPutGet measures one store's throughput for pack-sized objects
// against each server on loopback (go test -bench . -run ^$).
func BenchmarkPutGet(b *testing.B) {
	for _, name := range s3test.ServerNames {
		srv, ok := s3test.LookupServer(name)
		if !ok {
			continue
		}
		b.Run(srv.Name, func(b *testing.B) {
			ctx := context.Background()
			bucket := "vigil-bench-" + srv.Name
			s, err := Open(ctx, Location{Endpoint: srv.Endpoint, Bucket: bucket}, Options{Credentials: creds(srv)})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if _, err := s.EnsureBucket(ctx); err != nil {
				b.Fatal(err)
			}
			defer removeBucket(b, s)
			data := make([]byte, 16<<20)
			_, _ = rand.Read(data)
			b.SetBytes(2 * int64(len(data)))
			b.RunParallel(func(pb *testing.PB) {
				var i atomic.Int64
				for pb.Next() {
					name := fmt.Sprintf("data/bench-%p-%d", &i, i.Add(1))
					if err := s.Put(ctx, name, bytes.NewReader(data)); err != nil {
						b.Error(err)
						return
					}
					rc, err := s.Get(ctx, name, 0, 0)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, rc)
					rc.Close()
					_ = s.Delete(ctx, name)
				}
			})
		})
	}
}
