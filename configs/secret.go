package configs

import (
	"encoding/json"
	"log/slog"
)

const redacted = "[redacted]"

// Secret holds a password or key. It prints, logs and marshals as
// "[redacted]" so it cannot leak through fmt, slog, JSON or YAML output;
// only Reveal returns the value, and only code that uses the secret calls it.
type Secret struct {
	value string
}

// NewSecret wraps a value (used by tests and by code that builds configs).
func NewSecret(v string) Secret { return Secret{value: v} }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return s.value }

// IsSet reports whether a non-empty value is held.
func (s Secret) IsSet() bool { return s.value != "" }

func (s Secret) String() string {
	if s.value == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return `configs.Secret("` + s.String() + `")` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// MarshalText implements encoding.TextMarshaler (YAML and others).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
