package logrotate

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
)

// compressFile replaces path with path.gz (or .zst). The compressed copy
// is written under a temporary name, made durable and given the source's
// mode, owner and mtime (max_age looks at mtimes) before it is renamed
// into place and the source removed: a crash leaves either the source or
// both, never neither.
func compressFile(ctx context.Context, path, method string) error {
	ext := ".gz"
	if method == "zstd" {
		ext = ".zst"
	}
	src, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	final := path + ext
	if _, err := os.Lstat(final); err == nil {
		return fmt.Errorf("compress %s: %s already exists", path, filepath.Base(final))
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(final)+".tmp")
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	defer os.Remove(tmp) // no-op after the rename
	defer dst.Close()
	var enc io.WriteCloser
	if method == "zstd" {
		enc, err = zstd.NewWriter(dst, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("compress %s: %w", path, err)
		}
	} else {
		gz, _ := gzip.NewWriterLevel(dst, gzip.DefaultCompression)
		gz.Name, gz.ModTime = filepath.Base(path), fi.ModTime()
		enc = gz
	}
	if _, err := io.Copy(enc, ctxReader{ctx, src}); err != nil {
		enc.Close()
		return fmt.Errorf("compress %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	if err := finishCopy(dst, fi); err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("compress %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("compress %s: remove the uncompressed copy: %w", path, err)
	}
	return nil
}
