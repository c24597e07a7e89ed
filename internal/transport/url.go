package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/omqs-go/omqs/internal/safefile"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Endpoint is one broker address of an MQURL.
type Endpoint struct {
	// URL is the address as amqp091 takes it (pika parameters translated or
	// removed), or "memory://NAME".
	URL string
	// Memory is true for the in-process broker; Name then names it ("" is the
	// process's default broker).
	Memory bool
	Name   string
	// URI is the parsed amqp:// or amqps:// address.
	URI amqp.URI
	// FrameSize is the largest frame to ask the broker for (pika's
	// frame_max); 0 leaves amqp091's default, 131072 bytes.
	FrameSize int
	// Locale is sent to the broker (pika's locale); "" leaves amqp091's
	// default, en_US.
	Locale string

	// allowPlaintext is set by allow_plaintext=1 on an amqp:// address.
	allowPlaintext bool
}

// String returns the address with its password replaced by "xxxxx".
func (e Endpoint) String() string { return Redact(e.URL) }

// amqpParams are the query parameters amqp091 reads from a URL; they are
// passed on as they are.
var amqpParams = map[string]bool{
	"heartbeat":              true,
	"connection_timeout":     true,
	"channel_max":            true,
	"auth_mechanism":         true,
	"certfile":               true,
	"keyfile":                true,
	"cacertfile":             true,
	"server_name_indication": true,
}

// pikaIgnored are the parameters of pika 0.10's URLParameters that have no
// equivalent here, each with the reason it is ignored. The others are
// translated: heartbeat_interval, socket_timeout, frame_max, locale, and
// channel_max, which amqp091 reads as it is.
var pikaIgnored = map[string]string{
	"connection_attempts":        "OMQS retries as RECONNECT_TIMES and RECONNECT_INTERVAL of [Global] say",
	"retry_delay":                "OMQS retries as RECONNECT_TIMES and RECONNECT_INTERVAL of [Global] say",
	"backpressure_detection":     "amqp091 has no such detection; OMQS logs the broker's connection.blocked notices and pauses publishing until the broker unblocks",
	"blocked_connection_timeout": "a blocked connection is kept until the broker unblocks it; publishing pauses meanwhile and messages wait in the buffers",
	"ssl_options":                "name TLS files with cacertfile, certfile, keyfile and server_name_indication, or use WithTLSConfig; without them the broker's certificate is checked against the system's roots",
	"ssl":                        "the scheme chooses TLS: amqps:// is TLS, amqp:// is plaintext",
}

const (
	// brokerHeartbeat is RabbitMQ's default heartbeat timeout in seconds:
	// a client asking for more gets this.
	brokerHeartbeat = 60
	// Frame sizes pika 0.10 accepts for frame_max.
	minFrameMax, maxFrameMax = 4096, 131072
	// maxSocketTimeout bounds socket_timeout (seconds) so that amqp091's
	// connection_timeout, in milliseconds, fits an int32.
	maxSocketTimeout = math.MaxInt32 / 1000
)

const paramList = "amqp091's heartbeat, connection_timeout, channel_max, auth_mechanism, certfile, keyfile, cacertfile, server_name_indication; " +
	"pika 0.10's heartbeat_interval, socket_timeout, frame_max, locale, connection_attempts, retry_delay, backpressure_detection, blocked_connection_timeout, ssl, ssl_options; " +
	"and allow_plaintext"

// ParseURLs parses an MQURL as ParseMQURL does, dropping its warnings.
func ParseURLs(s string) ([]Endpoint, error) {
	eps, _, err := ParseMQURL(s)
	return eps, err
}

