// Package pyini reads INI files the way Python's ConfigParser read the
// original OMQS.cfg: sections, "KEY = value" or "KEY: value" lines, full-line
// comments starting with ';' or '#', values continued on indented lines, and
// %-interpolation (see Interpolate).
//
// Parsing is done by gopkg.in/ini.v1 with the options that match
// ConfigParser. A line scanner reads the same bytes to learn the line number
// of every section and key, which ini.v1 does not keep, and to refuse the few
// constructs ini.v1 reads differently from Python (see Parse). The two readings
// are compared; a disagreement is reported as ErrMismatch rather than
// trusted.
package pyini

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/ini.v1"
)

// MaxSize is the largest file Parse accepts, in bytes.
const MaxSize = 64 << 10

// ErrMismatch reports that ini.v1 and the line scanner read a file
// differently. It means a defect of this package, not of the file.
var ErrMismatch = errors.New("pyini: ini.v1 and the line scanner disagree")

// SyntaxError is a line Parse cannot read. Msg never repeats the value of a
// key (it may hold a password).
type SyntaxError struct {
	Line int    // 1-based line number
	Msg  string // what is wrong
}

func (e *SyntaxError) Error() string { return "line " + strconv.Itoa(e.Line) + ": " + e.Msg }

// File is a parsed INI file.
type File struct {
	// Sections in order of first appearance. Sections whose names differ
	// only in case are one section, as are repeated sections.
	Sections []*Section

	index map[string]*Section // by Fold(Name)
}

// Section returns the section called name, in any case, or nil.
func (f *File) Section(name string) *Section {
	return f.index[Fold(name)]
}

// Fold returns the form of a section or key name in which names that differ
// only in case are equal (Python's optionxform lowercases).
func Fold(name string) string { return strings.ToLower(name) }

// Section is one [Name] of a File.
type Section struct {
	Name string // as first written
	Line int    // line of its first header
	// Keys in order of first appearance. Keys whose names differ only in
	// case are one key (Python lowercases key names); the last value wins.
	Keys []*Key

	index map[string]*Key // by Fold(Name)
}

// Key returns the key called name, in any case, or nil. s may be nil.
func (s *Section) Key(name string) *Key {
	if s == nil {
		return nil
	}
	return s.index[Fold(name)]
}

// Key is one setting of a Section.
type Key struct {
	Name string // as written on Line
	Line int    // line of the setting in effect
	// Value is the raw value, not interpolated: spaces around it removed,
	// indented continuation lines appended after a "\n" each. Blank lines
	// and comment lines among them are dropped (Python keeps a blank first
	// line: "KEY =" followed by indented lines gives "\nline...").
	Value string
	// Overrides lists the lines of earlier settings of the same key in the
	// same section, which this one replaces.
	Overrides []int
}

// loadOptions are the ini.v1 options that read a file as Python's
// ConfigParser does:
//   - only whole lines starting with ';' or '#' are comments; ';' and '#'
//     inside a value are part of it (IgnoreInlineComment);
//   - a trailing backslash is kept, not a line continuation
//     (IgnoreContinuation); an indented line continues the value above it
//     (AllowPythonMultilineValues), unless it is a comment: ini.v1 keeps
//     those in the value and Parse removes them, as Python 3 does; a blank
//     line ends the value (Python 3 would keep it when more indented lines
//     follow);
//   - quotes around a value are kept (PreserveSurroundedQuote) and nothing is
//     unescaped (UnescapeValueDoubleQuotes and UnescapeValueCommentSymbols
//     stay off);
//   - a line without '=' or ':' is an error (AllowBooleanKeys and
//     SkipUnrecognizableLines stay off);
//   - a repeated key keeps its last value (AllowShadows stays off);
//   - names keep their case (Insensitive stays off): Parse folds case
//     itself, so that [DEFAULT], which ini.v1 never lowercases, folds like
//     any other section.
//
// ini.v1 reads %(name)s itself only in Key.String, which Parse never calls.
func loadOptions(size int) ini.LoadOptions {
	return ini.LoadOptions{
		IgnoreInlineComment:        true,
		IgnoreContinuation:         true,
		AllowPythonMultilineValues: true,
		PreserveSurroundedQuote:    true,
		KeyValueDelimiters:         "=:",
		// ini.v1 looks for continuation lines in what it can peek at
		// once: let that be the whole file.
		ReaderBufferSize: size + 1,
	}
}

