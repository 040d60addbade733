package configexport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/vigilops/vigil/configs"
)

// HTTPSource fetches an export over HTTP(S): a controller's REST API, a
// firewall's backup endpoint.
type HTTPSource struct {
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
	// Headers may carry secrets: each value can come from value_file.
	Headers []Header `yaml:"headers"`
	// BearerToken sends "Authorization: Bearer <token>".
	BearerToken configs.Secret `yaml:"bearer_token"`
	// User and Password send HTTP basic authentication.
	User     string         `yaml:"user"`
	Password configs.Secret `yaml:"password"`
	// Body is sent as the request body (a login document, a query).
	Body        configs.Secret `yaml:"body"`
	ContentType string         `yaml:"content_type"`
	// CAFile trusts a private CA; PinSHA256 instead accepts exactly the
	// certificate with that SHA-256 fingerprint (hex, colons allowed), for
	// devices with self-signed certificates.
	CAFile    string `yaml:"ca_file"`
	PinSHA256 string `yaml:"pin_sha256"`
	// Format is json (pretty-printed with sorted keys so diffs are stable),
	// text, or auto (json when the response says so; the default).
	Format string `yaml:"format"`
}

// Header is one request header.
type Header struct {
	Name  string         `yaml:"name"`
	Value configs.Secret `yaml:"value"`
}

func (h HTTPSource) isZero() bool { return h.URL == "" && h.Method == "" && len(h.Headers) == 0 }

type httpSource struct {
	h   HTTPSource
	pin []byte
}

var hexPin = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

func newHTTP(h HTTPSource) (source, error) {
	u, err := url.Parse(h.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("url %q: want http(s)://host/path", h.URL)
	}
	if h.Method == "" {
		h.Method = http.MethodGet
		if h.Body.IsSet() {
			h.Method = http.MethodPost
		}
	}
	h.Method = strings.ToUpper(h.Method)
	switch h.Format {
	case "":
		h.Format = "auto"
	case "auto", "json", "text":
	default:
		return nil, fmt.Errorf("format must be auto, json or text, got %q", h.Format)
	}
	s := &httpSource{h: h}
	if h.PinSHA256 != "" {
		pin := strings.ReplaceAll(h.PinSHA256, ":", "")
		if !hexPin.MatchString(pin) {
			return nil, errors.New("pin_sha256: want the certificate's SHA-256 fingerprint as 64 hex digits (colons allowed)")
		}
		s.pin, _ = hex.DecodeString(pin)
		if h.CAFile != "" {
			return nil, errors.New("set ca_file or pin_sha256, not both")
		}
	}
	if s.pin != nil && u.Scheme != "https" {
		return nil, errors.New("pin_sha256 needs an https url")
	}
	for i, hd := range h.Headers {
		if hd.Name == "" || strings.ContainsAny(hd.Name, " :\r\n") {
			return nil, fmt.Errorf("headers[%d]: invalid header name %q", i, hd.Name)
		}
	}
	if h.Password.IsSet() && h.User == "" {
		return nil, errors.New("password needs user")
	}
	return s, nil
}

// client builds the HTTP client; CA files are read here, at run time.
func (s *httpSource) client() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case s.h.CAFile != "":
		pem, err := os.ReadFile(s.h.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificates", s.h.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	case s.pin != nil:
		// The pin replaces chain verification: exactly this certificate is
		// trusted, whoever signed it and whatever name it carries.
		tr.TLSClientConfig.InsecureSkipVerify = true
		tr.TLSClientConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server sent no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if !bytes.Equal(sum[:], s.pin) {
				return fmt.Errorf("certificate pin mismatch: server's certificate has SHA-256 %s, pinned %s", hex.EncodeToString(sum[:]), hex.EncodeToString(s.pin))
			}
			return nil
		}
	}
	// Redirects could carry the Authorization header elsewhere; refuse them.
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

func (s *httpSource) export(ctx context.Context, out *capture, log *slog.Logger, red *redactor) error {
	h := s.h
	cl, err := s.client()
	if err != nil {
		return fmt.Errorf("http %s: %w", h.URL, err)
	}
	defer cl.CloseIdleConnections()
	var body io.Reader
	if h.Body.IsSet() {
		body = strings.NewReader(h.Body.Reveal())
	}
	req, err := http.NewRequestWithContext(ctx, h.Method, h.URL, body)
	if err != nil {
		return fmt.Errorf("http %s: %w", h.URL, err)
	}
	if h.ContentType != "" {
		req.Header.Set("Content-Type", h.ContentType)
	}
	for _, hd := range h.Headers {
		req.Header.Set(hd.Name, hd.Value.Reveal())
	}
	if h.BearerToken.IsSet() {
		req.Header.Set("Authorization", "Bearer "+h.BearerToken.Reveal())
	}
	if h.User != "" {
		req.SetBasicAuth(h.User, h.Password.Reveal())
	}
	log.Debug("http export", "method", h.Method, "url", h.URL)
	resp, err := cl.Do(req)
	if err != nil {
		return fmt.Errorf("http %s %s: %w", h.Method, h.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("http %s %s: status %s: %s", h.Method, h.URL, resp.Status, red.Redact(strings.TrimSpace(string(snippet))))
	}
	format := h.Format
	if format == "auto" {
		format = "text"
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "application/json" || strings.HasSuffix(mt, "+json") {
			format = "json"
		}
	}
	if format == "text" {
		if _, err := io.Copy(out, io.LimitReader(resp.Body, out.max+1)); err != nil {
			return fmt.Errorf("http %s: read body: %w", h.URL, err)
		}
		return nil
	}
	// JSON is re-encoded, so read it whole, but never more than the cap.
	raw, err := io.ReadAll(io.LimitReader(resp.Body, out.max+1))
	if err != nil {
		return fmt.Errorf("http %s: read body: %w", h.URL, err)
	}
	if int64(len(raw)) > out.max {
		return fmt.Errorf("http %s: JSON response is larger than max_output (%d bytes); raise max_output", h.URL, out.max)
	}
	pretty, err := prettyJSON(raw)
	if err != nil {
		return fmt.Errorf("http %s: %w", h.URL, err)
	}
	_, _ = out.Write(pretty)
	return nil
}

// prettyJSON re-encodes a document indented with sorted object keys
// (encoding/json sorts map keys); numbers keep their exact text.
func prettyJSON(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("response is not JSON: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return buf.Bytes(), nil
}