// ParseMQURL parses an MQURL: one or more broker URLs separated by commas.
//
// Query parameters amqp091 reads are kept. Those of pika 0.10's
// URLParameters are translated where amqp091 has an equivalent
// (heartbeat_interval becomes heartbeat, socket_timeout in seconds becomes
// connection_timeout in milliseconds, frame_max and locale go to
// Endpoint.FrameSize and Endpoint.Locale) and otherwise removed, with a
// warning saying why. A heartbeat above RabbitMQ's default of 60 s is
// warned about too: the broker caps it. Any other parameter is an error
// naming it.
//
// An MQURL listing both amqps:// and amqp:// addresses is an error, since a
// connection could fall back from TLS to plaintext, unless each amqp://
// address carries allow_plaintext=1. A user name or password holding an
// unescaped '/', '?' or '#' is an error (the host, port and vhost would be
// read from the wrong text) that says to percent-encode it.
//
// Warnings name the address by its position when there are several.
// Neither errors nor warnings contain a password.
func ParseMQURL(s string) ([]Endpoint, []string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil, errors.New("MQURL is empty")
	}
	var (
		eps   []Endpoint
		warns []string
	)
	parts := strings.Split(s, ",")
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, nil, fmt.Errorf("MQURL: address %d of %q is empty", i+1, Redact(s))
		}
		ep, w, err := parseOne(part)
		if err != nil {
			if len(parts) > 1 {
				// A part's text may hold a piece of a password split at a
				// comma: name the address by its position only.
				return nil, nil, fmt.Errorf("MQURL %q: address %d: %w", Redact(s), i+1, err)
			}
			if strings.Contains(part, "@") && !strings.Contains(part, "://") {
				return nil, nil, fmt.Errorf("MQURL: %w", err)
			}
			return nil, nil, fmt.Errorf("MQURL %q: %w", Redact(part), err)
		}
		for _, text := range w {
			if len(parts) > 1 {
				text = fmt.Sprintf("address %d: %s", i+1, text)
			}
			warns = append(warns, text)
		}
		eps = append(eps, ep)
	}
	if err := checkSchemes(eps); err != nil {
		return nil, nil, fmt.Errorf("MQURL %q: %w", Redact(s), err)
	}
	return eps, warns, nil
}

// checkSchemes refuses amqp:// addresses beside amqps:// ones, unless they
// carry allow_plaintext=1.
func checkSchemes(eps []Endpoint) error {
	tlsAt := -1
	for i, ep := range eps {
		if !ep.Memory && ep.URI.Scheme == "amqps" {
			tlsAt = i
			break
		}
	}
	if tlsAt < 0 {
		return nil
	}
	for i, ep := range eps {
		if !ep.Memory && ep.URI.Scheme == "amqp" && !ep.allowPlaintext {
			return fmt.Errorf("address %d is amqp:// (plaintext) while address %d is amqps://: a connection could fall back from TLS to plaintext; "+
				"use amqps:// for every address, or add allow_plaintext=1 to each amqp:// address that may be used", i+1, tlsAt+1)
		}
	}
	return nil
}

func parseOne(raw string) (Endpoint, []string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return Endpoint{}, nil, errors.New("no scheme (want amqp://, amqps:// or memory://)")
	}
	switch strings.ToLower(scheme) {
	case "memory":
		name := strings.TrimSuffix(rest, "/")
		if strings.ContainsAny(name, "/?#@") {
			return Endpoint{}, nil, errors.New("a memory URL is memory:// or memory://NAME")
		}
		return Endpoint{URL: "memory://" + name, Memory: true, Name: name}, nil, nil
	case "amqp", "amqps":
	default:
		return Endpoint{}, nil, fmt.Errorf("unknown scheme %q (want amqp, amqps or memory)", scheme)
	}
	if err := checkCutShort(rest); err != nil {
		return Endpoint{}, nil, err
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the text, password included: say what to fix
		// instead (with no '@', which Redact would take for the URL's).
		return Endpoint{}, nil, errors.New("not a valid URL (check host and port; a user name or password holding one of : / ? # [ ] , % or an at sign must be percent-encoded)")
	}
	var ep Endpoint
	q := u.Query()
	warns, err := translatePika(q, &ep, strings.ToLower(scheme))
	if err != nil {
		return Endpoint{}, nil, err
	}
	var unknown []string
	for k := range q {
		if !amqpParams[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return Endpoint{}, nil, fmt.Errorf("unsupported query parameter %s (accepted: %s)", clip(strings.Join(unknown, ", ")), paramList)
	}
	u.RawQuery = q.Encode()
	norm := u.String()
	uri, err := amqp.ParseURI(norm)
	if err != nil {
		return Endpoint{}, nil, errors.New(redactErr(err, raw))
	}
	if err := checkTLSFiles(uri); err != nil {
		return Endpoint{}, nil, err
	}
	ep.URL, ep.URI = norm, uri
	return ep, warns, nil
}

