package pyfmt

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// sampleRecord returns a record whose float fields are exact in binary, so
// that the expectations below (computed with Python's %-formatting) hold
// digit for digit.
func sampleRecord() *Record {
	t := time.Unix(1772600767, 250_000_000)
	return &Record{
		Name:      "OMQS",
		LevelNo:   20,
		LevelName: "INFO",
		Message:   []byte("héllo wörld"),
		Time:      t,
		Start:     t.Add(-1234500 * time.Microsecond),
		File:      "/src/omqs/logging_test.go",
		Line:      42,
		Function:  "github.com/omqs-go/omqs.TestFormat.func1",
		Process:   4242,
		Thread:    7,
	}
}

func TestFormatDirectives(t *testing.T) {
	// Expectations are Python 3's output for the same format and record,
	// except r and a, which quote the Go way (double quotes, \u escapes).
	tests := []struct {
		format, want string
	}{
		{`%(name)s`, "OMQS"},
		{`%(name)10s|`, "      OMQS|"},
		{`%(name)-10s|`, "OMQS      |"},
		{`%(name) -10s|`, "OMQS      |"},
		{`%(name)010s|`, "      OMQS|"},
		{`%(name).2s`, "OM"},
		{`%(name)8.2s|`, "      OM|"},
		{`%(name)r`, `"OMQS"`},
		{`%(name)a`, `"OMQS"`},
		{`%(levelname) -5s|`, "INFO |"},
		{`%(levelname)-8s|`, "INFO    |"},
		{`%(levelname)8s|`, "    INFO|"},
		{`%(levelno)s`, "20"},
		{`%(levelno)d`, "20"},
		{`%(levelno)05d`, "00020"},
		{`%(levelno)+d`, "+20"},
		{`%(levelno) d`, " 20"},
		{`%(levelno)-5d|`, "20   |"},
		{`%(levelno) -5d|`, " 20  |"},
		{`%(levelno)x`, "14"},
		{`%(levelno)#x`, "0x14"},
		{`%(levelno)#X`, "0X14"},
		{`%(levelno)#o`, "0o24"},
		{`%(levelno)o`, "24"},
		{`%(levelno).4d`, "0020"},
		{`%(levelno)#08.4x`, "0x000014"},
		{`%(levelno)f`, "20.000000"},
		{`%(levelno).2e`, "2.00e+01"},
		{`%(levelno)r`, "20"},
		{`%(levelno)ld`, "20"},
		{`%(lineno)d`, "42"},
		{`%(lineno) -5d|`, " 42  |"},
		{`%(lineno)5d|`, "   42|"},
		{`%(lineno)-5d|`, "42   |"},
		{`%(lineno)05d`, "00042"},
		{`%(lineno)+05d`, "+0042"},
		{`%(lineno)i`, "42"},
		{`%(lineno)u`, "42"},
		{`%(process)d`, "4242"},
		{`%(thread)d`, "7"},
		{`%(thread)s`, "7"},
		{`%(threadName)s`, "MainThread"},
		{`%(processName)s`, "MainProcess"},
		{`%(message)s`, "héllo wörld"},
		{`%(message)20s|`, "         héllo wörld|"},
		{`%(message)-20s|`, "héllo wörld         |"},
		{`%(message).5s|`, "héllo|"},
		{`%(message)r`, `"héllo wörld"`},
		{`%(message)a`, `"h\u00e9llo w\u00f6rld"`},
		{`%(filename)s`, "logging_test.go"},
		{`%(filename) -10s|`, "logging_test.go|"},
		{`%(filename)-20s|`, "logging_test.go     |"},
		{`%(filename)20s|`, "     logging_test.go|"},
		{`%(module)s`, "logging_test"},
		{`%(pathname)s`, "/src/omqs/logging_test.go"},
		{`%(funcName)s`, "TestFormat.func1"},
		{`%(created)f`, "1772600767.250000"},
		{`%(created)s`, "1772600767.25"},
		{`%(created)r`, "1772600767.25"},
		{`%(created).3f`, "1772600767.250"},
		{`%(created)d`, "1772600767"},
		{`%(created)e`, "1.772601e+09"},
		{`%(created)g`, "1.7726e+09"},
		{`%(created)#g`, "1.77260e+09"},
		{`%(created)20.2f|`, "       1772600767.25|"},
		{`%(created)-20.1f|`, "1772600767.2        |"},
		{`%(created)020.2f`, "00000001772600767.25"},
		{`%(created)+.1f`, "+1772600767.2"},
		{`%(msecs)d`, "250"},
		{`%(msecs)03d`, "250"},
		{`%(msecs)s`, "250.0"},
		{`%(msecs)f`, "250.000000"},
		{`%(msecs)g`, "250"},
		{`%(msecs)#.0f`, "250."},
		{`%(msecs)#.0e`, "2.e+02"},
		{`%(msecs)E`, "2.500000E+02"},
		{`%(relativeCreated)d`, "1234"},
		{`%(relativeCreated)s`, "1234.5"},
		{`%(relativeCreated).1f`, "1234.5"},
		{`%(relativeCreated)G`, "1234.5"},
		{`%(relativeCreated)08.3g|`, "1.23e+03|"},
		{`100%% done`, "100% done"},
		{`%%(name)s`, "%(name)s"},
		{`[OMQS] %(levelname) -5s %(filename) -10s:%(lineno) -5d: %(message)s`, "[OMQS] INFO  logging_test.go: 42  : héllo wörld"},
		{`%(name)s%(name)s`, "OMQSOMQS"},
		{`no directives at all`, "no directives at all"},
		{`%(name)5.3r|`, `  "OM|`},
		{`%(levelno)+5s|`, `   20|`},
		{`%(asctime).10s`, time.Unix(1772600767, 0).Local().Format("2006-01-02")},
	}
	r := sampleRecord()
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.format, err)
			continue
		}
		if got := string(f.Append(nil, r)); got != tt.want {
			t.Errorf("format %q:\n got %q\nwant %q", tt.format, got, tt.want)
		}
	}
}

