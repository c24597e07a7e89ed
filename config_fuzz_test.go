package omqs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/omqs-go/omqs/internal/pyini"
)

// FuzzParseConfig feeds arbitrary bytes to parseConfig: it must return a
// valid Config or an ErrInvalidConfig error, never panic or hang, and the
// line scanner must never disagree with ini.v1.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "config", "*.cfg"))
	for _, path := range append(files, "OMQS.cfg") {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"[Global]\nMQURL=amqp://u:p@h:5672/%%2F?heartbeat_interval=600\n",
		"[Log]\nFORMAT=('%%(levelname) -5s %%(message)s')\nLEVEL=warn\nROTATING_TIME=w3\n",
		"[DEFAULT]\nQ=omqs\n[EventConsumer]\nQUEUE=%(q)s.events\nKEYS=a,\n  b\n",
		"[Log]\nA=%(b)s\nB=%(a)s\nFOLDER=%(a)s\n",
		"[Global]\nX=%(y)s%(y)s\nY=%(z)s%(z)s\nZ=1\nMQURL=memory://%(x)s\n",
		"[AsyncPublisher]\nROUTING_KEY=a\nrouting_keys=b\n",
		"\xef\xbb\xbf[global]\r\n- = 1\r\nbuffer_size : 2\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseConfig("fuzz.cfg", data)
		if err != nil {
			if c != nil {
				t.Fatalf("both a Config and an error: %v", err)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			if errors.Is(err, pyini.ErrMismatch) {
				t.Fatalf("the line scanner and ini.v1 disagree: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parseConfig accepted a Config that Validate refuses: %v", err)
		}
		if c.Source != "fuzz.cfg" {
			t.Fatalf("Source = %q", c.Source)
		}
		for _, w := range c.Warnings {
			if !strings.HasPrefix(w, "fuzz.cfg:") {
				t.Fatalf("warning without a file name: %q", w)
			}
		}
		again, err := parseConfig("fuzz.cfg", data)
		if err != nil || !reflect.DeepEqual(c, again) {
			t.Fatalf("a second parse differs: %v", err)
		}
		_ = c.String()
		_ = c.LogValue()
	})
}

// FuzzInterpolate checks pyini.Interpolate against a line-by-line
// transcription of Python's SafeConfigParser._interpolate_some, with two
// keys a and b whose values are fuzzed too.
func FuzzInterpolate(f *testing.F) {
	for _, seed := range [][3]string{
		{"amqp://u:p@h:5672/%%2F?heartbeat_interval=600", "", ""},
		{"%%(levelname) -5s %%(asctime)s %%(message)s", "", ""},
		{"%(a)s", "x", ""},
		{"%(A)s:%(b)s", "host", "5672"},
		{"%(a)s", "%(b)s", "%%2F"},
		{"%(a)s", "%(b)s", "%(a)s"},
		{"%(a)s%(a)s", "%(b)s%(b)s", "%(a)s"},
		{"100%", "", ""},
		{"%(", "", ""},
		{"%()s", "", ""},
		{"%(a)d", "", ""},
		{"%(c)s", "", ""},
		{"%(a)s", "50%", ""},
		{"no percent", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	f.Fuzz(func(t *testing.T, value, a, b string) {
		lookup := func(name string) (string, bool) {
			switch name {
			case "a":
				return a, true
			case "b":
				return b, true
			}
			return "", false
		}
		got, err := pyini.Interpolate(value, lookup)
		if err != nil {
			if !errors.Is(err, pyini.ErrSyntax) && !errors.Is(err, pyini.ErrMissing) &&
				!errors.Is(err, pyini.ErrDepth) && !errors.Is(err, pyini.ErrTooLarge) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
		} else {
			if !strings.Contains(value, "%(") && got != strings.ReplaceAll(value, "%%", "%") {
				t.Fatalf("Interpolate(%q) = %q, want %%%% replaced by %%", value, got)
			}
			if len(got) > pyini.MaxOutput {
				t.Fatalf("output of %d bytes", len(got))
			}
		}
		if !strings.Contains(value, "%") && (err != nil || got != value) {
			t.Fatalf("Interpolate(%q) = %q, %v; want it unchanged", value, got, err)
		}
		if errors.Is(err, pyini.ErrTooLarge) {
			return // Python would still be expanding
		}
		want, wantErr := cfgPythonInterpolate(value, lookup, 1)
		if (err == nil) != (wantErr == nil) || err == nil && got != want ||
			err != nil && !errors.Is(err, wantErr) {
			t.Fatalf("Interpolate(%q) with a=%q b=%q = %q, %v; Python gives %q, %v", value, a, b, got, err, want, wantErr)
		}
	})
}

var cfgPythonInterpVar = regexp.MustCompile(`^%\(([^)]+)\)s`)

// cfgPythonInterpolate transcribes SafeConfigParser._interpolate_some of
// Python 2.7 (BasicInterpolation in Python 3), without the bounds on work.
func cfgPythonInterpolate(rest string, lookup func(string) (string, bool), depth int) (string, error) {
	if depth > pyini.MaxDepth {
		return "", pyini.ErrDepth
	}
	var accum strings.Builder
	for rest != "" {
		p := strings.Index(rest, "%")
		if p < 0 {
			accum.WriteString(rest)
			break
		}
		if p > 0 {
			accum.WriteString(rest[:p])
			rest = rest[p:]
		}
		c := ""
		if len(rest) > 1 {
			c = rest[1:2]
		}
		switch c {
		case "%":
			accum.WriteString("%")
			rest = rest[2:]
		case "(":
			m := cfgPythonInterpVar.FindStringSubmatch(rest)
			if m == nil {
				return "", pyini.ErrSyntax
			}
			name := strings.ToLower(m[1])
			rest = rest[len(m[0]):]
			v, ok := lookup(name)
			if !ok {
				return "", pyini.ErrMissing
			}
			if strings.Contains(v, "%") {
				sub, err := cfgPythonInterpolate(v, lookup, depth+1)
				if err != nil {
					return "", err
				}
				accum.WriteString(sub)
			} else {
				accum.WriteString(v)
			}
		default:
			return "", pyini.ErrSyntax
		}
	}
	return accum.String(), nil
}
