package omqs

import (
	"errors"
	"strings"
	"testing"
)

// TestConfigPikaURLParameters checks that an MQURL with the pika 0.10
// parameters the original accepts loads, with a warning per parameter that
// has no equivalent and for the heartbeat the broker caps.
func TestConfigPikaURLParameters(t *testing.T) {
	c := cfgMustParse(t, "[Global]\n"+
		"MQURL = amqp://u:s3cret@h:5672/%%2F?heartbeat_interval=600&connection_attempts=3&socket_timeout=5"+
		"&retry_delay=2&backpressure_detection=t&locale=en_US&frame_max=131072&channel_max=64"+
		"&blocked_connection_timeout=30&ssl_options=%%7B%%7D\n")
	want := []string{
		"test.cfg:2: [Global] MQURL: heartbeat_interval=600: the broker caps the heartbeat timeout at its own, 60 s by default on RabbitMQ, so it will be 60 s, not 600 s, unless the broker's heartbeat setting is raised",
		"test.cfg:2: [Global] MQURL: backpressure_detection is ignored: ",
		"test.cfg:2: [Global] MQURL: blocked_connection_timeout is ignored: ",
		"test.cfg:2: [Global] MQURL: connection_attempts is ignored: OMQS retries as RECONNECT_TIMES and RECONNECT_INTERVAL of [Global] say",
		"test.cfg:2: [Global] MQURL: retry_delay is ignored: OMQS retries as RECONNECT_TIMES and RECONNECT_INTERVAL of [Global] say",
		"test.cfg:2: [Global] MQURL: ssl_options is ignored: ",
	}
	if len(c.Warnings) != len(want) {
		t.Fatalf("warnings:\n%s", strings.Join(c.Warnings, "\n"))
	}
	for i, w := range want {
		if !strings.HasPrefix(c.Warnings[i], w) {
			t.Errorf("warning %d = %q, want %q...", i, c.Warnings[i], w)
		}
		if strings.Contains(c.Warnings[i], "s3cret") {
			t.Errorf("warning shows the password: %s", c.Warnings[i])
		}
	}
	if !strings.Contains(c.String(), "; warning: test.cfg:2: [Global] MQURL: heartbeat_interval=600") {
		t.Errorf("String() does not show the warnings:\n%s", c)
	}
	// Validate, which the constructors run, accepts the same URL.
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}

	// A parameter from [DEFAULT] is named on its own line.
	c = cfgMustParse(t, "[DEFAULT]\nQ=retry_delay=1\n[Global]\n\nMQURL=amqp://h/?%(q)s\n")
	if len(c.Warnings) != 1 || !strings.HasPrefix(c.Warnings[0], "test.cfg:5: [Global] MQURL: retry_delay is ignored") {
		t.Errorf("warnings: %q", c.Warnings)
	}
}

// TestConfigURLRefusals checks the form of LoadConfig's errors for an MQURL
// mixing TLS and plaintext addresses and for an unescaped password: file,
// line, key, the URL without its password, and what to do.
func TestConfigURLRefusals(t *testing.T) {
	for _, tt := range []struct{ name, file, want string }{
		{"mixed schemes", "[Global]\nMQURL=amqps://u:S3cretPw@a/, amqp://u:S3cretPw@b/",
			`test.cfg:2: MQURL: "amqps://u:xxxxx@a/, amqp://u:xxxxx@b/": address 2 is amqp:// (plaintext) while address 1 is amqps://: a connection could fall back from TLS to plaintext; use amqps:// for every address, or add allow_plaintext=1 to each amqp:// address that may be used`},
		{"unescaped password", "[Global]\nMQURL=amqp://guest:12/S3cretPw@h/",
			`test.cfg:2: MQURL: "amqp://guest:xxxxx@h/": the user information ends after the host: percent-encode a '/', '?' or '#' in the user name or password (as %2F, %3F, %23), and an at sign in the vhost (as %40)`},
		{"unescaped password, several addresses", "[Global]\nMQURL=amqps://a/, amqps://guest:12/S3cretPw@h/",
			`test.cfg:2: MQURL: "amqps://a/, amqps://guest:xxxxx@h/": address 2: the user information ends after the host: percent-encode`},
		{"not a URL", "[Global]\nMQURL=amqp://u:S3cretPw@h:notaport/",
			`test.cfg:2: MQURL: "amqp://u:xxxxx@h:notaport/": not a valid URL (check host and port; a user name or password holding one of : / ? # [ ] , % or an at sign must be percent-encoded)`},
		{"unknown parameter", "[Global]\nMQURL=amqp://u:S3cretPw@h/?retry=1",
			`test.cfg:2: MQURL: "amqp://u:xxxxx@h/?retry=1": unsupported query parameter retry (accepted: amqp091's heartbeat,`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig("test.cfg", []byte(tt.file))
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("got %v, want ErrInvalidConfig", err)
			}
			if want := ErrInvalidConfig.Error() + ": " + tt.want; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got  %q\nwant %q...", err, want)
			}
			if strings.Contains(err.Error(), "S3cretPw") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
	// Allowed explicitly, the mix loads.
	cfgMustParse(t, "[Global]\nMQURL=amqps://a/, amqp://b/?allow_plaintext=1\n")
}

// TestWithURLWarnings checks that WithURL refuses what LoadConfig refuses,
// without showing the password, and adds its warnings to the Config's.
func TestWithURLWarnings(t *testing.T) {
	s, err := buildSettings("NewManager", []Option{WithConfig(DefaultConfig()),
		WithURL("amqp://u:p@h/?retry_delay=1&heartbeat=120")})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.cfg.Warnings) != 2 || !strings.HasPrefix(s.cfg.Warnings[0], "WithURL: heartbeat=120: the broker caps") ||
		!strings.HasPrefix(s.cfg.Warnings[1], "WithURL: retry_delay is ignored") {
		t.Errorf("warnings: %q", s.cfg.Warnings)
	}
	for _, u := range []string{
		"amqp://guest:12?S3cretPw@h/",
		"amqp://guest:12/S3cretPw@h/",
		"amqps://u:S3cretPw@a/,amqp://u:S3cretPw@b/",
	} {
		_, err := NewManager(WithConfig(DefaultConfig()), WithURL(u))
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want ErrInvalidConfig", u, err)
			continue
		}
		if strings.Contains(err.Error(), "S3cretPw") {
			t.Errorf("error shows the password: %v", err)
		}
	}
}
