package transport

import (
	"strings"
	"testing"
)

func TestParseURLs(t *testing.T) {
	cases := []struct {
		in      string
		n       int
		check   func(t *testing.T, eps []Endpoint)
		wantErr string
	}{
		{in: "amqp://u:p@h:5672/%2F?heartbeat_interval=600", n: 1, check: func(t *testing.T, eps []Endpoint) {
			if !strings.Contains(eps[0].URL, "heartbeat=600") || strings.Contains(eps[0].URL, "heartbeat_interval") || eps[0].URI.Vhost != "/" {
				t.Errorf("URL %q vhost %q", eps[0].URL, eps[0].URI.Vhost)
			}
		}},
		{in: "amqp://u:p@h1/?allow_plaintext=1, amqps://u:p@h2/", n: 2, check: func(t *testing.T, eps []Endpoint) {
			if eps[0].URI.Host != "h1" || eps[1].URI.Scheme != "amqps" || eps[1].URI.Port != 5671 {
				t.Errorf("%+v", eps)
			}
		}},
		{in: "memory://", n: 1, check: func(t *testing.T, eps []Endpoint) {
			if !eps[0].Memory || eps[0].Name != "" {
				t.Errorf("%+v", eps[0])
			}
		}},
		{in: "memory://tests", n: 1, check: func(t *testing.T, eps []Endpoint) {
			if !eps[0].Memory || eps[0].Name != "tests" {
				t.Errorf("%+v", eps[0])
			}
		}},
		{in: "", wantErr: "MQURL is empty"},
		{in: "http://h/", wantErr: `unknown scheme "http"`},
		{in: "amqp://u:p@h/?sockettimeout=5", wantErr: "unsupported query parameter sockettimeout"},
		{in: "amqp://u:p@h/?heartbeat=5&heartbeat_interval=5", wantErr: "both heartbeat_interval and heartbeat"},
		{in: "amqp://u:s3cret@h:notaport/", wantErr: "not a valid URL"},
		{in: "amqp://u:pa,ss@h/", wantErr: "address 1"},
		{in: "u:s3cret@h", wantErr: "no scheme"},
		{in: "amqp://h1/,,amqp://h2/", wantErr: "address 2"},
		{in: "memory://a/b", wantErr: "memory://NAME"},
	}
	for _, c := range cases {
		eps, err := ParseURLs(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseURLs(%q) = %v, want error containing %q", c.in, err, c.wantErr)
			}
			for _, secret := range []string{"s3cret", "pa", ":p@"} {
				if err != nil && strings.Contains(err.Error(), secret) && strings.Contains(c.in, secret) && secret != "pa" {
					t.Errorf("ParseURLs(%q) error shows %q: %v", c.in, secret, err)
				}
			}
			if err != nil && strings.Contains(c.in, "pa,ss") && strings.Contains(err.Error(), "ss@") {
				t.Errorf("error shows part of a password: %v", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseURLs(%q): %v", c.in, err)
			continue
		}
		if len(eps) != c.n {
			t.Errorf("ParseURLs(%q) gave %d endpoints, want %d", c.in, len(eps), c.n)
			continue
		}
		c.check(t, eps)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:guest@localhost:5672/":                  "amqp://guest:xxxxx@localhost:5672/",
		"amqp://u:p@h1/,amqps://v:q@h2/":                      "amqp://u:xxxxx@h1/,amqps://v:xxxxx@h2/",
		"dial amqp://user@h1/ then amqp://u:s3cret@h2 failed": "dial amqp://user@h1/ then amqp://u:xxxxx@h2 failed",
		"amqp://u:pa,ss@h/":                                   "amqp://u:xxxxx@h/",
		"no url here":                                         "no url here",
		"memory://":                                           "memory://",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
