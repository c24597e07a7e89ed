// Package spool keeps messages that could not be delivered in a local file,
// one JSON object per line, and hands them back for replay.
//
// A spool file is appended with whole lines, in writes of at most
// ChunkSize bytes, and never rewritten in place. To replay, Take renames it
// to PATH.replay.<n>; the replayed file is removed only once everything in
// it was delivered, so a crash during replay delivers its messages again
// rather than losing them. Meanwhile the replaying process records in
// PATH.replay.<n>.done how far the file was delivered (SaveMark), so that
// the next replay starts there instead of at the beginning.
//
// Replay also reads the lines of the original Python library, which spooled
// each message as "key:body". A line that cannot be replayed is never
// dropped: it is appended to PATH.unreadable, as it was, for someone to look
// at.
//
// Files are opened without following a symbolic link, created readable by
// the process's user only, and replayed only when they are regular files
// owned by that user (see package safefile).
package spool

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/omqs-go/omqs/internal/safefile"
)

// MaxBody is the largest body a record carries; it equals the root package's
// MaxBodySize (a test there checks it). Append refuses larger ones, and the
// reader reads any line a record of that size makes (see LineLimit).
const MaxBody = 128 << 20

// headroom is what a line may hold besides its body: exchange, key, id,
// time stamp and headers.
const headroom = 4 << 20

// LineLimit returns the longest line that a record with a body of at most
// maxBody bytes is written as: Append chooses the body's encoding so that it
// takes at most as many bytes as base64 does, and refuses a line longer than
// LineLimit(MaxBody).
func LineLimit(maxBody int) int {
	return base64.StdEncoding.EncodedLen(maxBody) + headroom
}

// Record is one spooled message.
type Record struct {
	Exchange  string         `json:"exchange"`
	Key       string         `json:"key"`
	MessageID string         `json:"id,omitempty"`
	Timestamp time.Time      `json:"ts"`
	Body      string         `json:"body,omitempty"`
	Body64    string         `json:"body64,omitempty"`
	Headers   map[string]any `json:"headers,omitempty"`
	// ContentType is the message's content type; "" (and in records
	// written before it was kept) lets the publisher choose one.
	ContentType string `json:"content_type,omitempty"`

	// raw is the body as read back: decoded from Body64, or the body of a
	// line of the original library.
	raw []byte
	// legacy: read from a "key:body" line of the original library.
	legacy bool
	// end is the offset just after the record's line in the file read.
	end int64
}

// End returns the offset just after the record's line in the file it was
// read from (0 for a record not read from a file): what SaveMark takes once
// the record and every line before it were handled.
func (r Record) End() int64 { return r.end }

// NewRecord builds a Record. The body is kept as text when it is valid
// UTF-8 and JSON escapes it into no more bytes than base64 would take;
// otherwise (binary data, text full of control characters) as base64.
func NewRecord(exchange, key, id string, ts time.Time, body []byte, headers map[string]any) Record {
	r := Record{Exchange: exchange, Key: key, MessageID: id, Timestamp: ts, Headers: headers}
	if utf8.Valid(body) && escapedLen(body) <= base64.StdEncoding.EncodedLen(len(body)) {
		r.Body = string(body)
	} else {
		r.Body64 = base64.StdEncoding.EncodeToString(body)
	}
	return r
}

// escapedLen returns an upper bound of the length of b as a JSON string's
// contents: a control character takes up to 6 bytes (\u001f), a quote or
// backslash 2, and U+2028 or U+2029 (3 bytes, starting with 0xE2) 6.
func escapedLen(b []byte) int {
	n := len(b)
	for _, c := range b {
		switch {
		case c < 0x20:
			n += 5
		case c == '"' || c == '\\':
			n++
		case c == 0xE2:
			n += 3
		}
	}
	return n
}

// Bytes returns the record's body.
func (r Record) Bytes() ([]byte, error) {
	if r.raw != nil {
		return r.raw, nil
	}
	if r.Body64 != "" {
		return base64.StdEncoding.DecodeString(r.Body64)
	}
	return []byte(r.Body), nil
}

// Legacy reports whether the record was read from a "key:body" line of the
// original Python library (which carries no exchange, id, time stamp or
// headers).
func (r Record) Legacy() bool { return r.legacy }

