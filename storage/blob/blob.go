// Package blob defines the object store that a vigil repository lives in.
//
// A Store is a flat namespace of immutable objects addressed by slash-separated
// names such as "data/ab/ab12…" or "snapshots/9f…". Implementations: local
// (a directory) and s3 (any S3-compatible endpoint). Every implementation must
// pass the contract suite in package blobtest.
//
// Contract, which the repository layer relies on:
//
//   - Put stores the whole payload under name or nothing at all: a reader never
//     sees a partial object, even if the writer is killed mid-upload. Put may
//     rewind the payload (Seek to 0) and send it again, so retries are safe.
//     Putting an existing name replaces it; the repository only does that
//     with identical content (names are content hashes) or for lock refreshes.
//   - Get returns the bytes in [offset, offset+length) of an object; length 0
//     means "to the end". Reading past the end returns what exists. A missing
//     object is reported as an error matching ErrNotFound (errors.Is).
//   - Stat reports the size of an object, or ErrNotFound.
//   - List calls fn for every object whose name starts with prefix, in no
//     particular order. Objects written or deleted during the listing may or
//     may not be reported. An error returned by fn stops the listing and is
//     returned.
//   - Delete removes an object. Deleting a missing object is not an error, so
//     Delete is idempotent.
//   - Errors that retrying cannot fix (bad credentials, missing bucket, no
//     permission) are marked with Permanent so callers stop retrying.
//   - A store whose container (an S3 bucket) does not exist reports that, from
//     any method, as an error matching ErrNoContainer as well as Permanent,
//     so that callers can tell "nothing here at all" from a failure.
//   - All methods are safe for concurrent use and honour ctx cancellation.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrNotFound is matched (with errors.Is) by the error returned for a missing object.
var ErrNotFound = errors.New("object not found")

// ErrNoContainer is matched (with errors.Is) by the error for a store whose
// container, such as an S3 bucket, does not exist. Unlike ErrNotFound it is
// about the whole store, not one object: the repository reports it as "no
// repository here" rather than as a damaged repository.
var ErrNoContainer = errors.New("container does not exist")

// Payload is what Put uploads: a rewindable reader of known size.
// *bytes.Reader satisfies it.
type Payload interface {
	io.ReadSeeker
	Size() int64
}

// Info describes a stored object.
type Info struct {
	Name    string
	Size    int64
	ModTime time.Time
}

// Store is an object store. See the package documentation for the contract.
type Store interface {
	// Location is a human-readable address with secrets removed.
	Location() string
	Put(ctx context.Context, name string, p Payload) error
	Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error)
	Stat(ctx context.Context, name string) (Info, error)
	List(ctx context.Context, prefix string, fn func(Info) error) error
	Delete(ctx context.Context, name string) error
	Close() error
}

// permanentError marks an error that retrying will not fix.
type permanentError struct {
	err  error
	hint string
}

func (e *permanentError) Error() string {
	if e.hint == "" {
		return e.err.Error()
	}
	return e.err.Error() + " (" + e.hint + ")"
}

func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps err so that IsPermanent reports true. hint is a one-line
// suggestion for the admin (which bucket, which credential source).
func Permanent(err error, hint string) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err, hint: hint}
}

// IsPermanent reports whether err (or anything it wraps) was marked Permanent,
// or is ErrNotFound, which retrying does not fix either.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, ErrNotFound)
}

// retriedError marks an error that the store returned only after its own
// retry policy ran out.
type retriedError struct{ err error }

func (e *retriedError) Error() string { return e.err.Error() }
func (e *retriedError) Unwrap() error { return e.err }

// Retried marks err as final after the store's own retries (the S3
// client's backoff, for example): a caller retrying it again would multiply
// the time a dead endpoint takes to be reported, not improve the odds.
func Retried(err error) error {
	if err == nil {
		return nil
	}
	return &retriedError{err: err}
}

// IsRetried reports whether err was marked Retried.
func IsRetried(err error) bool {
	var r *retriedError
	return errors.As(err, &r)
}

// ReadAll reads a whole object.
func ReadAll(ctx context.Context, s Store, name string) ([]byte, error) {
	rc, err := s.Get(ctx, name, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}
