// Package pyfmt compiles Python logging format strings, such as
//
//	%(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s
//
// into a list of operations that format a Record by appending to a byte
// slice. Compile once with Compile; Format.Append does not allocate for the
// usual directives.
//
// # Directives
//
// A directive is %(field) followed by optional flags, width, precision,
// length modifier and a conversion character, as in Python's %-formatting:
//
//	%(name)[flags][width][.precision][h|l|L]conversion
//
// Flags: '-' left-justifies, '0' pads numbers with zeros after the sign and
// the base prefix, ' ' puts a space before a positive number, '+' puts a plus
// sign before it (and wins over ' '), '#' selects the alternate form (0o and
// 0x prefixes, a decimal point that always shows, trailing zeros kept by g).
// Width and precision are decimal numbers of at most MaxWidth; Python's '*'
// cannot be used with a field name and is an error, as in Python. Widths and
// string precisions count characters (runes), not bytes. h, l and L are
// accepted and ignored, as in Python.
//
// Conversions: s (text), r and a (quoted text; quoted the Go way, with
// double quotes, where Python's repr uses single quotes), d, i and u
// (decimal), o, x and X (octal and hexadecimal, for integer fields only), e,
// E, f, F, g and G (floating point). %% is a literal percent sign.
//
// A numeric conversion of a text field is an error, and so is o, x or X of a
// floating-point field; Python would fail the same way, but only when a
// record is formatted. %c is not supported.
//
// # Fields
//
//	name             logger name (text)
//	levelno          level number: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL (integer)
//	levelname        level name (text)
//	message          the message, with its attributes (text)
//	asctime          local time as 2006-01-02 15:04:05,000, comma before the milliseconds (text)
//	created          seconds since the Unix epoch (floating point)
//	msecs            millisecond part of the time, a whole number (floating point)
//	relativeCreated  milliseconds since Record.Start (floating point)
//	pathname         full path of the source file that logged (text)
//	filename         base name of pathname (text)
//	module           filename without its extension (text)
//	lineno           source line (integer)
//	funcName         function name without its package path, e.g. "(*Conn).Close" (text)
//	process          process id (integer)
//	processName      always "MainProcess": a Go program is one process (text)
//	thread           id of the goroutine that logged (integer)
//	threadName       always "MainThread": goroutines have no names (text)
package pyfmt

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/omqs-go/omqs/internal/textdist"
)

// MaxWidth bounds widths and precisions, so that a format string cannot make
// a line arbitrarily long.
const MaxWidth = 4096

// Constant values of the fields that have no equivalent in Go.
const (
	ThreadName  = "MainThread"
	ProcessName = "MainProcess"
)

// Record holds the values a Format can print. The caller fills the fields its
// Format uses (see UsesCaller and UsesThread); the others may stay zero.
type Record struct {
	Name      string    // %(name)s
	LevelNo   int       // %(levelno)d
	LevelName string    // %(levelname)s
	Message   []byte    // %(message)s
	Time      time.Time // asctime, created, msecs, relativeCreated
	Start     time.Time // origin of relativeCreated
	File      string    // full path of the source file: pathname, filename, module
	Line      int       // lineno
	Function  string    // fully qualified Go function name, as runtime.Frame.Function; funcName
	Process   int       // process
	Thread    int64     // thread
}

// Error is a compile error of a format string.
type Error struct {
	Pos int    // 1-based position, in characters, of the '%' that starts the faulty directive
	Msg string // what is wrong
}

func (e *Error) Error() string {
	return fmt.Sprintf("log format: position %d: %s", e.Pos, e.Msg)
}

type field uint8

const (
	fLiteral field = iota
	fName
	fLevelNo
	fLevelName
	fMessage
	fAsctime
	fCreated
	fMsecs
	fRelativeCreated
	fPathname
	fFilename
	fModule
	fLineno
	fFuncName
	fProcess
	fProcessName
	fThread
	fThreadName
)

type kind uint8

const (
	kindText kind = iota
	kindInt
	kindFloat
)

var fields = []struct {
	name string
	f    field
	kind kind
}{
	{"name", fName, kindText},
	{"levelno", fLevelNo, kindInt},
	{"levelname", fLevelName, kindText},
	{"message", fMessage, kindText},
	{"asctime", fAsctime, kindText},
	{"created", fCreated, kindFloat},
	{"msecs", fMsecs, kindFloat},
	{"relativeCreated", fRelativeCreated, kindFloat},
	{"pathname", fPathname, kindText},
	{"filename", fFilename, kindText},
	{"module", fModule, kindText},
	{"lineno", fLineno, kindInt},
	{"funcName", fFuncName, kindText},
	{"process", fProcess, kindInt},
	{"processName", fProcessName, kindText},
	{"thread", fThread, kindInt},
	{"threadName", fThreadName, kindText},
}

