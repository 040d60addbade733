// Package repo is vigil's deduplicating, encrypted repository: data is cut
// into content-defined chunks, addressed by keyed hash, compressed, encrypted
// and packed into objects of a blob.Store. docs/design.md describes the format
// in enough detail to write a second reader.
package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/restic/chunker"

	"github.com/vigilops/vigil/storage/blob"
)

// FormatVersion is the repository format written by this code.
const FormatVersion = 1

// ErrNoRepository is returned by Open when the store holds no repository.
var ErrNoRepository = errors.New("no repository at this location (run vigil init)")

// ChunkProfile bounds the content-defined chunker. A chunk is Min bytes
// plus on average 2^AvgBits more; the chunker does not hash the first
// Min-64 bytes of a chunk, so a larger Min is cheaper.
type ChunkProfile struct {
	Min     uint `json:"min"`
	Max     uint `json:"max"`
	AvgBits int  `json:"avg_bits"`
}

// Built-in profiles; docs/design.md has the measurements behind them.
var (
	ProfileDefault = ChunkProfile{Min: 256 << 10, Max: 4 << 20, AvgBits: 19}
	ProfileImage   = ChunkProfile{Min: 32 << 10, Max: 256 << 10, AvgBits: 15}
)

// Config is the encrypted repository configuration (object "config").
type Config struct {
	Version    int                     `json:"version"`
	ID         ID                      `json:"id"`
	Created    time.Time               `json:"created"`
	Polynomial chunker.Pol             `json:"chunker_polynomial"`
	Profiles   map[string]ChunkProfile `json:"chunk_profiles"`
	PackSize   int                     `json:"pack_size"`
}

// Options tune how a repository is opened. Zero values pick defaults.
type Options struct {
	Logger   *slog.Logger
	Clock    func() time.Time
	CacheDir string    // local index cache; empty disables it
	KDF      KDFParams // for new key files; tests lower it
	// PackSize overrides the configured target pack size for this session.
	PackSize int
	// Connections bounds parallel downloads (restore, check, index).
	Connections int
	// Uploads bounds packs uploading at once; each holds a pack in memory.
	// One keeps a local disk busy; remote stores want more.
	Uploads int
}

// Repository is an open repository. It is safe for concurrent use.
type Repository struct {
	store blob.Store
	key   *MasterKey
	keyID ID
	cfg   Config
	log   *slog.Logger
	now   func() time.Time
	cache string
	kdf   KDFParams
	conns int
	ups   int
	pack  int
}

func (o Options) fill() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.KDF.N == 0 {
		o.KDF = DefaultKDF
	}
	if o.Connections <= 0 {
		o.Connections = 2
	}
	if o.Uploads <= 0 {
		o.Uploads = 1
	}
	return o
}

// InitOptions are fixed at creation time.
type InitOptions struct {
	PackSize int // target pack size in bytes; default 16 MiB
}

// Init creates a repository in an empty store and returns it opened.
func Init(ctx context.Context, store blob.Store, password string, iopts InitOptions, o Options) (*Repository, error) {
	o = o.fill()
	if _, err := store.Stat(ctx, "config"); err == nil {
		return nil, fmt.Errorf("init: %s already holds a repository", store.Location())
	} else if !errors.Is(err, blob.ErrNotFound) {
		return nil, fmt.Errorf("init: %w", err)
	}
	if password == "" {
		return nil, fmt.Errorf("init: empty password")
	}
	pol, err := chunker.RandomPolynomial()
	if err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	mk, err := NewMasterKey()
	if err != nil {
		return nil, err
	}
	if iopts.PackSize <= 0 {
		iopts.PackSize = 16 << 20
	}
	r := &Repository{
		store: store, key: mk, log: o.Logger, now: o.Clock, kdf: o.KDF, conns: o.Connections, ups: o.Uploads,
		cfg: Config{
			Version: FormatVersion, ID: NewRandomID(), Created: o.Clock().UTC(), Polynomial: pol,
			Profiles: map[string]ChunkProfile{"default": ProfileDefault, "image": ProfileImage},
			PackSize: iopts.PackSize,
		},
	}
	// The key file goes first: a config without a key would be unreadable.
	if r.keyID, err = r.AddKey(ctx, password); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	if err := r.saveJSON(ctx, "config", r.cfg); err != nil {
		return nil, fmt.Errorf("init: %w", err)
	}
	r.setCache(o.CacheDir)
	r.pack = r.cfg.PackSize
	if o.PackSize > 0 {
		r.pack = o.PackSize
	}
	return r, nil
}

