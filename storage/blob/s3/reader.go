package s3

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// reader is the body of a Get. The SDK retries a request only until the
// response headers arrive; a connection that breaks or stalls mid-body would
// fail the whole read. reader then asks again for the rest of the range,
// pinned with If-Match to the ETag of the first response so it never splices
// two versions of an object together.
type reader struct {
	s *Store
	// ctx is the Get call's context, kept because a resumed request belongs
	// to that same call and io.Reader has no context parameter (as with an
	// http.Response body, which is bound to its request's context).
	ctx  context.Context
	key  string
	name string
	pos  int64 // absolute offset of the next byte to return
	end  int64 // absolute offset of the last byte wanted, -1 for the end

	body      io.ReadCloser
	remaining int64 // bytes the current body still owes, -1 if unknown
	etag      string
	stalls    int   // resumes since the last byte arrived
	err       error // sticky: once failed or closed, every Read fails
	closeOnce sync.Once
}

func (r *reader) open() error {
	in := &awss3.GetObjectInput{Bucket: aws.String(r.s.loc.Bucket), Key: aws.String(r.key)}
	if r.pos > 0 || r.end >= 0 {
		rng := "bytes=" + strconv.FormatInt(r.pos, 10) + "-"
		if r.end >= 0 {
			rng += strconv.FormatInt(r.end, 10)
		}
		in.Range = aws.String(rng)
	}
	if r.etag != "" {
		in.IfMatch = aws.String(r.etag)
	}
	out, err := r.s.client.GetObject(r.ctx, in)
	if err != nil {
		return err
	}
	r.body = out.Body
	r.remaining = -1
	if out.ContentLength != nil {
		r.remaining = *out.ContentLength
	}
	if r.etag == "" {
		r.etag = aws.ToString(out.ETag)
	}
	return nil
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		n, err := r.body.Read(p)
		r.pos += int64(n)
		if r.remaining > 0 {
			r.remaining -= int64(n)
		}
		if n > 0 {
			r.stalls = 0
		}
		if err == nil || err == io.EOF && r.remaining <= 0 {
			return n, err
		}
		// The body broke (reset, idle timeout, or EOF before Content-Length).
		if ctxErr := r.ctx.Err(); ctxErr != nil {
			r.err = fmt.Errorf("s3 get %s: %w", r.name, ctxErr)
			return n, r.err
		}
		r.stalls++
		if r.stalls > r.s.opts.MaxAttempts {
			r.err = fmt.Errorf("s3 get %s: read at offset %d: %w", r.name, r.pos, err)
			return n, r.err
		}
		r.s.log.Debug("s3: resuming broken download", "object", r.name, "offset", r.pos, "err", err)
		_ = r.body.Close()
		r.body = http.NoBody
		if oerr := r.open(); oerr != nil {
			r.err = r.s.wrap(r.ctx, "get", r.name, fmt.Errorf("resume at offset %d: %w", r.pos, oerr))
			return n, r.err
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (r *reader) Close() error {
	var err error
	r.closeOnce.Do(func() {
		err = r.body.Close()
		r.err = fmt.Errorf("s3 get %s: read after close", r.name)
		r.s.release()
	})
	return err
}
