// Package local is a blob.Store in a directory of the local file system.
//
// Objects are files under the root; a name's slashes are directories. Put
// writes a hidden temporary file in the target directory, fsyncs it, renames
// it into place and fsyncs the directory, so a killed process or a full disk
// never leaves a partial object under its final name.
package local

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vigilops/vigil/storage/blob"
)

// Store is a directory-backed blob.Store.
type Store struct {
	root string
}

// Open returns a Store rooted at dir. The directory must exist unless create
// is set, in which case it (and its parents) are created.
func Open(dir string, create bool) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local store: %w", err)
	}
	if create {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("local store: create %s: %w", abs, err)
		}
	}
	st, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("local store: %s: %w", abs, blob.ErrNotFound)
		}
		return nil, fmt.Errorf("local store: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("local store: %s is not a directory", abs)
	}
	return &Store{root: abs}, nil
}

// Location implements blob.Store.
func (s *Store) Location() string { return s.root }

func (s *Store) path(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || strings.HasPrefix(name, "..") {
		return "", fmt.Errorf("local store: invalid object name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if strings.HasPrefix(part, ".") {
			return "", fmt.Errorf("local store: invalid object name %q", name)
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(name)), nil
}

// Put implements blob.Store.
func (s *Store) Put(ctx context.Context, name string, p blob.Payload) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fn, err := s.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(fn)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", name, err)
	}
	if _, err := p.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	n, err := io.Copy(f, p)
	if err != nil {
		return fail(err)
	}
	if n != p.Size() {
		return fail(fmt.Errorf("short payload: %d of %d bytes", n, p.Size()))
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", name, err)
	}
	if err := os.Rename(tmp, fn); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

type limitedFile struct {
	io.Reader
	f *os.File
}

func (l *limitedFile) Close() error { return l.f.Close() }

// Get implements blob.Store.
func (s *Store) Get(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fn, err := s.path(name)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("get %s: invalid range %d+%d", name, offset, length)
	}
	f, err := os.Open(fn)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("get %s: %w", name, blob.ErrNotFound)
		}
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, fmt.Errorf("get %s: %w", name, err)
		}
	}
	if length == 0 {
		return f, nil
	}
	return &limitedFile{Reader: io.LimitReader(f, length), f: f}, nil
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	fn, err := s.path(name)
	if err != nil {
		return blob.Info{}, err
	}
	st, err := os.Stat(fn)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return blob.Info{}, fmt.Errorf("stat %s: %w", name, blob.ErrNotFound)
		}
		return blob.Info{}, fmt.Errorf("stat %s: %w", name, err)
	}
	return blob.Info{Name: name, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List implements blob.Store.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	// Walk only the deepest directory that can contain matches.
	dir := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		dir = prefix[:i]
	}
	start := filepath.Join(s.root, filepath.FromSlash(dir))
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != start {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted during listing
			}
			return err
		}
		return fn(blob.Info{Name: name, Size: info.Size(), ModTime: info.ModTime()})
	})
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	return nil
}

// Delete implements blob.Store.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fn, err := s.path(name)
	if err != nil {
		return err
	}
	if err := os.Remove(fn); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Close implements blob.Store.
func (s *Store) Close() error { return nil }