// Spool is an append-only spool file. It is safe for concurrent use.
type Spool struct {
	path string

	mu     sync.Mutex
	f      *os.File
	closed bool // Close was called: Append does not keep the file open
	// torn: the file may end with a partial line (a write failed, or an
	// earlier process died while writing); the next write starts a new line
	// so that its first record is not glued to it.
	torn bool

	chunk   int       // ChunkSize, unless a test set another
	onWrite func(int) // a test's observer of writes
}

// New returns a Spool writing to path. The file and its folder are created on
// the first Append.
func New(path string) *Spool { return &Spool{path: path} }

// Path returns the spool file's path.
func (s *Spool) Path() string { return s.path }

// AsidePath returns the file that replay appends the lines it cannot replay
// to: PATH.unreadable.
func (s *Spool) AsidePath() string { return s.path + ".unreadable" }

// CheckFolder returns an error if the spool's folder exists and others than
// its owner may write to it (see safefile.CheckFolder), or if a file cannot
// be created in it (it is created, private, when missing): a spool that
// cannot be written is found when the program starts, not when an outage
// makes it needed.
func (s *Spool) CheckFolder() error {
	dir := filepath.Dir(s.path)
	if err := safefile.CheckFolder(dir); err != nil {
		return err
	}
	if err := safefile.MkdirAll(dir); err != nil {
		return fmt.Errorf("spool folder %s cannot be created: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".omqs-check-*")
	if err != nil {
		return fmt.Errorf("spool folder %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// ChunkSize is the most bytes of encoded lines Append builds before it
// writes them: a spool of many large records is written chunk by chunk, so
// that the memory it takes stays bounded. A record whose line is longer is
// written alone.
const ChunkSize = 4 << 20

// SetChunkSize replaces ChunkSize for s (n <= 0: ChunkSize again), and
// calls onWrite, when not nil, with the length of every write. It is meant
// for tests; call it before s is used.
func (s *Spool) SetChunkSize(n int, onWrite func(n int)) {
	s.chunk, s.onWrite = n, onWrite
}

// Append writes recs to the end of the file, whole lines in writes of at
// most ChunkSize bytes (or one line). A record whose body is larger than
// MaxBody is refused, so that every line written can be read back; the
// records before it are written, the ones after it are not.
func (s *Spool) Append(recs ...Record) error {
	_, err := s.AppendEach(len(recs), func(i int) Record { return recs[i] })
	return err
}

// AppendEach is Append for n records, the i-th of which rec builds when it
// is its turn to be encoded, so that a caller need not hold them all at
// once. It returns how many of them (the first ones) were written. After
// Close, the file is synced once when they are.
func (s *Spool) AppendEach(n int, rec func(i int) Record) (written int, err error) {
	if n == 0 {
		return 0, nil
	}
	chunk := s.chunk
	if chunk <= 0 {
		chunk = ChunkSize
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		f, torn, err := openForAppend(s.path)
		if err != nil {
			return 0, fmt.Errorf("spool: %w", err)
		}
		s.f, s.torn = f, s.torn || torn
	}
	defer func() {
		if s.closed {
			// After Close: write through and keep no file open.
			if serr := s.f.Sync(); err == nil && serr != nil {
				err = fmt.Errorf("spool %s: %w", s.path, serr)
			}
			s.f.Close()
			s.f = nil
		}
	}()
	var buf, line bytes.Buffer // lines to write; the line of the record being encoded
	enc := json.NewEncoder(&line)
	enc.SetEscapeHTML(false)
	limit := LineLimit(MaxBody)
	inBuf := 0 // records in buf
	write := func(data []byte, recs int) error {
		if s.torn {
			// End the partial line the file ends with first.
			if _, err := s.f.Write([]byte{'\n'}); err != nil {
				return fmt.Errorf("spool %s: %w", s.path, err)
			}
			s.torn = false
		}
		if s.onWrite != nil {
			s.onWrite(len(data))
		}
		_, err := s.f.Write(data)
		s.torn = err != nil
		if err != nil {
			return fmt.Errorf("spool %s: %w", s.path, err)
		}
		written += recs
		return nil
	}
	flush := func() error {
		if inBuf == 0 {
			return nil
		}
		err := write(buf.Bytes(), inBuf)
		buf.Reset()
		inBuf = 0
		return err
	}
	for i := range n {
		r := rec(i)
		line.Reset()
		if err := enc.Encode(r); err != nil || line.Len() > limit {
			// Headers that JSON cannot carry (or that would make the line
			// too long to read back) are dropped rather than the message.
			line.Reset()
			r.Headers = nil
			err := enc.Encode(r)
			if err == nil && line.Len() > limit {
				err = fmt.Errorf("a record of %d bytes is larger than the %d the spool reads back", line.Len(), limit)
			}
			if err != nil {
				if ferr := flush(); ferr != nil {
					return written, ferr
				}
				return written, fmt.Errorf("spool %s: encode: %w", s.path, err)
			}
		}
		if buf.Len()+line.Len() > chunk {
			if err := flush(); err != nil {
				return written, err
			}
		}
		if line.Len() >= chunk {
			if err := write(line.Bytes(), 1); err != nil {
				return written, err
			}
			continue
		}
		buf.Write(line.Bytes())
		inBuf++
	}
	return written, flush()
}

// openForAppend opens (creating it, and its folder) the file at path for
// appending, and reports whether it ends with a partial line.
func openForAppend(path string) (f *os.File, torn bool, err error) {
	if err := safefile.MkdirAll(filepath.Dir(path)); err != nil {
		return nil, false, err
	}
	f, err = safefile.OpenAppend(path, true)
	if err != nil {
		return nil, false, err
	}
	return f, endsTorn(f), nil
}

// endsTorn reports whether the regular file f is not empty and does not end
// with a newline. When that cannot be read, it says yes: an empty line costs
// nothing.
func endsTorn(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return true
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return false
	}
	var last [1]byte
	if _, err := f.ReadAt(last[:], fi.Size()-1); err != nil {
		return true
	}
	return last[0] != '\n'
}

// Take moves the current spool file aside for replay and returns the paths of
// every file waiting for replay, oldest first (files left by an earlier run
// included). Appends after Take start a new spool file. Only a regular file
// is moved: a symbolic link or a device in its place stays where it is.
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
	if fi, err := os.Lstat(s.path); err == nil && fi.Mode().IsRegular() {
		if fi.Size() > 0 {
			dst := fmt.Sprintf("%s.replay.%d", s.path, time.Now().UnixNano())
			if err := os.Rename(s.path, dst); err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
		} else {
			os.Remove(s.path) // empty
		}
	}
	s.removeStaleMarks()
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
	files := matches[:0]
	seq := make(map[string]uint64, len(matches))
	for _, p := range matches {
		if n, ok := replaySeq(p); ok {
			files = append(files, p)
			seq[p] = n
		}
	}
	sort.Slice(files, func(i, j int) bool { return seq[files[i]] < seq[files[j]] })
	return files, nil
}

// replaySeq returns the number that ends a replay file's name; names that
// do not end with one (a refused file, renamed) are not replay files.
func replaySeq(p string) (uint64, bool) {
	digits := p[strings.LastIndexByte(p, '.')+1:]
	if digits == "" || len(digits) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range []byte(digits) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
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

// Read calls fn for every record of the file at path after its mark (see
// SaveMark), in order, the lines of the original library included (with an
// empty exchange). Lines that are not
// records are skipped and counted in bad. It stops at fn's first error. The
// file must be a regular file owned by the process's user.
func Read(path string, fn func(Record) error) (bad int, err error) {
	res, err := read(path, ReplayOptions{MaxBody: MaxBody}, false, fn)
	return res.Unreadable + res.TooLarge, err
}

// Count returns how many records the spool file and its replay files hold.
func (s *Spool) Count() (int, error) {
	files, err := s.Pending()
	if err != nil {
		return 0, err
	}
	if _, err := os.Lstat(s.path); err == nil {
		files = append(files, s.path)
	}
	total := 0
	for _, p := range files {
		if _, err := Read(p, func(Record) error { total++; return nil }); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return total, err
		}
	}
	return total, nil
}

// ErrRefused: a file waiting for replay is not a regular file owned by the
// process's user. Replay renames it to PATH.refused and leaves it there.
var ErrRefused = errors.New("spool: file refused for replay")

// ReplayOptions say what Replay accepts.
type ReplayOptions struct {
	// Exchange is the only exchange records may name: a record naming
	// another is set aside. A line of the original library gets it.
	Exchange string
	// DefaultKey is the key of an original line with an empty key.
	DefaultKey string
	// MaxBody is the largest body replayed; larger ones are set aside.
	// 0 means MaxBody.
	MaxBody int
	// Aside is the file the lines set aside are appended to, as they were
	// (a partial line gets a newline). "" keeps them nowhere: they are
	// only counted. What was set aside is synced to Aside before the next
	// record is handed over, so that a mark past that record (SaveMark)
	// never covers a line that is not safely in Aside.
	Aside string
	// OnSetAside, when not nil, is called after each line set aside.
	OnSetAside func()

	lineLimit int // the longest line read; 0 means from MaxBody (tests lower it)
}

// Result counts the lines of a file that Replay went through.
type Result struct {
	Records    int // handed to fn
	Legacy     int // of which lines of the original library
	Unreadable int // set aside: not a record (a partial line, a line too long to be one, …)
	Foreign    int // set aside: a record for another exchange than ReplayOptions.Exchange
	TooLarge   int // set aside: a record with a body above ReplayOptions.MaxBody
}

// SetAside returns how many lines were set aside.
func (r Result) SetAside() int { return r.Unreadable + r.Foreign + r.TooLarge }

// String describes what was set aside, such as "2 unreadable, 1 for
// exchange other than \"x\"".
func (r Result) String() string {
	var parts []string
	if r.Unreadable > 0 {
		parts = append(parts, fmt.Sprintf("%d unreadable", r.Unreadable))
	}
	if r.Foreign > 0 {
		parts = append(parts, fmt.Sprintf("%d for another exchange", r.Foreign))
	}
	if r.TooLarge > 0 {
		parts = append(parts, fmt.Sprintf("%d with a body too large", r.TooLarge))
	}
	return strings.Join(parts, ", ")
}

// Replay calls fn for every record of the file at path that opts accept, in
// order, and appends the other lines to opts.Aside. A line that cannot be
// read never stops the lines after it. It stops at fn's first error, or if
// a line cannot be set aside (then the file must be kept).
//
// A file that is not a regular file owned by the process's user (a
// symbolic link, a file someone else wrote) is not read: Replay renames it
// to PATH.refused and returns an error wrapping ErrRefused.
func Replay(path string, opts ReplayOptions, fn func(Record) error) (Result, error) {
	res, err := read(path, opts, true, fn)
	var pe *fs.PathError
	if errors.As(err, &pe) && (errors.Is(err, safefile.ErrSymlink) || errors.Is(err, safefile.ErrNotRegular) || errors.Is(err, safefile.ErrNotOwned)) {
		dst := path + ".refused"
		if rerr := os.Rename(path, dst); rerr != nil {
			return res, fmt.Errorf("%w: %w; renaming it failed: %w", ErrRefused, err, rerr)
		}
		return res, fmt.Errorf("%w: %w; moved to %s", ErrRefused, err, dst)
	}
	return res, err
}

// legacyKeyOK reports whether key can be the key of a line of the original
// library: a routing key of at most 255 bytes of UTF-8 text without spaces,
// control characters, quotes or braces. Anything else is more likely part
// of a body that held a newline, and is set aside instead.
func legacyKeyOK(key []byte) bool {
	if len(key) > 255 || !utf8.Valid(key) {
		return false
	}
	for _, c := range key {
		if c <= ' ' || c == 0x7f || c == '"' || c == '{' || c == '}' {
			return false
		}
	}
	return true
}

// wireRecord is how a record is decoded: the fields every record has are
// pointers, so that a JSON object without them is not taken for one.
type wireRecord struct {
	Exchange    *string        `json:"exchange"`
	Key         *string        `json:"key"`
	MessageID   string         `json:"id"`
	Timestamp   time.Time      `json:"ts"`
	Body        string         `json:"body"`
	Body64      string         `json:"body64"`
	Headers     map[string]any `json:"headers"`
	ContentType string         `json:"content_type"`
}

// parse decodes one line (without its newline). ok is false for a line that
// is not a record.
func parse(line []byte) (r Record, ok bool) {
	if line[0] == '{' {
		// Ours. A line of the original starting with '{' would need a key
		// starting with '{', which legacyKeyOK refuses anyway.
		var w wireRecord
		if err := json.Unmarshal(line, &w); err != nil || w.Exchange == nil || w.Key == nil {
			return Record{}, false
		}
		r = Record{Exchange: *w.Exchange, Key: *w.Key, MessageID: w.MessageID, Timestamp: w.Timestamp,
			Body: w.Body, Body64: w.Body64, Headers: w.Headers, ContentType: w.ContentType}
		if w.Body64 != "" {
			raw, err := base64.StdEncoding.DecodeString(w.Body64)
			if err != nil {
				return Record{}, false
			}
			r.raw = raw
		} else {
			r.raw = []byte(w.Body)
		}
		return r, true
	}
	key, body, found := bytes.Cut(line, []byte{':'})
	if !found || !legacyKeyOK(key) {
		return Record{}, false
	}
	r = Record{Key: string(key), raw: bytes.Clone(body), legacy: true}
	if r.raw == nil {
		r.raw = []byte{}
	}
	if utf8.Valid(body) {
		r.Body = string(body)
	} else {
		r.Body64 = base64.StdEncoding.EncodeToString(body)
	}
	return r, true
}

// read goes through the file at path; see Replay. With check, records are
// held to opts.Exchange.
func read(path string, opts ReplayOptions, check bool, fn func(Record) error) (res Result, err error) {
	if opts.MaxBody <= 0 {
		opts.MaxBody = MaxBody
	}
	f, err := safefile.OpenOwned(path)
	if err != nil {
		return res, err
	}
	defer f.Close()
	pos := markOf(path, f) // the offset read up to; what is before the mark was handled
	if pos > 0 {
		if _, err := f.Seek(pos, io.SeekStart); err != nil {
			return res, fmt.Errorf("spool %s: %w", path, err)
		}
	}
	aside := &asideFile{path: opts.Aside}
	defer func() {
		if cerr := aside.close(); err == nil && cerr != nil {
			err = fmt.Errorf("spool: set aside: %w", cerr)
		}
	}()
	limit := opts.lineLimit
	if limit <= 0 {
		limit = max(LineLimit(MaxBody), LineLimit(opts.MaxBody))
	}
	br := bufio.NewReaderSize(f, 64<<10)
	var line []byte
	over := false // the line is longer than limit: it streams to aside
	for {
		chunk, rerr := br.ReadSlice('\n')
		if rerr != nil && rerr != bufio.ErrBufferFull && rerr != io.EOF {
			return res, fmt.Errorf("spool %s: %w", path, rerr)
		}
		pos += int64(len(chunk))
		switch {
		case over:
			if err := aside.write(chunk); err != nil {
				return res, err
			}
		case len(line)+len(chunk) > limit:
			over = true
			if err := aside.write(line); err != nil {
				return res, err
			}
			if err := aside.write(chunk); err != nil {
				return res, err
			}
			line = line[:0]
		default:
			line = append(line, chunk...)
		}
		if rerr == bufio.ErrBufferFull {
			continue // the line goes on
		}
		if over {
			res.Unreadable++
			if err := aside.endLine(); err != nil {
				return res, err
			}
			if opts.OnSetAside != nil {
				opts.OnSetAside()
			}
			over = false
		} else if err := handle(line, pos, opts, check, &res, aside, fn); err != nil {
			return res, err
		}
		line = line[:0]
		if rerr == io.EOF {
			return res, nil
		}
	}
}

// handle parses one line (with its newline, if it has one) and hands its
// record to fn, or sets it aside.
func handle(line []byte, end int64, opts ReplayOptions, check bool, res *Result, aside *asideFile, fn func(Record) error) error {
	text := bytes.TrimSuffix(line, []byte{'\n'})
	if len(bytes.TrimSpace(text)) == 0 {
		return nil
	}
	r, ok := parse(text)
	switch {
	case !ok:
		res.Unreadable++
	case r.legacy:
		r.Exchange = opts.Exchange
		if r.Key == "" {
			r.Key = opts.DefaultKey
		}
	case check && r.Exchange != opts.Exchange:
		res.Foreign++
		ok = false
	}
	if ok && len(r.raw) > opts.MaxBody {
		res.TooLarge++
		ok = false
	}
	if !ok {
		if err := aside.write(line); err != nil {
			return err
		}
		if err := aside.endLine(); err != nil {
			return err
		}
		if opts.OnSetAside != nil {
			opts.OnSetAside()
		}
		return nil
	}
	if err := aside.sync(); err != nil {
		return err
	}
	res.Records++
	if r.legacy {
		res.Legacy++
	}
	r.end = end
	return fn(r)
}

// asideFile appends the lines set aside to a file opened at the first one.
type asideFile struct {
	path  string
	f     *os.File
	bw    *bufio.Writer
	last  byte // the last byte written
	dirty bool // written since the last sync
}

func (a *asideFile) write(p []byte) error {
	if len(p) == 0 || a.path == "" {
		return nil
	}
	if a.f == nil {
		f, torn, err := openForAppend(a.path)
		if err != nil {
			return fmt.Errorf("spool: set aside: %w", err)
		}
		a.f, a.bw = f, bufio.NewWriterSize(f, 64<<10)
		if torn {
			a.bw.WriteByte('\n')
		}
	}
	a.last = p[len(p)-1]
	a.dirty = true
	if _, err := a.bw.Write(p); err != nil {
		return fmt.Errorf("spool: set aside in %s: %w", a.path, err)
	}
	return nil
}

// endLine ends the line written, if it has no newline yet.
func (a *asideFile) endLine() error {
	if a.f == nil || a.last == '\n' {
		return nil
	}
	return a.write([]byte{'\n'})
}

// sync writes the lines set aside so far to the disk.
func (a *asideFile) sync() error {
	if !a.dirty {
		return nil
	}
	a.dirty = false
	err := a.bw.Flush()
	if err == nil {
		err = a.f.Sync()
	}
	if err != nil {
		return fmt.Errorf("spool: set aside in %s: %w", a.path, err)
	}
	return nil
}

// close flushes the lines and syncs the file: the replayed file is removed
// once its messages are delivered, so what was set aside must be on disk.
func (a *asideFile) close() error {
	if a.f == nil {
		return nil
	}
	err := a.bw.Flush()
	if serr := a.f.Sync(); err == nil {
		err = serr
	}
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Line is one non-blank line of a spool file, as Scan hands it over.
type Line struct {
	// Number is the line's 1-based number in the file.
	Number int
	// Raw is the line without its newline; nil when TooLong. It is valid
	// only during the call.
	Raw []byte
	// Record is the decoded record when OK is true (a line of the original
	// library has an empty Exchange).
	Record Record
	// OK is false for a line that is not a record (a torn write, a line
	// edited by hand, a body64 that is not base64).
	OK bool
	// TooLong is true for a line longer than any record is written as; it
	// is not read into memory.
	TooLong bool
}

// Scan calls fn for every non-blank line of the file at path, in order,
// decoded as Replay decodes it, with the raw bytes of the line, so that a
// caller can copy the lines it keeps. A line longer than LineLimit(MaxBody)
// is handed over as TooLong, without its bytes. It stops at fn's first
// error. The file must be a regular file owned by the process's user.
func Scan(path string, fn func(Line) error) error {
	f, err := safefile.OpenOwned(path)
	if err != nil {
		return err
	}
	defer f.Close()
	limit := LineLimit(MaxBody)
	br := bufio.NewReaderSize(f, 64<<10)
	var line []byte
	over := false
	n := 0
	for {
		chunk, rerr := br.ReadSlice('\n')
		if rerr != nil && rerr != bufio.ErrBufferFull && rerr != io.EOF {
			return fmt.Errorf("spool %s: %w", path, rerr)
		}
		switch {
		case over:
		case len(line)+len(chunk) > limit:
			over, line = true, line[:0]
		default:
			line = append(line, chunk...)
		}
		if rerr == bufio.ErrBufferFull {
			continue
		}
		if over || len(line) > 0 {
			n++
		}
		var l Line
		if over {
			l = Line{Number: n, TooLong: true}
		} else if text := bytes.TrimSuffix(line, []byte{'\n'}); len(bytes.TrimSpace(text)) > 0 {
			l = Line{Number: n, Raw: text}
			l.Record, l.OK = parse(text)
		}
		if l.Number != 0 {
			if err := fn(l); err != nil {
				return err
			}
		}
		over, line = false, line[:0]
		if rerr == io.EOF {
			return nil
		}
	}
}
