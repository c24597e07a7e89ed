package pyini

import (
	"errors"
	"strings"
	"testing"
)

// keys is a lookup over a fixed map of lowercase names.
func keys(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

func TestInterpolate(t *testing.T) {
	vars := map[string]string{
		"host":  "localhost",
		"port":  "5672",
		"addr":  "%(host)s:%(port)s",
		"url":   "amqp://%(addr)s/%%2F",
		"pct":   "100%%",
		"plain": "no percent here",
		"empty": "",
		"a(b":   "odd name",
	}
	tests := []struct {
		in, want string
	}{
		{"", ""},
		{"plain text", "plain text"},
		{"%%", "%"},
		{"%%%%", "%%"},
		{"amqp://u:p@h:5672/%%2F?heartbeat_interval=600", "amqp://u:p@h:5672/%2F?heartbeat_interval=600"},
		{"%%(levelname) -5s %%(message)s", "%(levelname) -5s %(message)s"},
		{"%(host)s", "localhost"},
		{"%(HOST)s", "localhost"}, // names are case-insensitive
		{"x%(host)sy", "xlocalhosty"},
		{"%(addr)s", "localhost:5672"},             // chained
		{"%(url)s", "amqp://localhost:5672/%2F"},   // chained twice, %% inside
		{"%(pct)s and %%", "100% and %"},           // %% in a referenced value
		{"%(plain)s", "no percent here"},           // value without %
		{"[%(empty)s]", "[]"},                      // empty value
		{"%(a(b)s", "odd name"},                    // Python's [^)]+ allows '('
		{"%(host)s%(host)s", "localhostlocalhost"}, // twice
		{"%%(host)s", "%(host)s"},                  // escaped, not a reference
		{"50%% of %(port)s", "50% of 5672"},        // mixed
		{"é%%ü", "é%ü"},                            // multibyte text around
		{"%(host)s\n%(port)s", "localhost\n5672"},  // continuation lines
		{strings.Repeat("%%", 1000), strings.Repeat("%", 1000)},
	}
	for _, tt := range tests {
		got, err := Interpolate(tt.in, keys(vars))
		if err != nil {
			t.Errorf("Interpolate(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Interpolate(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestInterpolateErrors(t *testing.T) {
	vars := map[string]string{
		"self":  "%(self)s",
		"ping":  "%(pong)s",
		"pong":  "%(ping)s",
		"bad":   "50%",
		"dangl": "%(nowhere)s",
	}
	tests := []struct {
		in      string
		want    error
		message string // a fragment of the message
	}{
		{"%", ErrSyntax, "byte 1"},
		{"50%", ErrSyntax, "byte 3"},
		{"50% off", ErrSyntax, "byte 3"},
		{"%x", ErrSyntax, "must be followed by"},
		{"%%%", ErrSyntax, "byte 3"},
		{"%(", ErrSyntax, "%(name)s"},
		{"%(host", ErrSyntax, "%(name)s"},
		{"%(host)", ErrSyntax, "%(name)s"},
		{"%(host)d", ErrSyntax, "%(name)s"},
		{"%()s", ErrSyntax, "%(name)s"},
		{"%(bad)s", ErrSyntax, "in the value of %(bad)s"},
		{"%(nope)s", ErrMissing, "%(nope)s"},
		{"%(NOPE)s", ErrMissing, "%(nope)s"},
		{"%(dangl)s", ErrMissing, "%(nowhere)s"},
		{"%(self)s", ErrDepth, "more than 10"},
		{"%(ping)s", ErrDepth, "more than 10"},
	}
	for _, tt := range tests {
		got, err := Interpolate(tt.in, keys(vars))
		if !errors.Is(err, tt.want) {
			t.Errorf("Interpolate(%q) = %q, %v; want error %v", tt.in, got, err, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.message) {
			t.Errorf("Interpolate(%q): error %q does not contain %q", tt.in, err, tt.message)
		}
	}
}

// TestInterpolateDepth pins Python's limit: a value may reach through ten
// levels of references (itself included), not eleven.
func TestInterpolateDepth(t *testing.T) {
	chain := func(levels int) map[string]string {
		m := map[string]string{}
		for i := 1; i < levels; i++ {
			m[name(i)] = "%(" + name(i+1) + ")s"
		}
		m[name(levels)] = "%%end"
		return m
	}
	// The top-level value is level 1, the value of name(i) level i+1.
	if got, err := Interpolate("%("+name(1)+")s", keys(chain(MaxDepth-1))); err != nil || got != "%end" {
		t.Errorf("depth %d: got %q, %v; want %%end", MaxDepth, got, err)
	}
	if _, err := Interpolate("%("+name(1)+")s", keys(chain(MaxDepth))); !errors.Is(err, ErrDepth) {
		t.Errorf("depth %d: got %v, want ErrDepth", MaxDepth+1, err)
	}
}

func name(i int) string { return "k" + strings.Repeat("x", i) }

// TestInterpolateBounded checks that references that multiply at every level
// end with an error instead of running for ever.
func TestInterpolateBounded(t *testing.T) {
	m := map[string]string{}
	for i := 0; i < 8; i++ {
		m[name(i)] = strings.Repeat("%("+name(i+1)+")s", 50)
	}
	m[name(8)] = "x%%"
	if _, err := Interpolate("%("+name(0)+")s", keys(m)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	m[name(8)] = "" // no output at all: only the count of expansions stops it
	if _, err := Interpolate("%("+name(0)+")s", keys(m)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	big := strings.Repeat("y", MaxOutput/2+1)
	if _, err := Interpolate("%(b)s%(b)s%%", keys(map[string]string{"b": big})); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

// TestInterpolateNoSecretsInErrors checks that error messages give positions,
// not the text of the value.
func TestInterpolateNoSecretsInErrors(t *testing.T) {
	for _, in := range []string{
		"amqp://user:s3cr3t%@host/",
		"amqp://user:s3cr3t%(x@host/",
		"amqp://user:s3cr3t%(x)s@host/",
	} {
		_, err := Interpolate(in, keys(nil))
		if err == nil {
			t.Fatalf("Interpolate(%q): no error", in)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Interpolate(%q): error %q shows the password", in, err)
		}
	}
}
