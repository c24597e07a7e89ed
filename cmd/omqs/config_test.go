package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const configFile = `[DEFAULT]
exchange_durable = no

[Global]
; the broker
MQURL = amqp://app:s3cret@mq1.example:5672/%%2F
RECONNECT_TIMES = 3
COLOUR = blue

[EventWorker]
KEYS = a, b
`

// setting returns the line of the config output for key in section.
func setting(t *testing.T, out, section, key string) []string {
	t.Helper()
	in := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "[") {
			in = line == "["+section+"]"
			continue
		}
		if f := strings.Fields(line); in && len(f) >= 3 && f[0] == key {
			return f
		}
	}
	t.Fatalf("no %s in [%s]:\n%s", key, section, out)
	return nil
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "app.cfg", configFile)

	r := runOmqs(t, runOpts{}, "config", "--file", path)
	wantCode(t, r, 0)
	wantNotContains(t, "config", r.stdout+r.stderr, "s3cret")
	wantContains(t, "config", r.stdout, "read from "+path+" (named by --file)")
	tests := []struct{ section, key, value, origin string }{
		{"Global", "MQURL", "amqp://app:xxxxx@mq1.example:5672/%2F", path + ":6"},
		{"Global", "RECONNECT_TIMES", "3", path + ":7"},
		{"Global", "BUFFER_SIZE", "16384", "default"},
		{"EventWorker", "KEYS", "a,", path + ":11"},
		{"EventWorker", "EXCHANGE_DURABLE", "false", path + ":2"}, // from [DEFAULT]
		{"EventWorker", "QUEUE", "omqs.queue.event", "default"},
		{"LogWorker", "QUEUE", `""`, "default"},
	}
	for _, tt := range tests {
		f := setting(t, r.stdout, tt.section, tt.key)
		if f[1] != tt.value || f[len(f)-1] != tt.origin {
			t.Errorf("[%s] %s: %q, want value %q from %q", tt.section, tt.key, f, tt.value, tt.origin)
		}
	}
	wantContains(t, "warnings", r.stdout, "; warning: "+path+":8: unknown key [Global] COLOUR (ignored)")

	// --url and $OMQS_MQURL override the file, and say so.
	r = runOmqs(t, runOpts{env: []string{"OMQS_MQURL=memory://env"}}, "config", "--config", path)
	wantCode(t, r, 0)
	if f := setting(t, r.stdout, "Global", "MQURL"); f[1] != "memory://env" || f[2] != "$OMQS_MQURL" {
		t.Errorf("MQURL from the environment: %q", f)
	}
	r = runOmqs(t, runOpts{env: []string{"OMQS_MQURL=memory://env"}}, "--url", "amqp://u:hidden@h/", "config", "--config", path)
	wantCode(t, r, 0)
	wantNotContains(t, "config", r.stdout, "hidden")
	if f := setting(t, r.stdout, "Global", "MQURL"); f[1] != "amqp://u:xxxxx@h/" || f[2] != "--url" {
		t.Errorf("MQURL from --url: %q", f)
	}

	// $OMQS_CONFIG, then ./OMQS.cfg, then the defaults.
	r = runOmqs(t, runOpts{env: []string{"OMQS_CONFIG=" + path}}, "config")
	wantCode(t, r, 0)
	wantContains(t, "config", r.stdout, "(named by $OMQS_CONFIG)")
	writeFile(t, dir, "OMQS.cfg", "[Global]\nBUFFER_SIZE = 7\n")
	r = runOmqs(t, runOpts{dir: dir}, "config")
	wantCode(t, r, 0)
	if f := setting(t, r.stdout, "Global", "BUFFER_SIZE"); f[1] != "7" || f[2] != "OMQS.cfg:2" {
		t.Errorf("./OMQS.cfg: %q", f)
	}
	r = runOmqs(t, runOpts{}, "config")
	wantCode(t, r, 0)
	wantContains(t, "config", r.stdout, "; built-in defaults")
	if m := regexp.MustCompile(`(?m)^[A-Z_]+\s+.*\s(\S+)$`).FindAllStringSubmatch(r.stdout, -1); len(m) == 0 {
		t.Fatalf("no settings:\n%s", r.stdout)
	} else {
		for _, s := range m {
			if s[1] != "default" {
				t.Errorf("built-in defaults: %q does not come from the default", s[0])
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		file string // content of bad.cfg; "" for none
		args []string
		env  []string
		want string
	}{
		{"missing file", "", []string{"config", "--file", filepath.Join(dir, "nope.cfg")}, nil, "nope.cfg (named by --file) does not exist"},
		{"missing file from env", "", []string{"config"}, []string{"OMQS_CONFIG=" + filepath.Join(dir, "nope.cfg")}, "(named by $OMQS_CONFIG) does not exist"},
		{"bad number", "[Global]\n\nRECONNECT_TIMES = abc\n", nil, nil, `bad.cfg:3: RECONNECT_TIMES: "abc" is not a whole number`},
		{"bad URL in file", "[Global]\nMQURL = http://u:topsecret@h/\n", nil, nil, "bad.cfg:2: MQURL:"},
		{"unknown section", "[Globl]\nX = 1\n", nil, nil, "bad.cfg:1: unknown section [Globl]"},
		{"bad URL flag", "", []string{"--url", "http://u:topsecret@h/", "config"}, nil, `--url: "http://u:xxxxx@h/": unknown scheme "http"`},
		{"bad URL env", "", []string{"config"}, []string{"OMQS_MQURL=amqp://u:topsecret@h/?frobnicate=1"}, "$OMQS_MQURL:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = []string{"config", "--file", writeFile(t, t.TempDir(), "bad.cfg", tt.file)}
			}
			r := runOmqs(t, runOpts{env: tt.env}, args...)
			wantCode(t, r, 1)
			wantContains(t, "standard error", r.stderr, "omqs config: ", tt.want)
			wantNotContains(t, "output", r.stdout+r.stderr, "topsecret", "omqs: omqs")
			if n := strings.Count(r.stderr, "\n"); n != 1 {
				t.Errorf("%d lines on standard error, want one:\n%s", n, r.stderr)
			}
		})
	}
}