// Parse reads data as an INI file.
//
// Besides what Python's ConfigParser rejects (a line that is neither a
// section header, a comment nor KEY=value; a key before the first section; an
// empty section or key name), Parse refuses what ini.v1 would read otherwise
// than Python: a key name starting with a quote or backquote; a value
// starting with a backquote or three double quotes; an indented line after a
// blank or comment line that follows a key (Python adds it to that key's
// value); and a continuation line indented no deeper than its key (Python 3
// reads a new key). Those errors are *SyntaxError. A file larger than
// MaxSize is an error too.
func Parse(data []byte) (*File, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("the file has %d bytes, more than the %d a configuration file may have", len(data), MaxSize)
	}
	sc, err := scan(data)
	if err != nil {
		return nil, err
	}
	raw, err := ini.LoadSources(loadOptions(len(data)), data)
	if err != nil {
		// ini.v1's message quotes the raw line, which may hold a
		// password, and has no line number: give only its type.
		return nil, fmt.Errorf("%w: ini.v1 rejects a file the scanner accepts (%T)", ErrMismatch, err)
	}
	if err := sc.compare(raw); err != nil {
		return nil, err
	}
	return sc.file(raw), nil
}

// entry is one KEY=value line as the scanner reads it.
type entry struct {
	section string   // section name exactly as written, as ini.v1 keys it
	iniKey  string   // key name as ini.v1 stores it ("-" becomes "#1", "#2"...)
	name    string   // key name as written
	line    int      // 1-based
	indent  int      // indentation of the key line
	parts   []string // the value's first line and continuation lines, trimmed
}

func (e *entry) value() string { return joinParts(e.parts) }

type header struct {
	name string
	line int
}

type scanned struct {
	headers []header
	entries []*entry
}

// stripBOM removes leading byte order marks as ini.v1 does (all of them).
func stripBOM(data []byte) []byte {
	for {
		switch {
		case len(data) >= 2 && (data[0] == 0xFE && data[1] == 0xFF || data[0] == 0xFF && data[1] == 0xFE):
			data = data[2:]
		case len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF:
			data = data[3:]
		default:
			return data
		}
	}
}

// isContinuation reports whether ini.v1 (AllowPythonMultilineValues) takes
// raw, a line without its '\n', as a continuation of the value above it.
func isContinuation(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == ' ' || raw[0] == '\t' || raw[0] == '\f')
}

// indent returns the width of the leading white space of raw, in bytes.
func indent(raw []byte) int {
	return len(raw) - len(bytes.TrimLeftFunc(raw, unicode.IsSpace))
}

// scan walks the file line by line with the rules ini.v1 applies under
// loadOptions, recording where every section and key is.
func scan(data []byte) (*scanned, error) {
	data = stripBOM(data)
	lines := bytes.Split(data, []byte("\n"))
	sc := &scanned{}
	var (
		section  string
		inSect   bool
		autoIncr = 1    // ini.v1 names the keys "-" of a section #1, #2...
		last     *entry // the key whose value continuation lines extend
		prev     *entry // the last key of the current section
	)
	for i, raw := range lines {
		lineNo := i + 1
		hasNewline := i < len(lines)-1
		if last != nil && isContinuation(raw) {
			part := strings.TrimSpace(string(raw))
			if part != "" && !isComment(part) && indent(raw) <= last.indent {
				// Python 3 continues a value only with lines indented
				// deeper than its key; ini.v1 with any indented line.
				return nil, &SyntaxError{lineNo, "a line indented no deeper than the key " + last.name + " above it (line " +
					strconv.Itoa(last.line) + ") is read differently by different Pythons: indent it more to continue the value, or not at all"}
			}
			if part != "" && !isComment(part) {
				last.parts = append(last.parts, part)
			}
			continue
		}
		last = nil
		line := bytes.TrimLeftFunc(raw, unicode.IsSpace)
		if len(line) == 0 || line[0] == '#' || line[0] == ';' {
			continue
		}
		if prev != nil && isContinuation(raw) {
			// Python goes on with the value of prev across blank and
			// comment lines; ini.v1 reads a new line. Refuse to guess.
			return nil, &SyntaxError{lineNo, "an indented line after a blank or comment line: Python would add it to the value of " +
				prev.name + " (line " + strconv.Itoa(prev.line) + "); remove the indentation or the lines between"}
		}
		if line[0] == '[' {
			end := bytes.LastIndexByte(line, ']')
			if end < 0 {
				return nil, &SyntaxError{lineNo, "section header without closing ']'"}
			}
			if end == 1 {
				return nil, &SyntaxError{lineNo, "empty section name"}
			}
			section, inSect, autoIncr, prev = string(line[1:end]), true, 1, nil
			sc.headers = append(sc.headers, header{section, lineNo})
			continue
		}
		if !inSect {
			return nil, &SyntaxError{lineNo, "setting before the first [Section] header"}
		}
		if line[0] == '"' || line[0] == '`' {
			return nil, &SyntaxError{lineNo, "quoted key names are not supported"}
		}
		delim := bytes.IndexAny(line, "=:")
		if delim < 0 {
			return nil, &SyntaxError{lineNo, "not a [Section] header, a ; or # comment, nor KEY = value"}
		}
		if delim == 0 {
			return nil, &SyntaxError{lineNo, "no key name before '" + string(line[0]) + "'"}
		}
		name := strings.TrimSpace(string(line[:delim]))
		rest := strings.TrimLeftFunc(string(line[delim+1:]), unicode.IsSpace)
		if strings.HasPrefix(rest, "`") || strings.HasPrefix(rest, `"""`) {
			return nil, &SyntaxError{lineNo, name + ": a value starting with ` or \"\"\" is not supported"}
		}
		iniKey := name
		if name == "-" {
			iniKey = "#" + strconv.Itoa(autoIncr)
			autoIncr++
		}
		e := &entry{section: section, iniKey: iniKey, name: name, line: lineNo, indent: indent(raw), parts: []string{strings.TrimSpace(rest)}}
		sc.entries = append(sc.entries, e)
		prev = e
		if hasNewline {
			last = e
		}
	}
	return sc, nil
}

