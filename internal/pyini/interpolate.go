package pyini

import (
	"errors"
	"fmt"
	"strings"
)

// MaxDepth is how deeply %(name)s references may nest, as in Python's
// configparser (MAX_INTERPOLATION_DEPTH).
const MaxDepth = 10

// Limits that keep a hostile file from making Interpolate run for ever or
// exhaust memory: Python has none and would hang on a value whose references
// multiply at every level. No hand-written configuration comes near them.
const (
	// MaxExpansions is how many references one call may expand in total.
	MaxExpansions = 1000
	// MaxOutput is the longest value, in bytes, a call may produce.
	MaxOutput = 1 << 16
)

// Errors returned by Interpolate, wrapped with detail. The detail never
// repeats the value itself (it may hold a password), only positions and
// reference names.
var (
	// ErrSyntax: a '%' not followed by '%' or by a complete %(name)s.
	ErrSyntax = errors.New("bad interpolation syntax")
	// ErrMissing: %(name)s names a key that does not exist.
	ErrMissing = errors.New("undefined interpolation reference")
	// ErrDepth: references nest deeper than MaxDepth (usually a cycle).
	ErrDepth = errors.New("interpolation too deep")
	// ErrTooLarge: the value expands beyond MaxExpansions or MaxOutput.
	ErrTooLarge = errors.New("interpolation too large")
)

// Interpolate expands value as Python's SafeConfigParser (configparser's
// BasicInterpolation) does when a program reads it:
//
//   - "%%" is a literal "%";
//   - "%(name)s" is replaced by the value of the key name, itself expanded
//     by the same rules;
//   - any other "%" is an error, and so is a reference lookup cannot resolve.
//
// lookup receives the reference's name lowercased (Python lowercases key
// names) and returns the key's raw, unexpanded value. In a configuration file
// it resolves keys of the value's own section, then of [DEFAULT]. References
// may nest MaxDepth deep; a cycle therefore ends with ErrDepth.
//
// The returned error wraps ErrSyntax, ErrMissing, ErrDepth or ErrTooLarge.
// Interpolate never panics and always returns, whatever value and lookup
// return.
func Interpolate(value string, lookup func(name string) (string, bool)) (string, error) {
	if !strings.Contains(value, "%") {
		return value, nil
	}
	in := interpolator{lookup: lookup}
	if err := in.expand(value, 1, ""); err != nil {
		return "", err
	}
	return in.out.String(), nil
}

type interpolator struct {
	lookup     func(string) (string, bool)
	out        strings.Builder
	expansions int
}

// expand appends rest, expanded, to in.out. within names the reference whose
// value rest is ("" at the top level); it only serves error messages.
func (in *interpolator) expand(rest string, depth int, within string) error {
	if depth > MaxDepth {
		return fmt.Errorf("%w: references nest more than %d deep (is there a cycle through %%(%s)s?)", ErrDepth, MaxDepth, within)
	}
	where := func() string {
		if within == "" {
			return ""
		}
		return fmt.Sprintf(" in the value of %%(%s)s", within)
	}
	pos := 0
	for pos < len(rest) {
		p := strings.IndexByte(rest[pos:], '%')
		if p < 0 {
			in.out.WriteString(rest[pos:])
			break
		}
		in.out.WriteString(rest[pos : pos+p])
		pos += p
		if in.out.Len() > MaxOutput {
			return fmt.Errorf("%w: the value grows beyond %d bytes", ErrTooLarge, MaxOutput)
		}
		switch next := byteAt(rest, pos+1); next {
		case '%':
			in.out.WriteByte('%')
			pos += 2
		case '(':
			// Python: %\(([^)]+)\)s
			end := strings.IndexByte(rest[pos+2:], ')')
			if end <= 0 || byteAt(rest, pos+2+end+1) != 's' {
				return fmt.Errorf("%w: '%%(' at byte %d%s does not start a reference of the form %%(name)s", ErrSyntax, pos+1, where())
			}
			name := strings.ToLower(rest[pos+2 : pos+2+end])
			pos += 2 + end + 2
			in.expansions++
			if in.expansions > MaxExpansions {
				return fmt.Errorf("%w: more than %d references to expand", ErrTooLarge, MaxExpansions)
			}
			v, ok := in.lookup(name)
			if !ok {
				return fmt.Errorf("%w: %%(%s)s%s names no defined key", ErrMissing, name, where())
			}
			if strings.Contains(v, "%") {
				if err := in.expand(v, depth+1, name); err != nil {
					return err
				}
			} else {
				in.out.WriteString(v)
			}
		default:
			return fmt.Errorf("%w: '%%' at byte %d%s must be followed by '%%' (a literal %%) or by '(name)s'", ErrSyntax, pos+1, where())
		}
	}
	if in.out.Len() > MaxOutput {
		return fmt.Errorf("%w: the value grows beyond %d bytes", ErrTooLarge, MaxOutput)
	}
	return nil
}

// byteAt returns s[i], or 0 past the end of s.
func byteAt(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return 0
}