func TestFormatNegativeAndSpecialNumbers(t *testing.T) {
	// Expectations from Python 3.
	tests := []struct {
		format string
		line   int
		want   string
	}{
		{`%(lineno)d`, -42, "-42"},
		{`%(lineno)05d`, -42, "-0042"},
		{`%(lineno)+d`, -42, "-42"},
		{`%(lineno) d`, -42, "-42"},
		{`%(lineno)x`, -255, "-ff"},
		{`%(lineno)#X`, -255, "-0XFF"},
		{`%(lineno)#o`, 0, "0o0"},
		{`%(lineno)#.3d`, 0, "000"},
		{`%(lineno).0d`, 0, "0"},
		{`%(lineno)#5x|`, 255, " 0xff|"},
		{`%(lineno)#05x|`, 255, "0x0ff|"},
		{`%(lineno)#.3x|`, 5, "0x005|"},
		{`%(lineno) x|`, 255, " ff|"},
		{`%(lineno)+o|`, 255, "+377|"},
		{`%(lineno)05.3d|`, 5, "00005|"},
		{`%(lineno)-05d|`, 3, "3    |"},
		{`%(lineno)g`, 100000, "100000"},
		{`%(lineno)#g`, 100000, "100000."},
		{`%(lineno).0g`, 100000, "1e+05"},
		{`%(lineno)#.0e`, 100000, "1.e+05"},
		{`%(lineno)G`, 1000000, "1E+06"},
		{`%(lineno)g`, 0, "0"},
		{`%(lineno)#g`, 0, "0.00000"},
		{`%(lineno)e`, 0, "0.000000e+00"},
		{`%(lineno).0f`, 2, "2"},
		{`%(lineno)05.1f|`, -2, "-02.0|"},
		{`%(lineno) 08.2e|`, -2, "-2.00e+00|"},
		{`%(lineno)#.0f|`, -2, "-2.|"},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.format, err)
			continue
		}
		r := sampleRecord()
		r.Line = tt.line
		if got := string(f.Append(nil, r)); got != tt.want {
			t.Errorf("format %q, lineno %d:\n got %q\nwant %q", tt.format, tt.line, got, tt.want)
		}
	}
}

func TestFormatFloatEdges(t *testing.T) {
	// Expectations from Python 3.
	tests := []struct {
		format string
		rel    float64 // relativeCreated, in milliseconds
		want   string
	}{
		{`%(relativeCreated)g`, 1e-5, "1e-05"},
		{`%(relativeCreated)#g`, 1e-5, "1.00000e-05"},
		{`%(relativeCreated).3g`, 1e-5, "1e-05"},
		{`%(relativeCreated)#.3g`, 1e-5, "1.00e-05"},
		{`%(relativeCreated)s`, 1e-5, "1e-05"},
		{`%(relativeCreated)s`, 1e-4, "0.0001"},
		{`%(relativeCreated)s`, 1e12, "1000000000000.0"},
		{`%(relativeCreated)s`, 123, "123.0"},
		{`%(relativeCreated)s`, -1.9, "-1.9"},
		{`%(relativeCreated)d`, -1.9, "-1"},
		{`%(relativeCreated)5.1s|`, -1.9, "    -|"},
		{`%(relativeCreated).0f`, 2.5, "2"},
		{`%(relativeCreated).0f`, 3.5, "4"},
		{`%(relativeCreated)+05.1f`, -2.25, "-02.2"},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Errorf("Compile(%q): %v", tt.format, err)
			continue
		}
		r := sampleRecord()
		r.Start = r.Time.Add(-time.Duration(tt.rel * 1e6))
		if got := string(f.Append(nil, r)); got != tt.want {
			t.Errorf("format %q, relativeCreated %v:\n got %q\nwant %q", tt.format, tt.rel, got, tt.want)
		}
	}
}