// joinParts builds a value from its trimmed lines: blank lines dropped, the
// others joined with "\n".
func joinParts(parts []string) string {
	n := 0
	for _, p := range parts {
		if p != "" {
			parts[n] = p
			n++
		}
	}
	return strings.Join(parts[:n], "\n")
}

// normalize brings a value as ini.v1 returns it to the form of joinParts,
// without the comment lines ini.v1 keeps among continuation lines.
func normalize(v string) string {
	lines := strings.Split(v, "\n")
	parts := lines[:0]
	for i, line := range lines {
		if line = strings.TrimSpace(line); i == 0 || !isComment(line) {
			parts = append(parts, line)
		}
	}
	return joinParts(parts)
}

// isComment reports whether a trimmed continuation line is a comment, as
// Python 3's ConfigParser has it.
func isComment(line string) bool {
	return strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";")
}

type exactKey struct{ section, key string }

// compare checks that ini.v1 found the same keys with the same values.
func (sc *scanned) compare(f *ini.File) error {
	want := make(map[exactKey]*entry, len(sc.entries))
	for _, e := range sc.entries {
		want[exactKey{e.section, e.iniKey}] = e // the last one wins, as in ini.v1
	}
	got := 0
	for _, s := range f.Sections() {
		for _, k := range s.Keys() {
			got++
			e, ok := want[exactKey{s.Name(), k.Name()}]
			if !ok {
				return fmt.Errorf("%w: ini.v1 reads a key %q in section %q that the scanner does not see", ErrMismatch, k.Name(), s.Name())
			}
			if normalize(k.Value()) != e.value() {
				return fmt.Errorf("%w: line %d: ini.v1 reads another value for key %q", ErrMismatch, e.line, e.name)
			}
		}
	}
	if got != len(want) {
		return fmt.Errorf("%w: ini.v1 reads %d keys, the scanner %d", ErrMismatch, got, len(want))
	}
	return nil
}

// file merges sections and keys case-insensitively, taking values from f.
func (sc *scanned) file(f *ini.File) *File {
	out := &File{index: map[string]*Section{}}
	for _, h := range sc.headers {
		if out.index[Fold(h.name)] == nil {
			s := &Section{Name: h.name, Line: h.line, index: map[string]*Key{}}
			out.index[Fold(h.name)] = s
			out.Sections = append(out.Sections, s)
		}
	}
	for _, e := range sc.entries {
		s := out.index[Fold(e.section)]
		k := s.index[Fold(e.name)]
		if k == nil {
			k = &Key{}
			s.index[Fold(e.name)] = k
			s.Keys = append(s.Keys, k)
		} else {
			k.Overrides = append(k.Overrides, k.Line)
		}
		value := f.Section(e.section).Key(e.iniKey).Value()
		k.Name, k.Line, k.Value = e.name, e.line, normalize(value)
	}
	return out
}
