// Package rotate provides a log file writer that rotates by time, as Python's
// logging.handlers.TimedRotatingFileHandler does.
//
// A schedule is one of the ROTATING_TIME codes of OMQS.cfg:
//
//	NS, NM, NH, ND  every N seconds, minutes, hours or days (N >= 1; "S" means "1S")
//	MD              every day at midnight
//	W0 ... W6       every week at the midnight that ends weekday 0 (Monday) ... 6 (Sunday)
//
// The first interval of NS ... ND starts at the modification time of an
// existing file, else at the time the file is opened. On rotation the file is
// renamed to NAME.SUFFIX, where SUFFIX is the start of the interval that
// ended, formatted as 2006-01-02_15-04-05 for S, 2006-01-02_15-04 for M,
// 2006-01-02_15 for H and 2006-01-02 for D, MD and W; local time is used
// throughout. Then, if the backup count is above zero, the oldest rotated
// files beyond that count are deleted.
//
// Like Python, W0 rotates when Monday ends (at the midnight between Monday and
// Tuesday), and the rotated file is named after the date seven days before
// that midnight. Unlike Python, a rotated file whose name is already taken is
// not deleted: the current file is appended to it.
//
// Rotation happens in Write, when the rotation time has passed; no goroutine
// runs in the background.
package rotate

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/omqs-go/omqs/internal/safefile"
)

// Schedule is a parsed ROTATING_TIME code.
type Schedule struct {
	unit    byte          // 'S', 'M', 'H', 'D', 'W' (weekly) or 'X' (midnight)
	every   time.Duration // interval of S, M, H and D
	weekday int           // for 'W': 0 Monday ... 6 Sunday
	code    string
}

// ParseSchedule parses a ROTATING_TIME code (case does not matter).
func ParseSchedule(code string) (Schedule, error) {
	c := strings.ToUpper(strings.TrimSpace(code))
	bad := func(why string) (Schedule, error) {
		return Schedule{}, fmt.Errorf("ROTATING_TIME %q: %s (want NS, NM, NH, ND with N >= 1, W0 to W6, or MD)", code, why)
	}
	switch {
	case c == "MD":
		return Schedule{unit: 'X', code: "MD"}, nil
	case len(c) == 2 && c[0] == 'W':
		if c[1] < '0' || c[1] > '6' {
			return bad("the weekday must be 0 (Monday) to 6 (Sunday)")
		}
		return Schedule{unit: 'W', weekday: int(c[1] - '0'), code: c}, nil
	case c == "":
		return bad("empty")
	}
	unit := c[len(c)-1]
	var d time.Duration
	switch unit {
	case 'S':
		d = time.Second
	case 'M':
		d = time.Minute
	case 'H':
		d = time.Hour
	case 'D':
		d = 24 * time.Hour
	default:
		return bad("unknown unit")
	}
	num := c[:len(c)-1]
	if num == "" {
		return bad("the count is missing")
	}
	n, err := strconv.Atoi(num)
	if err != nil || num[0] == '+' || num[0] == '-' {
		return bad("the count is not a number")
	}
	if n < 1 {
		return bad("the count must be at least 1")
	}
	if int64(n) > int64(100*365*24*time.Hour/d) {
		return bad("the count is too large")
	}
	return Schedule{unit: unit, every: time.Duration(n) * d, code: strconv.Itoa(n) + string(unit)}, nil
}

// String returns the code in its canonical form, such as "1S" or "W0".
func (s Schedule) String() string { return s.code }

// next returns the first rotation time after t.
func (s Schedule) next(t time.Time) time.Time {
	switch s.unit {
	case 'X', 'W':
		t = t.Local()
		y, m, d := t.Date()
		days := 1
		if s.unit == 'W' {
			today := (int(t.Weekday()) + 6) % 7 // 0 is Monday
			days += (s.weekday - today + 7) % 7
		}
		return time.Date(y, m, d+days, 0, 0, 0, 0, time.Local)
	}
	return t.Truncate(time.Second).Add(s.every)
}

// start returns the start of the interval that ends at the rotation time at.
func (s Schedule) start(at time.Time) time.Time {
	switch s.unit {
	case 'X':
		return at.AddDate(0, 0, -1)
	case 'W':
		return at.AddDate(0, 0, -7)
	}
	return at.Add(-s.every)
}

// layout is the time layout of rotated file names' suffix.
func (s Schedule) layout() string {
	switch s.unit {
	case 'S':
		return "2006-01-02_15-04-05"
	case 'M':
		return "2006-01-02_15-04"
	case 'H':
		return "2006-01-02_15"
	}
	return "2006-01-02"
}