type flags uint8

const (
	flagMinus flags = 1 << iota
	flagZero
	flagSpace
	flagPlus
	flagAlt
)

// op is one step of a compiled format: a literal, or a field directive.
type op struct {
	lit   string // for fLiteral
	field field
	kind  kind
	conv  byte
	flags flags
	width int
	prec  int // -1: none
}

// Format is a compiled format string. It is immutable and safe for
// concurrent use.
type Format struct {
	src    string
	ops    []op
	caller bool
	thread bool
}

// String returns the source format string.
func (f *Format) String() string { return f.src }

// UsesCaller reports whether the format prints pathname, filename, module,
// lineno or funcName, so that the caller must fill Record.File, Line and
// Function.
func (f *Format) UsesCaller() bool { return f.caller }

// UsesThread reports whether the format prints thread, so that the caller
// must fill Record.Thread.
func (f *Format) UsesThread() bool { return f.thread }

// Compile parses a Python logging format string. Errors are of type *Error
// and name the position and the problem.
func Compile(s string) (*Format, error) {
	f := &Format{src: s}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			f.ops = append(f.ops, op{field: fLiteral, lit: lit.String()})
			lit.Reset()
		}
	}
	i := 0
	for i < len(s) {
		j := strings.IndexByte(s[i:], '%')
		if j < 0 {
			lit.WriteString(s[i:])
			break
		}
		lit.WriteString(s[i : i+j])
		i += j
		start := i
		errAt := func(format string, args ...any) error {
			return &Error{Pos: utf8.RuneCountInString(s[:start]) + 1, Msg: fmt.Sprintf(format, args...)}
		}
		i++ // '%'
		if i == len(s) {
			return nil, errAt("'%%' at the end of the format (write %%%% for a literal %%)")
		}
		if s[i] == '%' {
			lit.WriteByte('%')
			i++
			continue
		}
		if s[i] != '(' {
			return nil, errAt("directive without a field name (write %%(name)s, or %%%% for a literal %%)")
		}
		// Field name, with nested parentheses as Python counts them.
		i++
		depth, k := 1, i
		for ; k < len(s); k++ {
			if s[k] == '(' {
				depth++
			} else if s[k] == ')' {
				depth--
				if depth == 0 {
					break
				}
			}
		}
		if k == len(s) {
			return nil, errAt("'%%(' without a closing ')'")
		}
		name := s[i:k]
		i = k + 1
		o := op{prec: -1}
		found := false
		for _, fd := range fields {
			if fd.name == name {
				o.field, o.kind, found = fd.f, fd.kind, true
				break
			}
		}
		if !found {
			if hint := suggest(name); hint != "" {
				return nil, errAt("unknown field %q (did you mean %q?)", name, hint)
			}
			return nil, errAt("unknown field %q", name)
		}
	flagLoop:
		for ; i < len(s); i++ {
			switch s[i] {
			case '-':
				o.flags |= flagMinus
			case '0':
				o.flags |= flagZero
			case ' ':
				o.flags |= flagSpace
			case '+':
				o.flags |= flagPlus
			case '#':
				o.flags |= flagAlt
			default:
				break flagLoop
			}
		}
		var err error
		if o.width, i, err = number(s, i); err != nil {
			return nil, errAt("field %q: width %v", name, err)
		}
		if i < len(s) && s[i] == '.' {
			if o.prec, i, err = number(s, i+1); err != nil {
				return nil, errAt("field %q: precision %v", name, err)
			}
		}
		for i < len(s) && (s[i] == 'h' || s[i] == 'l' || s[i] == 'L') {
			i++
		}
		if i == len(s) {
			return nil, errAt("field %q has no conversion character (such as s or d) after it", name)
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		i += size
		switch c {
		case 's', 'r', 'a':
		case 'd', 'i', 'u', 'e', 'E', 'f', 'F', 'g', 'G':
			if o.kind == kindText {
				return nil, errAt("%%%c needs a number, but field %q is text (use s)", c, name)
			}
		case 'o', 'x', 'X':
			if o.kind != kindInt {
				return nil, errAt("%%%c needs an integer, but field %q is not one", c, name)
			}
		case '*':
			return nil, errAt("field %q: '*' width or precision cannot be used with a field name", name)
		default:
			return nil, errAt("field %q: unsupported conversion character %q", name, c)
		}
		o.conv = byte(c)
		switch o.field {
		case fPathname, fFilename, fModule, fLineno, fFuncName:
			f.caller = true
		case fThread:
			f.thread = true
		}
		flush()
		f.ops = append(f.ops, o)
	}
	flush()
	return f, nil
}

