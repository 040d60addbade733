package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/vigilops/vigil/storage/blob"
)

// Error codes S3 and its clones use for refused credentials. A HEAD response
// carries no body, so there the status (403) is all there is.
var credentialCodes = map[string]bool{
	"InvalidAccessKeyId":    true,
	"SignatureDoesNotMatch": true,
	"InvalidToken":          true,
	"ExpiredToken":          true,
	"TokenRefreshRequired":  true,
	"InvalidSecurity":       true,
	"AccessKeyDisabled":     true, // Wasabi, B2
	"XAdminUserNotFound":    true, // versitygw, with status 404, for an unknown key
}

// Codes meaning the request went to the wrong region.
var regionCodes = map[string]bool{
	"AuthorizationHeaderMalformed":       true,
	"PermanentRedirect":                  true,
	"IllegalLocationConstraintException": true,
}

const (
	hintNoBucket    = "bucket does not exist: check the bucket name, or create it with `vigil init`"
	hintCredentials = "the endpoint refused the credentials: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the profile they came from"
	hintDenied      = "access denied: the credentials work but may not use this bucket; check the key's policy or bucket policy"
	hintForbidden   = "refused with 403: wrong access key or secret, or no permission on this bucket"
	hintRegion      = "wrong region for this bucket: set AWS_REGION to the bucket's region"
)

// wrap turns an SDK error into the error the blob contract promises, with an
// operation prefix. what is the object name or list prefix ("" for bucket
// operations).
func (s *Store) wrap(ctx context.Context, op, what string, err error) error {
	if what != "" {
		op += " " + what
	}
	// When the caller's context ended, that is the reason, whatever the SDK
	// made of it. (Not errors.Is on err: transport timeouts can match
	// context.DeadlineExceeded too, and those are the endpoint's fault.)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("s3 %s: %w", op, ctxErr)
	}
	var credErr *credentialsError
	if errors.As(err, &credErr) {
		return blob.Permanent(fmt.Errorf("s3 %s: %w", op, err),
			s.hint("could not get credentials: refresh the profile's session or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"))
	}
	code, status := apiCode(err), httpStatus(err)
	switch {
	case code == "NoSuchBucket":
		return blob.Permanent(marked{short(op, err), blob.ErrNoContainer}, s.hint(hintNoBucket))
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound && code == "":
		return fmt.Errorf("s3 %s: %w", op, blob.ErrNotFound)
	case credentialCodes[code]:
		return blob.Permanent(short(op, err), s.hint(hintCredentials))
	case code == "AccessDenied" || code == "AllAccessDisabled":
		return blob.Permanent(short(op, err), s.hint(hintDenied))
	case status == http.StatusForbidden:
		return blob.Permanent(short(op, err), s.hint(hintForbidden))
	case regionCodes[code] || status == http.StatusMovedPermanently:
		return blob.Permanent(short(op, err), s.hint(hintRegion))
	case code == "InvalidBucketName":
		return blob.Permanent(short(op, err), s.hint("the server rejects this bucket name"))
	}
	// An error the retryer gave up on after its attempts is final; one it
	// did not retry (a 400 such as BadDigest) may still be worth the
	// caller's own retry.
	mark := func(e error) error { return e }
	if errors.As(err, new(*retry.MaxAttemptsError)) {
		mark = blob.Retried
	}
	if status == 0 {
		if msg, ok := s.transportMessage(op, err); ok {
			return mark(&shortError{msg: msg, err: err})
		}
	}
	return mark(fmt.Errorf("s3 %s: %w", op, err))
}

// transportMessage says in one line that the endpoint could not be reached
// or did not answer, and why, for an error that never got an HTTP response.
// The SDK's own text for this buries the cause behind "https response error
// StatusCode: 0, RequestID: , HostID: , request send failed" and the whole
// signed URL; an admin reading a failed night's log needs the endpoint, how
// often it was tried and what the network said.
func (s *Store) transportMessage(op string, err error) (string, bool) {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return "", false
	}
	tries := ""
	var ma *retry.MaxAttemptsError
	if errors.As(err, &ma) {
		tries = fmt.Sprintf(" (%d attempts)", ma.Attempt)
	}
	return fmt.Sprintf("s3 %s: no answer from %s%s: %v", op, s.endpointName(), tries, ue.Err), true
}

// shortError prints only what an admin needs from an S3 error response
// (status, code, message) and keeps the SDK error, with its request IDs, for
// errors.As and debug logs.
type shortError struct {
	msg string
	err error
}

func (e *shortError) Error() string { return e.msg }
func (e *shortError) Unwrap() error { return e.err }

// marked adds a sentinel for errors.Is without changing the message, which
// short already made as terse as an admin needs.
type marked struct {
	error
	mark error
}

func (e marked) Unwrap() []error { return []error{e.error, e.mark} }

func short(op string, err error) error {
	msg := fmt.Sprintf("s3 %s: HTTP %d", op, httpStatus(err))
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		if c := apiErr.ErrorCode(); c != "" {
			msg += " " + c
		}
		if m := apiErr.ErrorMessage(); m != "" && m != apiErr.ErrorCode() {
			msg += ": " + m
		}
	}
	return &shortError{msg: msg, err: err}
}

// hint is the one-line advice for an admin: which bucket, which endpoint,
// where the credentials came from, and what to do. No secret goes in here.
func (s *Store) hint(advice string) string {
	return fmt.Sprintf("%s, credentials from %s: %s", s.where(), s.credSource, advice)
}

func (s *Store) where() string {
	return fmt.Sprintf("bucket %q at %s", s.loc.Bucket, s.endpointName())
}

func (s *Store) endpointName() string {
	if s.loc.Endpoint == "" {
		return "AWS S3 region " + s.region
	}
	return s.loc.Endpoint
}

func apiCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func isInvalidRange(err error) bool {
	return apiCode(err) == "InvalidRange" || httpStatus(err) == http.StatusRequestedRangeNotSatisfiable
}

// credentialsError marks a failure to obtain credentials (as opposed to the
// server refusing them), which no retry of the request can fix.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "retrieve credentials: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

type credentialsProvider struct{ inner aws.CredentialsProvider }

func (p credentialsProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.inner.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		return c, &credentialsError{err}
	}
	return c, err
}

// retryUnexpectedEOF also retries a response body cut short (a proxy or
// load balancer closing the connection cleanly mid-body), which the SDK's
// default checks do not recognise.
func retryUnexpectedEOF(err error) aws.Ternary {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}

// sdkLogger sends the SDK's own log lines to slog.
type sdkLogger struct{ log *slog.Logger }

func (l sdkLogger) Logf(c logging.Classification, format string, v ...any) {
	level := slog.LevelDebug
	if c == logging.Warn {
		level = slog.LevelWarn
	}
	l.log.Log(context.Background(), level, "s3 sdk: "+fmt.Sprintf(format, v...))
}
