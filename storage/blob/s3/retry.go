package s3

import (
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
)

// newRetryer is the SDK's standard retryer (exponential backoff with full
// jitter; retries 5xx, throttling codes, connection resets and refusals,
// timeouts) with three changes:
//   - more attempts and a lower backoff cap than the SDK's 3 and 20 s, so a
//     backup rides out a few seconds of trouble without stalling for long;
//   - no client-side retry quota (ratelimit.None): the default token bucket
//     makes a long backup fail outright after a burst of errors, although
//     each request is bounded by MaxAttempts anyway;
//   - a truncated body (io.ErrUnexpectedEOF) is retried as well.
func newRetryer(o Options, log *slog.Logger) aws.Retryer {
	std := retry.NewStandard(func(so *retry.StandardOptions) {
		so.MaxAttempts = o.MaxAttempts
		so.MaxBackoff = o.MaxBackoff
		so.RateLimiter = ratelimit.None
		so.Retryables = append(so.Retryables, retry.IsErrorRetryableFunc(retryUnexpectedEOF))
	})
	return &loggingRetryer{RetryerV2: std, log: log}
}

// loggingRetryer records each retry at debug level, so an admin chasing a
// slow backup can see that the endpoint is failing and being retried.
type loggingRetryer struct {
	aws.RetryerV2
	log *slog.Logger
}

func (r *loggingRetryer) RetryDelay(attempt int, err error) (time.Duration, error) {
	d, derr := r.RetryerV2.RetryDelay(attempt, err)
	r.log.Debug("s3: retrying request", "attempt", attempt, "delay", d, "err", err)
	return d, derr
}