// number parses an optional decimal number at s[i:].
func number(s string, i int) (n, next int, err error) {
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
		if n > MaxWidth {
			return 0, i, fmt.Errorf("is larger than %d", MaxWidth)
		}
	}
	if i < len(s) && s[i] == '*' {
		return 0, i, fmt.Errorf("'*' cannot be used with a field name")
	}
	return n, i, nil
}

// suggest returns the field name closest to name, if one is close enough to
// be a likely typo.
func suggest(name string) string {
	best, bestDist := "", 3
	for _, fd := range fields {
		if d := textdist.Distance(strings.ToLower(name), strings.ToLower(fd.name)); d < bestDist {
			best, bestDist = fd.name, d
		}
	}
	return best
}

// Append formats r and appends the result to dst. It is safe for concurrent
// use; it allocates only for the r and a conversions.
func (f *Format) Append(dst []byte, r *Record) []byte {
	for i := range f.ops {
		o := &f.ops[i]
		switch {
		case o.field == fLiteral:
			dst = append(dst, o.lit...)
		case o.kind == kindInt:
			dst = o.appendInt(dst, r)
		case o.kind == kindFloat:
			dst = o.appendFloat(dst, r)
		default:
			dst = o.appendText(dst, r)
		}
	}
	return dst
}

func (o *op) intValue(r *Record) int64 {
	switch o.field {
	case fLevelNo:
		return int64(r.LevelNo)
	case fLineno:
		return int64(r.Line)
	case fProcess:
		return int64(r.Process)
	case fThread:
		return r.Thread
	}
	return 0
}

func (o *op) floatValue(r *Record) float64 {
	switch o.field {
	case fCreated:
		return float64(r.Time.Unix()) + float64(r.Time.Nanosecond())/1e9
	case fMsecs:
		return float64(r.Time.Nanosecond() / 1e6)
	case fRelativeCreated:
		return float64(r.Time.Sub(r.Start)) / 1e6
	}
	return 0
}

func (o *op) appendInt(dst []byte, r *Record) []byte {
	v := o.intValue(r)
	switch o.conv {
	case 's', 'r', 'a':
		start := len(dst)
		dst = strconv.AppendInt(dst, v, 10)
		return o.finishText(dst, start, false)
	case 'e', 'E', 'f', 'F', 'g', 'G':
		return o.formatFloat(dst, float64(v))
	}
	return o.formatInt(dst, v)
}

func (o *op) appendFloat(dst []byte, r *Record) []byte {
	v := o.floatValue(r)
	switch o.conv {
	case 's', 'r', 'a':
		start := len(dst)
		dst = appendRepr(dst, v)
		return o.finishText(dst, start, false)
	case 'd', 'i', 'u':
		t := math.Trunc(v)
		if math.IsNaN(t) || t >= math.MaxInt64 || t <= math.MinInt64 {
			// Out of range of int64 (Python's ints have no range): print the float.
			start := len(dst)
			dst = appendRepr(dst, t)
			return o.finishText(dst, start, false)
		}
		return o.formatInt(dst, int64(t))
	}
	return o.formatFloat(dst, v)
}

func (o *op) appendText(dst []byte, r *Record) []byte {
	start := len(dst)
	switch o.field {
	case fName:
		dst = append(dst, r.Name...)
	case fLevelName:
		dst = append(dst, r.LevelName...)
	case fMessage:
		dst = append(dst, r.Message...)
	case fAsctime:
		dst = AppendAsctime(dst, r.Time)
	case fPathname:
		dst = append(dst, r.File...)
	case fFilename:
		dst = append(dst, baseName(r.File)...)
	case fModule:
		b := baseName(r.File)
		if k := strings.LastIndexByte(b, '.'); k > 0 {
			b = b[:k]
		}
		dst = append(dst, b...)
	case fFuncName:
		dst = append(dst, FuncName(r.Function)...)
	case fProcessName:
		dst = append(dst, ProcessName...)
	case fThreadName:
		dst = append(dst, ThreadName...)
	}
	return o.finishText(dst, start, o.conv != 's')
}

