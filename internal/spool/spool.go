// Package spool keeps messages that could not be delivered in a local file,
// one JSON object per line, and hands them back for replay.
//
// A spool file is appended with one write per batch and never rewritten in
// place. To replay, Take renames it to PATH.replay.<n>; the replayed file is
// removed only once everything in it was delivered, so a crash during replay
// delivers its messages again rather than losing them.
package spool

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Record is one spooled message.
type Record struct {
	Exchange  string         `json:"exchange"`
	Key       string         `json:"key"`
	MessageID string         `json:"id,omitempty"`
	Timestamp time.Time      `json:"ts"`
	Body      string         `json:"body,omitempty"`
	Body64    string         `json:"body64,omitempty"`
	Headers   map[string]any `json:"headers,omitempty"`
}

// NewRecord builds a Record, keeping body as text when it is valid UTF-8 and
// as base64 otherwise.
func NewRecord(exchange, key, id string, ts time.Time, body []byte, headers map[string]any) Record {
	r := Record{Exchange: exchange, Key: key, MessageID: id, Timestamp: ts, Headers: headers}
	if utf8.Valid(body) {
		r.Body = string(body)
	} else {
		r.Body64 = base64.StdEncoding.EncodeToString(body)
	}
	return r
}

// Bytes returns the record's body.
func (r Record) Bytes() ([]byte, error) {
	if r.Body64 != "" {
		return base64.StdEncoding.DecodeString(r.Body64)
	}
	return []byte(r.Body), nil
}

// Spool is an append-only spool file. It is safe for concurrent use.
type Spool struct {
	path string

	mu     sync.Mutex
	f      *os.File
	closed bool // Close was called: Append does not keep the file open
	// torn: a write failed and may have left a partial line; the next
	// write starts a new line so that its first record is not glued to it.
	torn bool
}

// New returns a Spool writing to path. The file and its folder are created on
// the first Append.
func New(path string) *Spool { return &Spool{path: path} }

// Path returns the spool file's path.
func (s *Spool) Path() string { return s.path }

// Append writes recs to the end of the file with a single write.
func (s *Spool) Append(recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			// Headers that JSON cannot carry are dropped rather than the message.
			r.Headers = nil
			if err := enc.Encode(r); err != nil {
				return fmt.Errorf("spool %s: encode: %w", s.path, err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		if err := os.MkdirAll(filepath.Dir(s.path), 0o755); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.f = f
	}
	data := buf.Bytes()
	if s.torn {
		data = append([]byte{'\n'}, data...)
	}
	_, err := s.f.Write(data)
	s.torn = err != nil
	if s.closed {
		// After Close: write through and keep no file open.
		if serr := s.f.Sync(); err == nil {
			err = serr
		}
		s.f.Close()
		s.f = nil
	}
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.path, err)
	}
	return nil
}

// Take moves the current spool file aside for replay and returns the paths of
// every file waiting for replay, oldest first (files left by an earlier run
// included). Appends after Take start a new spool file.
func (s *Spool) Take() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		if err := s.f.Sync(); err != nil {
			return nil, fmt.Errorf("spool %s: %w", s.path, err)
		}
		s.f.Close()
		s.f = nil
	}
	if fi, err := os.Stat(s.path); err == nil && fi.Size() > 0 {
		dst := fmt.Sprintf("%s.replay.%d", s.path, time.Now().UnixNano())
		if err := os.Rename(s.path, dst); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	} else if err == nil {
		os.Remove(s.path) // empty
	}
	return s.pending()
}

// Pending returns the files waiting for replay, oldest first.
func (s *Spool) Pending() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending()
}

func (s *Spool) pending() ([]string, error) {
	matches, err := filepath.Glob(globEscape(s.path) + ".replay.*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	sort.Slice(matches, func(i, j int) bool { return replaySeq(matches[i]) < replaySeq(matches[j]) })
	return matches, nil
}

func replaySeq(p string) int64 {
	n, _ := strconv.ParseInt(p[strings.LastIndexByte(p, '.')+1:], 10, 64)
	return n
}

func globEscape(p string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(p)
}

// Close closes the file. An Append after Close still writes (and syncs)
// its records, without keeping the file open.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.f = nil
	return err
}

// Read calls fn for every record of the file at path, in order. Lines that do
// not decode are skipped and counted in bad. It stops at fn's first error.
func Read(path string, fn func(Record) error) (bad int, err error) {
	err = Scan(path, func(l Line) error {
		if !l.OK {
			bad++
			return nil
		}
		return fn(l.Record)
	})
	return bad, err
}

// Line is one non-blank line of a spool file, as Scan hands it over.
type Line struct {
	// Number is the line's 1-based number in the file.
	Number int
	// Raw is the line without its newline. It is valid only during the call.
	Raw []byte
	// Record is the decoded record when OK is true.
	Record Record
	// OK is false for a line that does not decode (a torn write, a line
	// edited by hand, a body64 that is not base64): Read counts it as bad.
	OK bool
}

// Scan calls fn for every non-blank line of the file at path, in order,
// decoded as Read decodes it, with the raw bytes of the line, so that a
// caller can copy lines it keeps. It stops at fn's first error.
func Scan(path string, fn func(Line) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 256<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		l := Line{Number: n, Raw: line}
		l.OK = json.Unmarshal(line, &l.Record) == nil
		if l.OK && l.Record.Body64 != "" {
			_, err := base64.StdEncoding.DecodeString(l.Record.Body64)
			l.OK = err == nil
		}
		if !l.OK {
			l.Record = Record{}
		}
		if err := fn(l); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("spool %s: %w", path, err)
	}
	return nil
}

// Count returns how many records the spool file and its replay files hold.
func (s *Spool) Count() (int, error) {
	files, err := s.Pending()
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(s.path); err == nil {
		files = append(files, s.path)
	}
	total := 0
	for _, p := range files {
		if _, err := Read(p, func(Record) error { total++; return nil }); err != nil && !errors.Is(err, os.ErrNotExist) {
			return total, err
		}
	}
	return total, nil
}