func TestAppendRepr(t *testing.T) {
	// Python 3: repr(float(x)).
	tests := []struct {
		v    float64
		want string
	}{
		{0, "0.0"}, {1.5, "1.5"}, {-0.25, "-0.25"}, {1e-5, "1e-05"}, {1.5e300, "1.5e+300"},
		{1772600767.25, "1772600767.25"}, {9999999999999998, "9999999999999998.0"},
	}
	for _, tt := range tests {
		if got := string(appendRepr(nil, tt.v)); got != tt.want {
			t.Errorf("appendRepr(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestAsctime(t *testing.T) {
	tm := time.Date(2026, 1, 2, 3, 4, 5, 6_789_000, time.Local)
	if got, want := string(AppendAsctime(nil, tm)), "2026-01-02 03:04:05,006"; got != want {
		t.Errorf("AppendAsctime = %q, want %q", got, want)
	}
	// Always local time, as Python's default converter (time.localtime).
	utc := time.Date(2026, 7, 8, 9, 10, 11, 999_999_999, time.UTC)
	want := utc.Local().Format("2006-01-02 15:04:05") + ",999"
	f, err := Compile("%(asctime)s")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(f.Append(nil, &Record{Time: utc})); got != want {
		t.Errorf("asctime = %q, want %q", got, want)
	}
}

func TestFuncName(t *testing.T) {
	tests := map[string]string{
		"github.com/omqs-go/omqs.(*LogManager).Close":          "(*LogManager).Close",
		"github.com/omqs-go/omqs.TestX.func1":                  "TestX.func1",
		"main.main":                                            "main",
		"gopkg.in/natefinch/lumberjack%2ev2.(*Logger).millRun": "(*Logger).millRun",
		"": "",
	}
	for in, want := range tests {
		if got := FuncName(in); got != want {
			t.Errorf("FuncName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		format string
		want   string // the whole error text
	}{
		{`%(levelname)s %(asctime)s %(levelnme)s`, `log format: position 27: unknown field "levelnme" (did you mean "levelname"?)`},
		{`%(foo)s`, `log format: position 1: unknown field "foo"`},
		{`ab %`, `log format: position 4: '%' at the end of the format (write %% for a literal %)`},
		{`ab %(name`, `log format: position 4: '%(' without a closing ')'`},
		{`%(name)`, `log format: position 1: field "name" has no conversion character (such as s or d) after it`},
		{`%(name)-5`, `log format: position 1: field "name" has no conversion character (such as s or d) after it`},
		{`%(name)z`, `log format: position 1: field "name": unsupported conversion character 'z'`},
		{`%(lineno)c`, `log format: position 1: field "lineno": unsupported conversion character 'c'`},
		{`%(name)%`, `log format: position 1: field "name": unsupported conversion character '%'`},
		{`%s`, `log format: position 1: directive without a field name (write %(name)s, or %% for a literal %)`},
		{`é %d`, `log format: position 3: directive without a field name (write %(name)s, or %% for a literal %)`},
		{`%(name)d`, `log format: position 1: %d needs a number, but field "name" is text (use s)`},
		{`%(created)x`, `log format: position 1: %x needs an integer, but field "created" is not one`},
		{`%(message)*s`, `log format: position 1: field "message": width '*' cannot be used with a field name`},
		{`%(message).*s`, `log format: position 1: field "message": precision '*' cannot be used with a field name`},
		{`%(message)99999s`, `log format: position 1: field "message": width is larger than 4096`},
		{`%(message).99999s`, `log format: position 1: field "message": precision is larger than 4096`},
		{`%(a(b))s`, `log format: position 1: unknown field "a(b)"`},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err == nil {
			t.Errorf("Compile(%q) = %v, want error %q", tt.format, f.ops, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Compile(%q):\n got %s\nwant %s", tt.format, err, tt.want)
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Pos < 1 {
			t.Errorf("Compile(%q): error %T is not a *Error with a position", tt.format, err)
		}
	}
}

func TestUses(t *testing.T) {
	tests := []struct {
		format         string
		caller, thread bool
	}{
		{"%(message)s", false, false},
		{"%(filename)s", true, false},
		{"%(lineno)d", true, false},
		{"%(funcName)s %(thread)d", true, true},
		{"%(threadName)s", false, false},
	}
	for _, tt := range tests {
		f, err := Compile(tt.format)
		if err != nil {
			t.Fatal(err)
		}
		if f.UsesCaller() != tt.caller || f.UsesThread() != tt.thread {
			t.Errorf("%q: UsesCaller %v UsesThread %v, want %v %v", tt.format, f.UsesCaller(), f.UsesThread(), tt.caller, tt.thread)
		}
		if f.String() != tt.format {
			t.Errorf("String() = %q, want %q", f.String(), tt.format)
		}
	}
}

func TestAppendDoesNotAllocate(t *testing.T) {
	f, err := Compile("[OMQS] %(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(funcName)s %(created).3f %(msecs)03d %(message)s")
	if err != nil {
		t.Fatal(err)
	}
	r := sampleRecord()
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		buf = f.Append(buf[:0], r)
	})
	if allocs != 0 {
		t.Errorf("Append allocates %v times per call, want 0", allocs)
	}
	if !strings.HasSuffix(string(buf), "héllo wörld") {
		t.Errorf("unexpected output %q", buf)
	}
}

func BenchmarkAppend(b *testing.B) {
	f, err := Compile("%(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s")
	if err != nil {
		b.Fatal(err)
	}
	r := sampleRecord()
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0], r)
	}
}