// finishText applies quoting (for r and a, if quote), precision and width
// to the text at dst[start:]. Numbers are not quoted: Python's repr of a
// number is its digits.
func (o *op) finishText(dst []byte, start int, quote bool) []byte {
	if quote {
		var q string
		if o.conv == 'a' {
			q = strconv.QuoteToASCII(string(dst[start:]))
		} else {
			q = strconv.Quote(string(dst[start:]))
		}
		dst = append(dst[:start], q...)
	}
	if o.prec >= 0 {
		n, k := 0, start
		for k < len(dst) && n < o.prec {
			_, size := utf8.DecodeRune(dst[k:])
			k += size
			n++
		}
		dst = dst[:k]
	}
	if o.width > 0 {
		if n := utf8.RuneCount(dst[start:]); n < o.width {
			if o.flags&flagMinus != 0 {
				dst = appendSpaces(dst, o.width-n)
			} else {
				dst = insert(dst, start, o.width-n, ' ')
			}
		}
	}
	return dst
}

// sign returns the sign character of a number, or 0 for none.
func (o *op) sign(negative bool) byte {
	switch {
	case negative:
		return '-'
	case o.flags&flagPlus != 0:
		return '+'
	case o.flags&flagSpace != 0:
		return ' '
	}
	return 0
}

// formatInt formats v with a d, i, u, o, x or X conversion.
func (o *op) formatInt(dst []byte, v int64) []byte {
	start := len(dst)
	if s := o.sign(v < 0); s != 0 {
		dst = append(dst, s)
	}
	base := 10
	switch o.conv {
	case 'o':
		base = 8
		if o.flags&flagAlt != 0 {
			dst = append(dst, "0o"...)
		}
	case 'x', 'X':
		base = 16
		if o.flags&flagAlt != 0 {
			dst = append(dst, '0', o.conv)
		}
	}
	digitsAt := len(dst)
	u := uint64(v)
	if v < 0 {
		u = -u
	}
	dst = strconv.AppendUint(dst, u, base)
	if o.conv == 'X' {
		for k := digitsAt; k < len(dst); k++ {
			if c := dst[k]; c >= 'a' && c <= 'f' {
				dst[k] = c - 'a' + 'A'
			}
		}
	}
	if n := len(dst) - digitsAt; n < o.prec {
		dst = insert(dst, digitsAt, o.prec-n, '0')
	}
	return o.pad(dst, start, digitsAt)
}

// pad applies the width to the number at dst[start:], whose digits begin at
// digitsAt (after the sign and the base prefix).
func (o *op) pad(dst []byte, start, digitsAt int) []byte {
	n := len(dst) - start
	if n >= o.width {
		return dst
	}
	switch {
	case o.flags&flagMinus != 0:
		return appendSpaces(dst, o.width-n)
	case o.flags&flagZero != 0:
		return insert(dst, digitsAt, o.width-n, '0')
	}
	return insert(dst, start, o.width-n, ' ')
}

// formatFloat formats v with an e, E, f, F, g or G conversion.
func (o *op) formatFloat(dst []byte, v float64) []byte {
	start := len(dst)
	if s := o.sign(math.Signbit(v) && v == v); s != 0 {
		dst = append(dst, s)
	}
	digitsAt := len(dst)
	a := math.Abs(v)
	prec := o.prec
	if prec < 0 {
		prec = 6
	}
	alt := o.flags&flagAlt != 0
	upper := o.conv == 'E' || o.conv == 'F' || o.conv == 'G'
	switch {
	case math.IsInf(a, 0):
		dst = append(dst, "inf"...)
	case a != a:
		dst = append(dst, "nan"...)
	default:
		switch o.conv {
		case 'e', 'E':
			dst = strconv.AppendFloat(dst, a, 'e', prec, 64)
			if alt && prec == 0 {
				dst = insert(dst, digitsAt+1, 1, '.')
			}
		case 'f', 'F':
			dst = strconv.AppendFloat(dst, a, 'f', prec, 64)
			if alt && prec == 0 {
				dst = append(dst, '.')
			}
		default:
			dst = appendG(dst, a, prec, alt)
		}
	}
	if upper {
		for k := digitsAt; k < len(dst); k++ {
			if c := dst[k]; c >= 'a' && c <= 'z' {
				dst[k] = c - 'a' + 'A'
			}
		}
	}
	return o.pad(dst, start, digitsAt)
}

