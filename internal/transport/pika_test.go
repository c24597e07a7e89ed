package transport

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// TestParsePikaParameters checks that the query parameters pika 0.10's
// URLParameters accepts are either mapped or accepted with a warning naming
// them, and that anything else is still refused by name.
func TestParsePikaParameters(t *testing.T) {
	const all = "amqp://u:p@h/%2F?heartbeat_interval=600&connection_attempts=3&socket_timeout=0.25" +
		"&retry_delay=2&backpressure_detection=t&locale=en_US&frame_max=8192&channel_max=64" +
		"&blocked_connection_timeout=30&ssl_options=%7B%27ca_certs%27%3A%27%2Fx.pem%27%7D&ssl=f"
	eps, warns, err := ParseMQURL(all)
	if err != nil {
		t.Fatal(err)
	}
	ep := eps[0]
	if ep.FrameSize != 8192 || ep.Locale != "en_US" || ep.URI.ConnectionTimeout != 250 || ep.URI.ChannelMax != 64 || ep.URI.Vhost != "/" {
		t.Errorf("FrameSize %d, Locale %q, ConnectionTimeout %d ms, ChannelMax %d, Vhost %q",
			ep.FrameSize, ep.Locale, ep.URI.ConnectionTimeout, ep.URI.ChannelMax, ep.URI.Vhost)
	}
	for _, p := range []string{"heartbeat_interval", "socket_timeout", "connection_attempts", "retry_delay", "backpressure_detection",
		"blocked_connection_timeout", "ssl_options", "ssl=", "frame_max", "locale"} {
		if strings.Contains(ep.URL, p) {
			t.Errorf("URL %q still has %s", ep.URL, p)
		}
	}
	if !strings.Contains(ep.URL, "heartbeat=600") {
		t.Errorf("URL %q lacks heartbeat=600", ep.URL)
	}
	joined := strings.Join(warns, "\n")
	for _, want := range []string{
		"heartbeat_interval=600: ",
		"60 s",
		"connection_attempts is ignored: ",
		"retry_delay is ignored: ",
		"RECONNECT_TIMES",
		"backpressure_detection is ignored: ",
		"blocked_connection_timeout is ignored: ",
		"ssl_options is ignored: ",
		"cacertfile",
		"ssl is ignored: ",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("warnings lack %q:\n%s", want, joined)
		}
	}
	if len(warns) != 7 {
		t.Errorf("%d warnings, want 7 (one per ignored parameter and the heartbeat):\n%s", len(warns), joined)
	}
	for _, w := range warns {
		if strings.Contains(w, "/x.pem") {
			t.Errorf("warning quotes ssl_options' value: %s", w)
		}
	}

	// Nothing to say about parameters used as they are.
	if _, warns, err := ParseMQURL("amqp://u:p@h/?heartbeat_interval=30&socket_timeout=5&frame_max=131072&locale=en_US"); err != nil || len(warns) > 0 {
		t.Errorf("got %q, %v; want no warning", warns, err)
	}
	// Several addresses: a warning names its address.
	if _, warns, err := ParseMQURL("amqp://h1/, amqp://h2/?retry_delay=1"); err != nil || len(warns) != 1 || !strings.HasPrefix(warns[0], "address 2: retry_delay") {
		t.Errorf("got %q, %v", warns, err)
	}

	for _, tt := range []struct{ in, want string }{
		{"amqp://u:p@h/?nope=1", "unsupported query parameter nope"},
		{"amqp://u:p@h/?tcp_options=x", "unsupported query parameter tcp_options"},
		{"amqp://u:p@h/?frame_max=100", "frame_max: 100 is not a whole number from 4096 to 131072"},
		{"amqp://u:p@h/?frame_max=9000.5", "frame_max: 9000.5 is not a whole number from 4096 to 131072"},
		{"amqp://u:p@h/?socket_timeout=abc", "socket_timeout: abc is not a number of seconds above 0"},
		{"amqp://u:p@h/?socket_timeout=0", "socket_timeout: 0 is not a number of seconds above 0"},
		{"amqp://u:p@h/?socket_timeout=1e12", "socket_timeout: 1e12 is not a number of seconds above 0"},
		{"amqp://u:p@h/?socket_timeout=5&connection_timeout=5000", "both socket_timeout and connection_timeout are set"},
		{"amqp://u:p@h/?locale=", "locale: empty"},
	} {
		if _, _, err := ParseMQURL(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseMQURL(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

// TestDialPikaParameters checks on the broker that frame_max, locale and
// socket_timeout reach the connection, and that a heartbeat_interval above
// the broker's is capped by it, as the warning says.
func TestDialPikaParameters(t *testing.T) {
	u := brokertest.URL(t)
	eps, warns, err := ParseMQURL(u + "?frame_max=8192&locale=en_US&socket_timeout=5&heartbeat_interval=600&connection_attempts=3")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 2 {
		t.Errorf("warnings: %q", warns)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, eps[0], DialOptions{Name: brokertest.Unique("pika-params")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseDeadline(time.Now().Add(5 * time.Second))
	cfg := c.(amqpConn).Config
	if cfg.FrameSize != 8192 || cfg.Locale != "en_US" {
		t.Errorf("FrameSize %d, Locale %q; want 8192, en_US", cfg.FrameSize, cfg.Locale)
	}
	if cfg.Heartbeat <= 0 || cfg.Heartbeat >= 600*time.Second {
		t.Errorf("heartbeat %v; want the broker's cap (60s by default), below the 600s asked", cfg.Heartbeat)
	}
}

// TestMixedSchemes checks that an MQURL listing amqps:// and amqp://
// addresses is refused unless each amqp:// address allows plaintext.
func TestMixedSchemes(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"amqps://u:s3cret@a/, amqp://u:s3cret@b/", "address 2 is amqp:// (plaintext) while address 1 is amqps://"},
		{"amqp://u:s3cret@a/,amqps://u:s3cret@b/", "address 1 is amqp:// (plaintext) while address 2 is amqps://"},
		{"amqps://a/,amqp://b/?allow_plaintext=1,amqp://c/", "address 3 is amqp://"},
		{"amqps://a/?allow_plaintext=1", "allow_plaintext applies to amqp:// addresses"},
		{"amqp://a/?allow_plaintext=maybe", "allow_plaintext: \"maybe\" is not 1, t, true, 0, f or false"},
		{"amqps://a/,amqp://b/?allow_plaintext=0", "address 2 is amqp://"},
	} {
		_, _, err := ParseMQURL(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseMQURL(%q) = %v, want an error containing %q", tt.in, err, tt.want)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error shows the password: %v", err)
		}
		if strings.Contains(tt.in, "s3cret") && !strings.Contains(err.Error(), "allow_plaintext=1") {
			t.Errorf("error %q does not say how to allow it", err)
		}
	}
	for _, ok := range []string{
		"amqps://a/,amqps://b/",
		"amqp://a/,amqp://b/",
		"amqps://a/,amqp://b/?allow_plaintext=1",
		"amqp://b/?allow_plaintext=true,amqps://a/",
		"amqp://a/?allow_plaintext=t",
	} {
		eps, _, err := ParseMQURL(ok)
		if err != nil {
			t.Errorf("ParseMQURL(%q): %v", ok, err)
			continue
		}
		for _, ep := range eps {
			if strings.Contains(ep.URL, "allow_plaintext") {
				t.Errorf("URL %q passes allow_plaintext on to amqp091", ep.URL)
			}
		}
	}
}

// TestUnescapedPassword checks that a password holding an unescaped '/',
// '?' or '#' (so that the host, port and vhost come from the wrong text) is
// refused with advice to percent-encode it, and never shown.
func TestUnescapedPassword(t *testing.T) {
	const pw = "S3cretPw"
	for _, in := range []string{
		"amqp://guest:12/" + pw + "@h/",
		"amqp://guest:12/" + pw + "@h",
		"amqps://guest:12/" + pw + "@h:5671/%2F",
		"amqp://guest:12?" + pw + "@h/",
		"amqp://guest:12#" + pw + "@h/",
		"amqp://a/, amqp://guest:12/" + pw + "@h/",
	} {
		_, _, err := ParseMQURL(in)
		if err == nil {
			t.Errorf("ParseMQURL(%q): no error", in)
			continue
		}
		if !strings.Contains(err.Error(), "percent-encode") {
			t.Errorf("ParseMQURL(%q) = %v, want advice to percent-encode", in, err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error shows the password: %v", err)
		}
	}
	// Redact hides the whole password of such a URL too.
	for in, want := range map[string]string{
		"amqp://guest:12/" + pw + "@h/":            "amqp://guest:xxxxx@h/",
		"amqp://guest:12?" + pw + "@h/":            "amqp://guest:xxxxx@h/",
		"amqp://guest:12#" + pw + "@h/":            "amqp://guest:xxxxx@h/",
		"dial amqp://guest:12/" + pw + "@h/: oops": "dial amqp://guest:xxxxx@h/: oops",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	// An '@' in the vhost itself is written %40.
	eps, _, err := ParseMQURL("amqp://guest:12%2F" + pw + "@h/team%40site")
	if err != nil {
		t.Fatal(err)
	}
	if eps[0].URI.Host != "h" || eps[0].URI.Password != "12/"+pw || eps[0].URI.Vhost != "team@site" {
		t.Errorf("host %q, vhost %q", eps[0].URI.Host, eps[0].URI.Vhost)
	}
}
