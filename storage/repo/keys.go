package repo

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"strings"
	"time"

	"golang.org/x/crypto/scrypt"

	"github.com/vigilops/vigil/storage/blob"
)

// ErrWrongPassword is returned when no key file opens with the password.
var ErrWrongPassword = errors.New("wrong password or no key file matches")

// KDFParams are the scrypt parameters stored in every key file, so they can
// be raised for new keys without breaking old ones.
type KDFParams struct {
	N int `json:"n"`
	R int `json:"r"`
	P int `json:"p"`
}

// DefaultKDF costs about 0.1 s and 32 MiB on a small server.
var DefaultKDF = KDFParams{N: 1 << 15, R: 8, P: 1}

// keyFile is the only unencrypted object type: it wraps the master key.
type keyFile struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Host     string    `json:"host"`
	Username string    `json:"username"`
	KDF      string    `json:"kdf"`
	KDFParams
	Salt []byte `json:"salt"`
	Data []byte `json:"data"` // nonce || AES-256-GCM(master key JSON) with AAD "vigil-key"
}

// KeyInfo describes a key file for `vigil key list`.
type KeyInfo struct {
	ID       string    `json:"id"`
	Current  bool      `json:"current"`
	Created  time.Time `json:"created"`
	Host     string    `json:"host"`
	Username string    `json:"username"`
}

func deriveKEK(password string, salt []byte, p KDFParams) (cipher.AEAD, error) {
	kek, err := scrypt.Key([]byte(password), salt, p.N, p.R, p.P, 32)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("derive key: %w", err)
	}
	return cipher.NewGCM(block)
}

func newKeyFile(mk *MasterKey, password string, p KDFParams, now time.Time) ([]byte, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	aead, err := deriveKEK(password, salt, p)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(mk)
	if err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("new key: %w", err)
	}
	host, _ := os.Hostname()
	username := ""
	if u, err := user.Current(); err == nil {
		username = u.Username
	}
	kf := keyFile{
		Version: 1, Created: now.UTC(), Host: host, Username: username,
		KDF: "scrypt", KDFParams: p, Salt: salt,
		Data: aead.Seal(nonce, nonce, plain, []byte("vigil-key")),
	}
	return json.MarshalIndent(kf, "", "  ")
}

func openKeyFile(raw []byte, password string) (*MasterKey, error) {
	var kf keyFile
	if err := json.Unmarshal(raw, &kf); err != nil {
		return nil, fmt.Errorf("parse key file: %w", err)
	}
	if kf.KDF != "scrypt" {
		return nil, fmt.Errorf("key file: unsupported kdf %q", kf.KDF)
	}
	// Refuse absurd parameters from a tampered key file instead of allocating gigabytes.
	if kf.N < 2 || kf.N > 1<<22 || kf.R < 1 || kf.R > 64 || kf.P < 1 || kf.P > 16 {
		return nil, fmt.Errorf("key file: kdf parameters out of range (n=%d r=%d p=%d)", kf.N, kf.R, kf.P)
	}
	aead, err := deriveKEK(password, kf.Salt, kf.KDFParams)
	if err != nil {
		return nil, err
	}
	if len(kf.Data) < nonceSize+tagSize {
		return nil, fmt.Errorf("key file: data too short")
	}
	plain, err := aead.Open(nil, kf.Data[:nonceSize], kf.Data[nonceSize:], []byte("vigil-key"))
	if err != nil {
		return nil, ErrWrongPassword
	}
	mk := &MasterKey{}
	if err := json.Unmarshal(plain, mk); err != nil {
		return nil, fmt.Errorf("key file: decode master key: %w", err)
	}
	return mk, mk.init()
}

// findKey tries every key file; the password opens at most a few of them.
func findKey(ctx context.Context, store blob.Store, password string) (*MasterKey, ID, error) {
	var names []string
	if err := store.List(ctx, "keys/", func(i blob.Info) error {
		names = append(names, i.Name)
		return nil
	}); err != nil {
		return nil, ID{}, fmt.Errorf("list keys: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		raw, err := blob.ReadAll(ctx, store, name)
		if err != nil {
			return nil, ID{}, fmt.Errorf("read key: %w", err)
		}
		mk, err := openKeyFile(raw, password)
		if errors.Is(err, ErrWrongPassword) {
			continue
		}
		if err != nil {
			return nil, ID{}, fmt.Errorf("%s: %w", name, err)
		}
		id, err := ParseID(strings.TrimPrefix(name, "keys/"))
		if err != nil {
			return nil, ID{}, fmt.Errorf("%s: %w", name, err)
		}
		return mk, id, nil
	}
	return nil, ID{}, ErrWrongPassword
}

// AddKey stores a new key file that opens the repository with password.
func (r *Repository) AddKey(ctx context.Context, password string) (ID, error) {
	raw, err := newKeyFile(r.key, password, r.kdf, r.now())
	if err != nil {
		return ID{}, err
	}
	id := NewRandomID()
	if err := r.store.Put(ctx, "keys/"+id.String(), bytesPayload(raw)); err != nil {
		return ID{}, fmt.Errorf("add key: %w", err)
	}
	return id, nil
}

// ListKeys describes every key file.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := r.store.List(ctx, "keys/", func(i blob.Info) error {
		raw, err := blob.ReadAll(ctx, r.store, i.Name)
		if err != nil {
			return err
		}
		var kf keyFile
		if err := json.Unmarshal(raw, &kf); err != nil {
			return fmt.Errorf("%s: %w", i.Name, err)
		}
		id := strings.TrimPrefix(i.Name, "keys/")
		out = append(out, KeyInfo{ID: id, Current: id == r.keyID.String(), Created: kf.Created, Host: kf.Host, Username: kf.Username})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// RemoveKey deletes a key file. The key in use cannot be removed, so the
// repository never loses its last key through this call.
func (r *Repository) RemoveKey(ctx context.Context, prefix string) error {
	keys, err := r.ListKeys(ctx)
	if err != nil {
		return err
	}
	var match []KeyInfo
	for _, k := range keys {
		if strings.HasPrefix(k.ID, prefix) {
			match = append(match, k)
		}
	}
	switch {
	case len(match) == 0:
		return fmt.Errorf("remove key: no key %q", prefix)
	case len(match) > 1:
		return fmt.Errorf("remove key: prefix %q is ambiguous", prefix)
	case match[0].Current:
		return fmt.Errorf("remove key: %s is the key in use; open the repository with another key to remove it", match[0].ID[:8])
	}
	if err := r.store.Delete(ctx, "keys/"+match[0].ID); err != nil {
		return fmt.Errorf("remove key: %w", err)
	}
	return nil
}
