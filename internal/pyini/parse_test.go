package pyini

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// flat lists a file's keys as "Section.Key@line=value".
func flat(f *File) []string {
	var out []string
	for _, s := range f.Sections {
		for _, k := range s.Keys {
			out = append(out, s.Name+"."+k.Name+"@"+strconv.Itoa(k.Line)+"="+k.Value)
		}
	}
	return out
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"empty", "", nil},
		{"basic", "[Global]\nMQURL=amqp://h/%%2F\nRECONNECT_TIMES = 3\n",
			[]string{"Global.MQURL@2=amqp://h/%%2F", "Global.RECONNECT_TIMES@3=3"}},
		{"colon delimiter", "[S]\nKEY: value\n", []string{"S.KEY@2=value"}},
		{"first delimiter splits", "[S]\nURL=amqp://u:p@h\nA:b=c\n", []string{"S.URL@2=amqp://u:p@h", "S.A@3=b=c"}},
		{"comments", "; top\n# top\n[S]\n; a comment\n  # indented comment\nA=1\n",
			[]string{"S.A@6=1"}},
		{"inline ; and # are text", "[S]\nA=x ; not a comment\nB=y # nor this\nC=#z;\n",
			[]string{"S.A@2=x ; not a comment", "S.B@3=y # nor this", "S.C@4=#z;"}},
		{"quotes kept", "[S]\nA='x'\nB=\"y\"\nC=('z')\n",
			[]string{"S.A@2='x'", "S.B@3=\"y\"", "S.C@4=('z')"}},
		{"backslash kept", "[S]\nA=x\\\nB=y\n", []string{"S.A@2=x\\", "S.B@3=y"}},
		{"spaces trimmed", "[S]\n  A  =   v w  \t\n", []string{"S.A@2=v w"}},
		{"empty value", "[S]\nA=\nB =\n", []string{"S.A@2=", "S.B@3="}},
		{"continuation", "[S]\nKEYS = a,\n   b,\n\tc\nNEXT=1\n",
			[]string{"S.KEYS@2=a,\nb,\nc", "S.NEXT@5=1"}},
		{"continuation of empty value", "[S]\nKEYS =\n  a\n  b\n", []string{"S.KEYS@2=a\nb"}},
		{"blank continuation lines dropped", "[S]\nA = x\n   \n  y\n", []string{"S.A@2=x\ny"}},
		{"blank line ends a value", "[S]\nA = x\n\nB = y\n", []string{"S.A@2=x", "S.B@4=y"}},
		{"comments among continuation lines", "[S]\nKEYS = a,\n  ; b,\n\t# c,\n  d\nE=#e\n", []string{"S.KEYS@2=a,\nd", "S.E@6=#e"}},
		{"crlf", "[S]\r\nA = 1\r\nB = 2\r\n", []string{"S.A@2=1", "S.B@3=2"}},
		{"no final newline", "[S]\nA = 1", []string{"S.A@2=1"}},
		{"bom", "\xef\xbb\xbf[S]\nA=1\n", []string{"S.A@2=1"}},
		{"indented header and key", "  [S]\n  A=1\n", []string{"S.A@2=1"}},
		{"indented key continued deeper", "[S]\n  A=1\n    more\n", []string{"S.A@2=1\nmore"}},
		{"indented key after a header", "[S]\nA=1\n[T]\n\n  B=2\n", []string{"S.A@2=1", "T.B@5=2"}},
		{"indented blank and comment lines after a blank line", "[S]\nA=1\n\n   \n  ; c\nB=2\n", []string{"S.A@2=1", "S.B@6=2"}},
		{"header comment", "[S] ; the section\nA=1\n", []string{"S.A@2=1"}},
		{"last key wins", "[S]\nA=1\nB=2\na=3\n", []string{"S.a@4=3", "S.B@3=2"}},
		{"sections merge in any case", "[Global]\nA=1\n[Log]\nB=2\n[GLOBAL]\nC=3\n",
			[]string{"Global.A@2=1", "Global.C@6=3", "Log.B@4=2"}},
		{"default section", "[DEFAULT]\nX=1\n[default]\nX=2\n", []string{"DEFAULT.X@4=2"}},
		{"dash key", "[S]\n- = a\n- = b\n", []string{"S.-@3=b"}},
		{"percent kept raw", "[S]\nF=%%(message)s %(x)s\n", []string{"S.F@2=%%(message)s %(x)s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := flat(f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParseOverrides(t *testing.T) {
	f, err := Parse([]byte("[S]\nA=1\n[T]\n[s]\na=2\nA=3\n"))
	if err != nil {
		t.Fatal(err)
	}
	k := f.Section("s").Key("a")
	if k == nil || k.Value != "3" || k.Line != 6 || !reflect.DeepEqual(k.Overrides, []int{2, 5}) {
		t.Fatalf("got %+v", k)
	}
	if f.Section("S").Line != 1 || f.Section("T") == nil || f.Section("nope") != nil {
		t.Fatalf("sections: %+v", f.Sections)
	}
	if f.Section("T").Key("A") != nil || (*Section)(nil).Key("A") != nil {
		t.Fatal("Key on an empty or nil section found something")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		message  string
	}{
		{"key before section", "A=1\n[S]\n", 1, "before the first [Section]"},
		{"unclosed header", "[S]\nA=1\n[T\n", 3, "closing ']'"},
		{"empty header", "\n[]\n", 2, "empty section name"},
		{"no delimiter", "[S]\nA=1\njust words\n", 3, "KEY = value"},
		{"no key", "[S]\n= value\n", 2, "no key name"},
		{"no key colon", "[S]\n: value\n", 2, "no key name"},
		{"quoted key", "[S]\n\"A\"=1\n", 2, "quoted key"},
		{"backquoted key", "[S]\n`A`=1\n", 2, "quoted key"},
		{"backquoted value", "[S]\nA=`x`\n", 2, "not supported"},
		{"triple quoted value", "[S]\nA=\"\"\"x\"\"\"\n", 2, "not supported"},
		{"indented line after header", "[S]\n  words\n", 2, "KEY = value"},
		{"continuation no deeper than its key", "[S]\n  A=1\n  B=2\n", 3, "key A above it (line 2)"},
		{"indented line after a blank line", "[S]\nA=1\n\n  B=2\n", 4, "value of A (line 2)"},
		{"indented line after a comment", "[S]\nA=1\n; c\n\tmore\n", 4, "value of A (line 2)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a *SyntaxError", err)
			}
			if se.Line != tt.line || !strings.Contains(se.Msg, tt.message) {
				t.Errorf("got %q, want line %d and %q", err, tt.line, tt.message)
			}
		})
	}
	if _, err := Parse(make([]byte, MaxSize+1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("oversized file: got %v", err)
	}
}

// TestParseNoSecretsInErrors checks that a syntax error never repeats a value.
func TestParseNoSecretsInErrors(t *testing.T) {
	for _, in := range []string{
		"MQURL=amqp://u:s3cr3t@h/\n",
		"[Global]\nMQURL=`amqp://u:s3cr3t@h/`\n",
		"[Global]\nMQURL=\"\"\"amqp://u:s3cr3t@h/\n",
	} {
		_, err := Parse([]byte(in))
		if err == nil || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Parse(%q) = %v", in, err)
		}
	}
}

func TestParseLarge(t *testing.T) {
	// The largest accepted file of short keys parses in reasonable time.
	data := "[S]\n" + strings.Repeat("a=\n", (MaxSize-4)/3)
	f, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if k := f.Section("S").Key("a"); k == nil || len(k.Overrides) == 0 {
		t.Fatalf("got %+v", k)
	}
}
