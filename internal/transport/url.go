package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/omqs-go/omqs/internal/safefile"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Endpoint is one broker address of an MQURL.
type Endpoint struct {
	// URL is the address as amqp091 takes it (pika parameters translated),
	// or "memory://NAME".
	URL string
	// Memory is true for the in-process broker; Name then names it ("" is the
	// process's default broker).
	Memory bool
	Name   string
	// URI is the parsed amqp:// or amqps:// address.
	URI amqp.URI
}

// String returns the address with its password replaced by "xxxxx".
func (e Endpoint) String() string { return Redact(e.URL) }

// supported query parameters of an amqp URL, after translation.
var supportedParams = map[string]bool{
	"heartbeat":              true,
	"connection_timeout":     true,
	"channel_max":            true,
	"auth_mechanism":         true,
	"certfile":               true,
	"keyfile":                true,
	"cacertfile":             true,
	"server_name_indication": true,
}

// pikaParams are the pika URL parameters that have an amqp091 equivalent.
var pikaParams = map[string]string{
	"heartbeat_interval": "heartbeat",
}

// ParseURLs parses an MQURL: one or more broker URLs separated by commas.
// pika's heartbeat_interval is renamed heartbeat; a query parameter amqp091
// would ignore is an error naming it. Errors never contain a password.
func ParseURLs(s string) ([]Endpoint, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("MQURL is empty")
	}
	var eps []Endpoint
	parts := strings.Split(s, ",")
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("MQURL: address %d of %q is empty", i+1, Redact(s))
		}
		ep, err := parseOne(part)
		if err != nil {
			if len(parts) > 1 {
				// A part's text may hold a piece of a password split at a
				// comma: name the address by its position only.
				return nil, fmt.Errorf("MQURL %q: address %d: %w", Redact(s), i+1, err)
			}
			if strings.Contains(part, "@") && !strings.Contains(part, "://") {
				return nil, fmt.Errorf("MQURL: %w", err)
			}
			return nil, fmt.Errorf("MQURL %q: %w", Redact(part), err)
		}
		eps = append(eps, ep)
	}
	return eps, nil
}

func parseOne(raw string) (Endpoint, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Endpoint{}, errors.New("no scheme (want amqp://, amqps:// or memory://)")
	}
	switch strings.ToLower(scheme) {
	case "memory":
		name := strings.TrimSuffix(rest, "/")
		if strings.ContainsAny(name, "/?#@") {
			return Endpoint{}, errors.New("a memory URL is memory:// or memory://NAME")
		}
		return Endpoint{URL: "memory://" + name, Memory: true, Name: name}, nil
	case "amqp", "amqps":
	default:
		return Endpoint{}, fmt.Errorf("unknown scheme %q (want amqp, amqps or memory)", scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the text, password included: say what to fix instead.
		return Endpoint{}, errors.New("not a valid URL (check host and port; a user name or password holding one of : / ? # [ ] @ , % must be percent-encoded)")
	}
	q := u.Query()
	for from, to := range pikaParams {
		if v, ok := q[from]; ok {
			if _, dup := q[to]; dup {
				return Endpoint{}, fmt.Errorf("both %s and %s are set", from, to)
			}
			q[to] = v
			delete(q, from)
		}
	}
	var unknown []string
	for k := range q {
		if !supportedParams[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Endpoint{}, fmt.Errorf("unsupported query parameter %s (supported: heartbeat or heartbeat_interval, connection_timeout, channel_max, auth_mechanism, certfile, keyfile, cacertfile, server_name_indication)",
			strings.Join(unknown, ", "))
	}
	u.RawQuery = q.Encode()
	norm := u.String()
	uri, err := amqp.ParseURI(norm)
	if err != nil {
		return Endpoint{}, errors.New(redactErr(err, raw))
	}
	if err := checkTLSFiles(uri); err != nil {
		return Endpoint{}, err
	}
	return Endpoint{URL: norm, URI: uri}, nil
}

// redactErr returns err's text with raw's password removed.
func redactErr(err error, raw string) string {
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
			if esc := url.QueryEscape(pw); esc != pw {
				msg = strings.ReplaceAll(msg, esc, "xxxxx")
			}
		}
	}
	if strings.Contains(msg, "@") {
		msg = Redact(msg)
	}
	return msg
}

// MaxPEMSize is the largest certificate or key file read, in bytes: room
// for a system's whole CA bundle (about 200 KiB), far less than would strain
// memory.
const MaxPEMSize = 1 << 20

// checkTLSFiles loads the certificate files an amqps URL names, so that a
// missing or bad file is reported when the URL is read, not at each dial.
func checkTLSFiles(u amqp.URI) error {
	if u.Scheme != "amqps" {
		if u.CACertFile != "" || u.CertFile != "" || u.KeyFile != "" {
			return errors.New("cacertfile, certfile and keyfile need an amqps:// URL")
		}
		return nil
	}
	if (u.CertFile == "") != (u.KeyFile == "") {
		return errors.New("certfile and keyfile go together: give both or neither")
	}
	_, err := tlsConfigFor(u)
	return err
}

// tlsConfigFor builds the TLS configuration an amqps URL describes, as
// amqp091 would, but reads its files with safefile: only regular files, at
// most MaxPEMSize bytes each. Without cacertfile the system's roots are used.
func tlsConfigFor(u amqp.URI) (*tls.Config, error) {
	cfg := &tls.Config{ServerName: u.ServerName, MinVersion: tls.VersionTLS12}
	if u.CACertFile != "" {
		data, err := safefile.Read(u.CACertFile, MaxPEMSize)
		if err != nil {
			return nil, fmt.Errorf("cacertfile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("cacertfile %s: no PEM certificate in it", u.CACertFile)
		}
		cfg.RootCAs = pool
	}
	if u.CertFile != "" && u.KeyFile != "" {
		cert, err := safefile.Read(u.CertFile, MaxPEMSize)
		if err != nil {
			return nil, fmt.Errorf("certfile: %w", err)
		}
		key, err := safefile.Read(u.KeyFile, MaxPEMSize)
		if err != nil {
			return nil, fmt.Errorf("keyfile: %w", err)
		}
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("certfile/keyfile (%s, %s): %w", u.CertFile, u.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