// Open opens an existing repository with password.
func Open(ctx context.Context, store blob.Store, password string, o Options) (*Repository, error) {
	o = o.fill()
	if _, err := store.Stat(ctx, "config"); err != nil {
		if errors.Is(err, blob.ErrNotFound) {
			return nil, fmt.Errorf("open %s: %w", store.Location(), ErrNoRepository)
		}
		if errors.Is(err, blob.ErrNoContainer) { // a missing bucket: keep the store's hint, which names it
			return nil, fmt.Errorf("open %s: %w: %w", store.Location(), ErrNoRepository, err)
		}
		return nil, fmt.Errorf("open %s: %w", store.Location(), err)
	}
	mk, keyID, err := findKey(ctx, store, password)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", store.Location(), err)
	}
	r := &Repository{store: store, key: mk, keyID: keyID, log: o.Logger, now: o.Clock, kdf: o.KDF, conns: o.Connections, ups: o.Uploads}
	if err := r.loadJSON(ctx, "config", &r.cfg); err != nil {
		return nil, fmt.Errorf("open %s: %w", store.Location(), err)
	}
	if r.cfg.Version != FormatVersion {
		return nil, fmt.Errorf("open %s: repository format version %d is not supported (this vigil reads %d)", store.Location(), r.cfg.Version, FormatVersion)
	}
	if r.cfg.PackSize <= 0 || r.cfg.Profiles["default"].Max == 0 {
		return nil, fmt.Errorf("open %s: config is incomplete", store.Location())
	}
	r.setCache(o.CacheDir)
	r.pack = r.cfg.PackSize
	if o.PackSize > 0 {
		r.pack = o.PackSize
	}
	return r, nil
}

func (r *Repository) setCache(dir string) {
	if dir == "" {
		return
	}
	r.cache = filepath.Join(dir, r.cfg.ID.String())
	_ = os.MkdirAll(filepath.Join(r.cache, "snapshots"), 0o700)
	if err := os.MkdirAll(filepath.Join(r.cache, "index"), 0o700); err != nil {
		r.log.Warn("index cache disabled", "dir", r.cache, "err", err)
		r.cache = ""
	}
}

// Config returns the repository configuration.
func (r *Repository) Config() Config { return r.cfg }

// Store returns the underlying object store.
func (r *Repository) Store() blob.Store { return r.store }

// Key returns the master key (for tests and tools that read the format).
func (r *Repository) Key() *MasterKey { return r.key }

// Profile returns a named chunk profile.
func (r *Repository) Profile(name string) (ChunkProfile, error) {
	p, ok := r.cfg.Profiles[name]
	if !ok {
		return p, fmt.Errorf("unknown chunking profile %q (have default, image)", name)
	}
	return p, nil
}

// Object payloads start with a one-byte encoding marker inside the encryption.
const (
	encRaw  = 0
	encZstd = 1
)

var (
	zFast, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	zDec, _  = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
)

func (r *Repository) sealObject(name string, plain []byte) []byte {
	buf := make([]byte, 1, len(plain)/2+64)
	buf[0] = encZstd
	buf = zFast.EncodeAll(plain, buf)
	return r.key.Seal(make([]byte, 0, len(buf)+Overhead), buf, objectAAD(name))
}

func (r *Repository) openObject(name string, sealed []byte) ([]byte, error) {
	plain, err := r.key.Open(nil, sealed, objectAAD(name))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(plain) == 0 {
		return nil, fmt.Errorf("%s: empty payload", name)
	}
	switch plain[0] {
	case encRaw:
		return plain[1:], nil
	case encZstd:
		out, err := zDec.DecodeAll(plain[1:], nil)
		if err != nil {
			return nil, fmt.Errorf("%s: decompress: %w", name, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: unknown encoding %d", name, plain[0])
}

// saveJSON encrypts v as JSON under name.
func (r *Repository) saveJSON(ctx context.Context, name string, v any) error {
	plain, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	return r.saveRaw(ctx, name, plain)
}

func (r *Repository) saveRaw(ctx context.Context, name string, plain []byte) error {
	if err := r.store.Put(ctx, name, bytesPayload(r.sealObject(name, plain))); err != nil {
		return fmt.Errorf("save %s: %w", name, err)
	}
	return nil
}

// loadRaw reads and authenticates an object.
func (r *Repository) loadRaw(ctx context.Context, name string) ([]byte, error) {
	sealed, err := blob.ReadAll(ctx, r.store, name)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return r.openObject(name, sealed)
}

func (r *Repository) loadJSON(ctx context.Context, name string, v any) error {
	plain, err := r.loadRaw(ctx, name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return fmt.Errorf("load %s: decode: %w", name, err)
	}
	return nil
}

func bytesPayload(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// listIDs lists the object IDs under a directory prefix ("snapshots/", ...).
func (r *Repository) listIDs(ctx context.Context, dir string) ([]ID, error) {
	var ids []ID
	err := r.store.List(ctx, dir, func(i blob.Info) error {
		base := filepath.Base(i.Name)
		id, err := ParseID(base)
		if err != nil {
			r.log.Warn("ignoring unexpected object", "name", i.Name)
			return nil
		}
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return ids, nil
}

func packName(id ID) string { s := id.String(); return "data/" + s[:2] + "/" + s }