// appendG formats a (not negative, finite) as C's and Python's %g do.
func appendG(dst []byte, a float64, prec int, alt bool) []byte {
	if prec == 0 {
		prec = 1
	}
	start := len(dst)
	// The exponent after rounding to prec significant digits decides the style.
	dst = strconv.AppendFloat(dst, a, 'e', prec-1, 64)
	e := bytes.LastIndexByte(dst[start:], 'e')
	exp := 0
	for _, c := range dst[start+e+2:] {
		exp = exp*10 + int(c-'0')
	}
	if dst[start+e+1] == '-' {
		exp = -exp
	}
	if exp < -4 || exp >= prec {
		if !alt {
			// Strip trailing zeros of the mantissa, and its point.
			mant := dst[start : start+e]
			if bytes.IndexByte(mant, '.') >= 0 {
				k := len(mant)
				for k > 0 && mant[k-1] == '0' {
					k--
				}
				if k > 0 && mant[k-1] == '.' {
					k--
				}
				tail := len(dst) - (start + e)
				copy(dst[start+k:], dst[start+e:])
				dst = dst[:start+k+tail]
			}
		} else if prec == 1 {
			dst = insert(dst, start+1, 1, '.')
		}
		return dst
	}
	dst = strconv.AppendFloat(dst[:start], a, 'f', prec-1-exp, 64)
	if alt {
		if prec-1-exp == 0 {
			dst = append(dst, '.')
		}
		return dst
	}
	if bytes.IndexByte(dst[start:], '.') >= 0 {
		for dst[len(dst)-1] == '0' {
			dst = dst[:len(dst)-1]
		}
		if dst[len(dst)-1] == '.' {
			dst = dst[:len(dst)-1]
		}
	}
	return dst
}

// appendRepr formats v as Python's repr of a float does: the shortest text
// that reads back as v, positional from 1e-4 to 1e16 (with ".0" for whole
// numbers), scientific otherwise.
func appendRepr(dst []byte, v float64) []byte {
	switch a := math.Abs(v); {
	case math.IsInf(v, 1):
		return append(dst, "inf"...)
	case math.IsInf(v, -1):
		return append(dst, "-inf"...)
	case v != v:
		return append(dst, "nan"...)
	case a != 0 && (a < 1e-4 || a >= 1e16):
		return strconv.AppendFloat(dst, v, 'e', -1, 64)
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, v, 'f', -1, 64)
	if bytes.IndexByte(dst[start:], '.') < 0 {
		dst = append(dst, ".0"...)
	}
	return dst
}

// AppendAsctime appends t in local time as Python's default asctime:
// 2006-01-02 15:04:05,000.
func AppendAsctime(dst []byte, t time.Time) []byte {
	t = t.Local()
	year, month, day := t.Date()
	hour, minute, sec := t.Clock()
	if year >= 0 && year <= 9999 {
		dst = appendDigits(dst, year, 4)
	} else {
		dst = strconv.AppendInt(dst, int64(year), 10)
	}
	dst = append(dst, '-')
	dst = appendDigits(dst, int(month), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, day, 2)
	dst = append(dst, ' ')
	dst = appendDigits(dst, hour, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, minute, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	dst = append(dst, ',')
	return appendDigits(dst, t.Nanosecond()/1e6, 3)
}

func appendDigits(dst []byte, v, width int) []byte {
	var buf [8]byte
	k := len(buf)
	for ; width > 0 || v > 0; width-- {
		k--
		buf[k] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, buf[k:]...)
}

// FuncName returns a fully qualified Go function name without its package
// path: "github.com/a/b.(*T).M" becomes "(*T).M", "main.main.func1" becomes
// "main.func1".
func FuncName(fn string) string {
	if k := strings.LastIndexByte(fn, '/'); k >= 0 {
		fn = fn[k+1:]
	}
	if k := strings.IndexByte(fn, '.'); k >= 0 {
		fn = fn[k+1:]
	}
	return fn
}

func baseName(path string) string {
	if k := strings.LastIndexAny(path, `/\`); k >= 0 {
		return path[k+1:]
	}
	return path
}

func appendSpaces(dst []byte, n int) []byte {
	for ; n > 0; n-- {
		dst = append(dst, ' ')
	}
	return dst
}

// insert inserts n copies of c at dst[at].
func insert(dst []byte, at, n int, c byte) []byte {
	old := len(dst)
	for k := 0; k < n; k++ {
		dst = append(dst, c)
	}
	copy(dst[at+n:], dst[at:old])
	for k := at; k < at+n; k++ {
		dst[k] = c
	}
	return dst
}
