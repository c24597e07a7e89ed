package pyfmt

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzLogFormat checks that any format string either compiles or fails with
// a positioned *Error, never panics, and that a compiled format formats a
// record without panicking.
func FuzzLogFormat(f *testing.F) {
	for _, s := range []string{
		"%(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s",
		"[OMQS] %(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s",
		"%(asctime)s - %(name)s - %(levelname)s - %(message)s",
		"%(created)f %(msecs)03d %(relativeCreated)d %(process)d %(thread)d %(threadName)s %(processName)s",
		"%(pathname)s %(module)s.%(funcName)s %(levelno)#08.4x %(created)#g %(message)-20.5r",
		"100%% %(message)a",
		"%", "%(", "%()", "%(name)", "%(name)-", "%(name)*s", "%(name).*s", "%((name))s",
		"%(name)4097s", "%(message)99999999999999999999s", "%(lineno)+-0 #9.9lhLd",
		"%(created)x", "%(message)d", "%(name)\xff", "\xff%(name)s\x00", "%(é)s", "é%",
	} {
		f.Add(s)
	}
	r := sampleRecord()
	f.Fuzz(func(t *testing.T, s string) {
		fm, err := Compile(s)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Compile(%q): error %T is not *Error", s, err)
			}
			if n := utf8.RuneCountInString(s); pe.Pos < 1 || pe.Pos > n {
				t.Fatalf("Compile(%q): position %d outside 1..%d", s, pe.Pos, n)
			}
			if !strings.HasPrefix(err.Error(), "log format: position ") {
				t.Fatalf("Compile(%q): error text %q", s, err)
			}
			return
		}
		out := fm.Append(nil, r)
		if !strings.Contains(s, "%") && string(out) != s {
			t.Fatalf("format without directives %q printed %q", s, out)
		}
		// Each directive prints at most MaxWidth characters plus its value.
		if max := len(s) * (MaxWidth + 64 + len(r.Message)*6 + len(r.File)); len(out) > max {
			t.Fatalf("format %q printed %d bytes", s, len(out))
		}
		// Formatting again into a used buffer gives the same text.
		again := fm.Append([]byte("x"), r)
		if string(again[1:]) != string(out) {
			t.Fatalf("format %q is not deterministic: %q then %q", s, out, again[1:])
		}
	})
}