// checkCutShort refuses an '@' after the host in rest, the text after
// "://": in the path (the vhost), the fragment or a query parameter's name.
// It means that the user information ended early, at a '/', '?' or '#' of an
// unescaped password, as in amqp://guest:12/Secret@h/ (host guest, port 12,
// vhost "Secret@h/").
func checkCutShort(rest string) error {
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		return nil
	}
	path, frag, _ := strings.Cut(rest[end:], "#")
	path, query, _ := strings.Cut(path, "?")
	bad := strings.Contains(path, "@") || strings.Contains(frag, "@")
	for _, kv := range strings.Split(query, "&") {
		k, _, _ := strings.Cut(kv, "=")
		bad = bad || strings.Contains(k, "@")
	}
	if bad {
		// No '@' in the message: Redact would take it for the URL's.
		return errors.New("the user information ends after the host: percent-encode a '/', '?' or '#' in the user name or password (as %2F, %3F, %23), and an at sign in the vhost (as %40)")
	}
	return nil
}

// translatePika rewrites q, the query of an amqp URL with the given scheme,
// for amqp091: pika 0.10's parameters are translated into q's or ep's
// fields, or removed with a warning; allow_plaintext is read into ep.
func translatePika(q url.Values, ep *Endpoint, scheme string) ([]string, error) {
	var warns []string
	if v, ok := q["heartbeat_interval"]; ok {
		if _, dup := q["heartbeat"]; dup {
			return nil, errors.New("both heartbeat_interval and heartbeat are set")
		}
		q["heartbeat"] = v
		delete(q, "heartbeat_interval")
		if n, err := strconv.ParseUint(q.Get("heartbeat"), 10, 16); err == nil && n > brokerHeartbeat {
			warns = append(warns, fmt.Sprintf("heartbeat_interval=%d: the broker caps the heartbeat timeout at its own, %d s by default on RabbitMQ, so it will be %d s, not %d s, unless the broker's heartbeat setting is raised",
				n, brokerHeartbeat, brokerHeartbeat, n))
		}
	} else if n, err := strconv.ParseUint(q.Get("heartbeat"), 10, 16); err == nil && n > brokerHeartbeat {
		warns = append(warns, fmt.Sprintf("heartbeat=%d: the broker caps the heartbeat timeout at its own, %d s by default on RabbitMQ, so it will be %d s, not %d s, unless the broker's heartbeat setting is raised",
			n, brokerHeartbeat, brokerHeartbeat, n))
	}
	if _, ok := q["socket_timeout"]; ok {
		if _, dup := q["connection_timeout"]; dup {
			return nil, errors.New("both socket_timeout and connection_timeout are set")
		}
		v := q.Get("socket_timeout")
		secs, err := strconv.ParseFloat(v, 64)
		if err != nil || !(secs > 0) || secs > maxSocketTimeout {
			return nil, fmt.Errorf("socket_timeout: %s is not a number of seconds above 0 and at most %d", clip(v), maxSocketTimeout)
		}
		q.Set("connection_timeout", strconv.Itoa(int(math.Ceil(secs*1000))))
		delete(q, "socket_timeout")
	}
	if _, ok := q["frame_max"]; ok {
		v := q.Get("frame_max")
		n, err := strconv.Atoi(v)
		if err != nil || n < minFrameMax || n > maxFrameMax {
			return nil, fmt.Errorf("frame_max: %s is not a whole number from %d to %d", clip(v), minFrameMax, maxFrameMax)
		}
		ep.FrameSize = n
		delete(q, "frame_max")
	}
	if _, ok := q["locale"]; ok {
		v := q.Get("locale")
		if v == "" || len(v) > 255 {
			return nil, errors.New("locale: empty or longer than 255 bytes; want a locale such as en_US")
		}
		ep.Locale = v
		delete(q, "locale")
	}
	if _, ok := q["allow_plaintext"]; ok {
		v := q.Get("allow_plaintext")
		switch strings.ToLower(v) {
		case "1", "t", "true":
			ep.allowPlaintext = true
		case "0", "f", "false":
		default:
			return nil, fmt.Errorf("allow_plaintext: %q is not 1, t, true, 0, f or false", clip(v))
		}
		if scheme != "amqp" {
			return nil, errors.New("allow_plaintext applies to amqp:// addresses only")
		}
		delete(q, "allow_plaintext")
	}
	names := make([]string, 0, len(pikaIgnored))
	for name := range pikaIgnored {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, ok := q[name]; !ok {
			continue
		}
		text := name + " is ignored: " + pikaIgnored[name]
		if name == "ssl" && scheme == "amqp" {
			text += " (this address is amqp://)"
		}
		warns = append(warns, text)
		delete(q, name)
	}
	return warns, nil
}

// clip shortens a query parameter's text for a message.
func clip(s string) string {
	const max = 60
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
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