// Options configure a Writer.
type Options struct {
	// Schedule says when to rotate.
	Schedule Schedule
	// BackupCount is how many rotated files to keep; 0 keeps them all.
	BackupCount int
	// Now returns the current time; nil means time.Now. Tests drive
	// rotation with a fake clock through it.
	Now func() time.Time
}

// Writer is an io.WriteCloser that appends to a file and rotates it on
// schedule. It is safe for concurrent use; each Write reaches the file whole.
type Writer struct {
	name    string
	opts    Options
	now     func() time.Time
	regular bool // false for a device or pipe, which is never rotated

	mu         sync.Mutex
	file       *os.File // nil after Close, or after a failed reopen
	closed     bool
	rolloverAt time.Time
}

// Open opens (creating it if needed, readable by its owner only) the file
// name for appending. The folder must exist. A symbolic link at name is not
// followed: Open fails.
func Open(name string, opts Options) (*Writer, error) {
	if opts.Schedule.unit == 0 {
		return nil, errors.New("rotate: no schedule")
	}
	if opts.BackupCount < 0 {
		return nil, fmt.Errorf("rotate: BACKUP_COUNT %d is negative", opts.BackupCount)
	}
	w := &Writer{name: name, opts: opts, now: opts.Now, regular: true}
	if w.now == nil {
		w.now = time.Now
	}
	start := w.now()
	if fi, err := os.Lstat(name); err == nil {
		w.regular = fi.Mode().IsRegular()
		start = fi.ModTime()
	}
	f, err := openAppend(name)
	if err != nil {
		return nil, err
	}
	w.file = f
	w.rolloverAt = opts.Schedule.next(start)
	return w, nil
}

// openAppend opens name for appending, creating it readable by its owner
// only; it does not follow a symbolic link.
func openAppend(name string) (*os.File, error) {
	return safefile.OpenAppend(name, false)
}

// Write appends p to the file, rotating it first if its time has come. If
// rotation fails, p is still written to the current file and the rotation
// error is returned; rotation is tried again at the next rotation time.
// After Close, Write returns os.ErrClosed.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, os.ErrClosed
	}
	var rotErr error
	if now := w.now(); w.regular && !now.Before(w.rolloverAt) {
		rotErr = w.rotate(now)
	}
	if w.file == nil {
		f, err := openAppend(w.name)
		if err != nil {
			return 0, errors.Join(rotErr, err)
		}
		w.file = f
	}
	n, err := w.file.Write(p)
	if err == nil {
		err = rotErr
	}
	return n, err
}

// rotate moves the current file aside and opens a new one. w.mu is held.
func (w *Writer) rotate(now time.Time) error {
	s := w.opts.Schedule
	dst := w.name + "." + s.start(w.rolloverAt).Format(s.layout())
	w.rolloverAt = s.next(now)

	err := w.file.Close()
	w.file = nil
	if err == nil {
		err = moveAside(w.name, dst)
	}
	if f, openErr := openAppend(w.name); openErr == nil {
		w.file = f
	} else {
		err = errors.Join(err, openErr)
	}
	if err != nil {
		return fmt.Errorf("rotate %s: %w", w.name, err)
	}
	if w.opts.BackupCount > 0 {
		if err := prune(w.name, s.layout(), w.opts.BackupCount); err != nil {
			return fmt.Errorf("rotate %s: %w", w.name, err)
		}
	}
	return nil
}

// moveAside renames name to dst, or appends name to dst and removes name
// when dst exists already.
func moveAside(name, dst string) error {
	if _, err := os.Lstat(dst); errors.Is(err, os.ErrNotExist) {
		return os.Rename(name, dst)
	}
	src, err := os.Open(name)
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := openAppend(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Remove(name)
}

// prune deletes the oldest rotated files of name beyond keep.
func prune(name, layout string, keep int) error {
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	prefix := base + "."
	var rotated []string
	for _, e := range entries {
		n := e.Name()
		suffix, ok := strings.CutPrefix(n, prefix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if _, err := time.Parse(layout, suffix); err == nil && len(suffix) == len(layout) {
			rotated = append(rotated, n)
		}
	}
	if len(rotated) <= keep {
		return nil
	}
	sort.Strings(rotated) // the suffixes sort in time order
	var errs []error
	for _, n := range rotated[:len(rotated)-keep] {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes the file. Later calls return nil; later writes return
// os.ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.file == nil {
		return nil
	}
	err := w.file.Close()
	w.file = nil
	return err
}
