package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/vigilops/vigil/storage/blob"
)

// abortTimeout bounds the cleanup of a failed multipart upload, which runs
// even when the caller's context is already cancelled.
const abortTimeout = 30 * time.Second

// putMultipart uploads p in parts. The object only appears when the upload is
// completed, so a failed or cancelled Put leaves nothing under the name; the
// parts already sent are aborted (a bucket lifecycle rule that aborts
// incomplete uploads catches the rest, for example after a crash).
func (s *Store) putMultipart(ctx context.Context, key, name string, p blob.Payload, size int64) (err error) {
	partSize := partSizeFor(size, s.opts.PartSize)
	nparts := int((size + partSize - 1) / partSize)

	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("s3 put %s: %w", name, err)
	}
	created, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{
		Bucket: aws.String(s.loc.Bucket),
		Key:    aws.String(key),
	})
	s.release()
	if err != nil {
		return s.wrap(ctx, "put", name, err)
	}
	s.bucketSeen.Store(true)
	uploadID := created.UploadId
	defer func() {
		if err != nil {
			s.abort(ctx, key, name, uploadID)
		}
	}()

	parts := make([]types.CompletedPart, nparts)
	if ra, ok := p.(io.ReaderAt); ok {
		// Parts read their own section of the payload, so they can go in
		// parallel without copying; the connection slots bound how many.
		err = s.uploadPartsParallel(ctx, key, name, uploadID, ra, size, partSize, parts)
	} else {
		err = s.uploadPartsSerial(ctx, key, name, uploadID, p, size, partSize, parts)
	}
	if err != nil {
		return err
	}
	// A Put whose context ended must not make the object appear.
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("s3 put %s: %w", name, cerr)
	}
	return s.complete(ctx, key, name, uploadID, parts, size)
}

func (s *Store) uploadPartsParallel(ctx context.Context, key, name string, uploadID *string, ra io.ReaderAt, size, partSize int64, parts []types.CompletedPart) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	for i := range parts {
		if err := s.acquire(ctx); err != nil {
			fail(fmt.Errorf("s3 put %s: %w", name, err))
			break
		}
		off := int64(i) * partSize
		n := min(partSize, size-off)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.release()
			etag, err := s.uploadPart(ctx, key, name, uploadID, int32(i+1), io.NewSectionReader(ra, off, n), n)
			if err != nil {
				fail(err)
				return
			}
			parts[i] = types.CompletedPart{ETag: etag, PartNumber: aws.Int32(int32(i + 1))}
		}()
	}
	wg.Wait()
	return firstErr
}

func (s *Store) uploadPartsSerial(ctx context.Context, key, name string, uploadID *string, r io.Reader, size, partSize int64, parts []types.CompletedPart) error {
	buf := make([]byte, partSize)
	for i := range parts {
		n := min(partSize, size-int64(i)*partSize)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("s3 put %s: read part %d: %w", name, i+1, err)
		}
		if err := s.acquire(ctx); err != nil {
			return fmt.Errorf("s3 put %s: %w", name, err)
		}
		etag, err := s.uploadPart(ctx, key, name, uploadID, int32(i+1), bytes.NewReader(buf[:n]), n)
		s.release()
		if err != nil {
			return err
		}
		parts[i] = types.CompletedPart{ETag: etag, PartNumber: aws.Int32(int32(i + 1))}
	}
	return nil
}

func (s *Store) uploadPart(ctx context.Context, key, name string, uploadID *string, num int32, body io.ReadSeeker, n int64) (*string, error) {
	out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
		Bucket:        aws.String(s.loc.Bucket),
		Key:           aws.String(key),
		UploadId:      uploadID,
		PartNumber:    aws.Int32(num),
		Body:          body,
		ContentLength: aws.Int64(n),
	}, s.uploadOptions)
	if err != nil {
		return nil, s.wrap(ctx, "put", fmt.Sprintf("%s part %d", name, num), err)
	}
	return out.ETag, nil
}

func (s *Store) complete(ctx context.Context, key, name string, uploadID *string, parts []types.CompletedPart, size int64) error {
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("s3 put %s: %w", name, err)
	}
	_, err := s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.loc.Bucket),
		Key:             aws.String(key),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	s.release()
	if err == nil {
		return nil
	}
	// Completing is not idempotent: when a first attempt succeeded but its
	// answer was lost, the SDK's retry finds the upload gone. If the object
	// is there with the right size, that first attempt is what happened.
	var gone *types.NoSuchUpload
	if errors.As(err, &gone) || apiCode(err) == "NoSuchUpload" {
		if info, serr := s.Stat(ctx, name); serr == nil && info.Size == size {
			s.log.Debug("s3: multipart upload already completed", "object", name)
			return nil
		}
	}
	return s.wrap(ctx, "put", name, fmt.Errorf("complete multipart upload: %w", err))
}

// abort removes the parts of a failed upload, with a fresh time-bounded
// context because the caller's may be the reason the upload failed.
func (s *Store) abort(ctx context.Context, key, name string, uploadID *string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	_, err := s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
		Bucket:   aws.String(s.loc.Bucket),
		Key:      aws.String(key),
		UploadId: uploadID,
	})
	if err != nil && httpStatus(err) != 404 {
		s.log.Warn("s3: could not abort multipart upload; its parts stay billed until a lifecycle rule removes them",
			"object", name, "bucket", s.loc.Bucket, "err", err)
	}
}

// partSizeFor returns want, or for objects that would need more than S3's
// 10,000 parts, the smallest whole number of MiB that fits them in.
func partSizeFor(size, want int64) int64 {
	if (size+want-1)/want <= maxParts {
		return want
	}
	const mib = 1 << 20
	return ((size+maxParts-1)/maxParts + mib - 1) / mib * mib
}
