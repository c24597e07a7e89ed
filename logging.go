package omqs

import (
	"context"
	"encoding"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/omqs-go/omqs/internal/pyfmt"
	"github.com/omqs-go/omqs/internal/rotate"
	"github.com/omqs-go/omqs/internal/safefile"
	"github.com/omqs-go/omqs/internal/transport"
	"gopkg.in/natefinch/lumberjack.v2"
)

// LevelFatal is the level of FATAL records, which Python calls CRITICAL
// (level number 50). slog has no method for it: use
// logger.Log(ctx, omqs.LevelFatal, msg). Logging at LevelFatal does not exit
// the program.
const LevelFatal = slog.Level(12)

// defaultLogName and defaultLogFile are NewLogManager's defaults, as the
// original OMQSLogManager's.
const (
	defaultLogName = "OMQS"
	defaultLogFile = "OMQS.log"
)

// defaultLogConfig returns the [Log] section NewLogManager uses when no
// WithLogConfig option is given: that of $OMQS_CONFIG, else ./OMQS.cfg,
// else the built-in defaults.
func defaultLogConfig() (LogConfig, error) {
	cfg, err := resolveConfig()
	if err != nil {
		return LogConfig{}, err
	}
	return cfg.Log, nil
}

// LogOption configures NewLogManager. Options are applied in order; a later
// option overrides an earlier one.
type LogOption func(*logSettings)

type logSettings struct {
	cfg    *LogConfig
	output io.Writer
	level  *string
	now    func() time.Time // clock of time rotation; nil means time.Now
	errOut io.Writer        // where the first write error is printed; nil means os.Stderr
}

// WithLogConfig makes NewLogManager use c instead of the [Log] section of the
// configuration file. Empty text fields of c (Folder, Level, Format, Type,
// RotationType, RotatingTime) and a Size of 0 take the built-in defaults of
// DefaultConfig; Rotation and BackupCount are used as they are. The result
// is checked as Config.Validate checks the [Log] section.
func WithLogConfig(c LogConfig) LogOption {
	return func(s *logSettings) { s.cfg = &c }
}

// WithLogOutput sends the output of TYPE=stream to w instead of standard
// error. The LogManager writes each line with one call to w.Write, under its
// own lock; if several LogManagers share w, w must be safe for concurrent use
// (as *os.File is). The LogManager does not close w.
func WithLogOutput(w io.Writer) LogOption {
	return func(s *logSettings) { s.output = w }
}

// WithLogLevel sets the initial level, overriding LEVEL of the
// configuration; see LogManager.SetLevel for the names.
func WithLogLevel(level string) LogOption {
	return func(s *logSettings) { s.level = &level }
}

// LogManager builds a *slog.Logger that formats records with a Python
// logging format string and writes them as the [Log] section of OMQS.cfg
// says: to standard error (TYPE=stream) or to FOLDER/fileName (TYPE=file),
// rotated by size or by time when ROTATION is True.
//
// Each LogManager owns its handler, so two LogManagers with the same name
// never print a line twice (the original did). LogManagers that write to the
// same file share one open file, so rotation stays consistent; the file is
// closed when the last of them is closed.
//
// # Format
//
// FORMAT is a Python logging format string, such as DefaultLogFormat. Each
// directive is %(field) followed by optional flags ('-', '0', ' ', '+',
// '#'), a width, a .precision, and a conversion: s, r or a (text; r and a
// quote it Go-style, with double quotes), d, i or u (decimal), o, x or X,
// e, E, f, F, g or G. %% prints a percent sign. The fields:
//
//	name             the LogManager's name
//	levelname        DEBUG, INFO, WARNING, ERROR or CRITICAL (for LevelFatal)
//	levelno          10, 20, 30, 40 or 50
//	message          the message, then the record's attributes
//	asctime          local time as 2006-01-02 15:04:05,000
//	created          seconds since the Unix epoch, as a float
//	msecs            the milliseconds of the time
//	relativeCreated  milliseconds since the LogManager was created
//	pathname         full path of the source file that logged
//	filename         base name of pathname
//	module           filename without its extension
//	lineno           line that logged
//	funcName         function that logged, without its package path
//	process          process id
//	processName      always "MainProcess"
//	thread           id of the goroutine that logged
//	threadName       always "MainThread"
//
// The attributes follow the message as " key=value", as slog's TextHandler
// writes them: a group's name and a dot go before its members' keys, and a
// value with spaces, quotes, '=' or characters that do not print is quoted.
// An error in FORMAT (an unknown field, a directive without conversion, a
// lone '%') makes NewLogManager fail with an error naming its position.
//
// # Files
//
// With ROTATION=False the file is appended to and never rotated. With
// ROTATION_TYPE=size, a file about to grow past SIZE megabytes is renamed
// NAME-2006-01-02T15-04-05.000.EXT (the local time of the rotation; Python
// numbers them NAME.1, NAME.2 instead) and the oldest of those beyond
// BACKUP_COUNT are deleted in the background. With ROTATION_TYPE=time, the
// file is rotated on the ROTATING_TIME schedule (NS, NM, NH, ND: every N
// seconds, minutes, hours or days; MD: at midnight; W0 to W6: at the midnight
// that ends Monday ... Sunday) and renamed NAME.2006-01-02 (with _15, _15-04
// or _15-04-05 for hours, minutes and seconds), named after the start of the
// interval, as Python does; BACKUP_COUNT of them are kept. BACKUP_COUNT 0
// keeps every rotated file. LogManagers share a file when their paths are the
// same once made absolute and cleaned (symbolic links are not resolved).
//
// Strings in messages and attributes that hold a URL with a password are
// printed with the password replaced by "xxxxx"; see RedactedURL.
//
// All methods are safe for concurrent use, and so is the Logger.
type LogManager struct {
	core   *logCore
	logger *slog.Logger
}

// logCore is what a LogManager's handlers share.
type logCore struct {
	name   string
	format *pyfmt.Format
	level  slog.LevelVar
	sink   *logSink
	closed atomic.Bool
	pid    int
	start  time.Time             // origin of %(relativeCreated)
	bufs   sync.Pool             // of *lineBuffer
	err    atomic.Pointer[error] // the first error of writing a record
	errOut io.Writer             // where that error is printed
}

// NewLogManager returns a LogManager named name (%(name)s; "" means "OMQS")
// that writes, when TYPE is file, to fileName in FOLDER ("" means
// "OMQS.log"; an absolute fileName is used as it is). FOLDER is created if
// needed. The settings come from the options, else from the [Log] section of
// the configuration. Errors wrap ErrInvalidConfig when a setting is not
// valid.
//
// Close the LogManager when done with it, to close its file.
func NewLogManager(name, fileName string, opts ...LogOption) (*LogManager, error) {
	var s logSettings
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	if name == "" {
		name = defaultLogName
	}
	if fileName == "" {
		fileName = defaultLogFile
	}
	var cfg LogConfig
	if s.cfg != nil {
		cfg = *s.cfg
	} else {
		c, err := defaultLogConfig()
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	cfg = withLogDefaults(cfg)
	if s.level != nil {
		cfg.Level = *s.level
	}

	ls := cfgLogSection(&cfg)
	if err := ls.check(); err != nil {
		return nil, err
	}

	core := &logCore{name: name, pid: os.Getpid(), start: time.Now(), errOut: s.errOut}
	if core.errOut == nil {
		core.errOut = os.Stderr
	}
	level, err := parseLevel(cfg.Level)
	if err != nil {
		return nil, err
	}
	core.level.Set(level)
	if core.format, err = pyfmt.Compile(cfg.Format); err != nil {
		return nil, fmt.Errorf("%w: [Log] FORMAT: %w", ErrInvalidConfig, err)
	}

	if strings.EqualFold(cfg.Type, "file") {
		path := fileName
		if !filepath.IsAbs(path) {
			path = filepath.Join(cfg.Folder, fileName)
		}
		if path, err = filepath.Abs(path); err != nil {
			return nil, fmt.Errorf("omqs: log file %s: %w", fileName, err)
		}
		if err := safefile.MkdirAll(filepath.Dir(path)); err != nil {
			return nil, fmt.Errorf("omqs: log folder: %w", err)
		}
		if core.sink, err = acquireFileSink(path, fileSpecOf(cfg), s.now); err != nil {
			return nil, err
		}
	} else {
		out := s.output
		if out == nil {
			out = os.Stderr
		}
		core.sink = &logSink{w: out}
	}
	return &LogManager{core: core, logger: slog.New(&logHandler{core: core})}, nil
}

// withLogDefaults fills the empty fields of c with the built-in defaults.
func withLogDefaults(c LogConfig) LogConfig {
	d := DefaultConfig().Log
	for _, f := range []struct{ v, def *string }{
		{&c.Folder, &d.Folder}, {&c.Level, &d.Level}, {&c.Format, &d.Format},
		{&c.Type, &d.Type}, {&c.RotationType, &d.RotationType}, {&c.RotatingTime, &d.RotatingTime},
	} {
		if strings.TrimSpace(*f.v) == "" {
			*f.v = *f.def
		}
	}
	if c.Size == 0 {
		c.Size = d.Size
	}
	return c
}

// Logger returns the logger. It is the same *slog.Logger at every call;
// loggers derived from it (With, WithGroup) follow SetLevel too.
func (lm *LogManager) Logger() *slog.Logger { return lm.logger }

// SetLevel changes the level of the logger and of every logger derived from
// it, at once. level is DEBUG, INFO, WARNING (or WARN), ERROR, or FATAL (or
// CRITICAL), in any case. An unknown name is an error wrapping
// ErrInvalidConfig, and the level stays as it was.
func (lm *LogManager) SetLevel(level string) error {
	l, err := parseLevel(level)
	if err != nil {
		return err
	}
	lm.core.level.Set(l)
	return nil
}

// Level returns the current level's Python name: DEBUG, INFO, WARNING,
// ERROR or CRITICAL (which SetLevel("FATAL") sets).
func (lm *LogManager) Level() string {
	name, _ := levelName(lm.core.level.Level())
	return name
}

// Name returns the LogManager's name, which %(name)s prints.
func (lm *LogManager) Name() string { return lm.core.name }

// FileName returns the absolute path of the log file when TYPE is file, and
// "" when it is stream.
func (lm *LogManager) FileName() string { return lm.core.sink.path }

// Err returns the first error met writing a record, or nil if there was
// none: a write that failed, a rotation of the log file (rename, reopen)
// that failed, or a record longer than SIZE megabytes with size rotation.
// The record that met the error may be lost. slog.Logger discards the
// errors of its handler, so the LogManager also prints the first one to
// standard error, once, as Python's Handler.handleError does. Err still
// answers after Close.
func (lm *LogManager) Err() error {
	if p := lm.core.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops the LogManager's logger: later records are dropped silently.
// It closes the log file unless another LogManager still writes to it. It
// does not close the writer of WithLogOutput, nor standard error. Close is
// idempotent; calls after the first return nil.
//
// Size rotation leaves one idle goroutine per log file behind after Close:
// the lumberjack library starts it and offers no way to stop it. Later
// LogManagers writing to the same file with the same settings reuse it.
func (lm *LogManager) Close() error {
	if !lm.core.closed.CompareAndSwap(false, true) {
		return nil
	}
	if lm.core.sink.path != "" {
		return releaseFileSink(lm.core.sink)
	}
	return nil
}

// parseLevel maps a level name of OMQS.cfg to an slog level.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToUpper(strings.TrimSpace(s)) {
	case "DEBUG":
		return slog.LevelDebug, nil
	case "INFO":
		return slog.LevelInfo, nil
	case "WARNING", "WARN":
		return slog.LevelWarn, nil
	case "ERROR":
		return slog.LevelError, nil
	case "FATAL", "CRITICAL":
		return LevelFatal, nil
	}
	return 0, fmt.Errorf("%w: log level %q: want DEBUG, INFO, WARNING, ERROR or FATAL", ErrInvalidConfig, s)
}

// levelName returns Python's name and number of an slog level. Levels
// between the named ones are numbered in proportion ("Level 25" for
// slog.LevelInfo+2), as Python names unregistered levels.
func levelName(l slog.Level) (string, int) {
	switch l {
	case slog.LevelDebug:
		return "DEBUG", 10
	case slog.LevelInfo:
		return "INFO", 20
	case slog.LevelWarn:
		return "WARNING", 30
	case slog.LevelError:
		return "ERROR", 40
	case LevelFatal:
		return "CRITICAL", 50
	}
	no := 20 + int(l)*5/2
	return "Level " + strconv.Itoa(no), no
}

// logHandler is the slog.Handler of a LogManager. It is immutable; WithAttrs
// and WithGroup return new handlers sharing the core.
type logHandler struct {
	core   *logCore
	attrs  []byte // attributes of WithAttrs, formatted
	prefix string // open groups, as "g1.g2."
}

// lineBuffer holds the scratch space of one Handle call.
type lineBuffer struct{ msg, line []byte }

// maxPooledBuffer bounds the buffers kept for reuse, so that one huge record
// does not pin its memory.
const maxPooledBuffer = 64 << 10

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.core.level.Level() && !h.core.closed.Load()
}

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	c := h.core
	if c.closed.Load() {
		return nil
	}
	b, _ := c.bufs.Get().(*lineBuffer)
	if b == nil {
		b = &lineBuffer{msg: make([]byte, 0, 256), line: make([]byte, 0, 512)}
	}
	msg := append(b.msg[:0], transport.Redact(r.Message)...)
	msg = append(msg, h.attrs...)
	if r.NumAttrs() > 0 {
		r.Attrs(func(a slog.Attr) bool {
			msg = appendAttr(msg, h.prefix, a)
			return true
		})
	}
	rec := pyfmt.Record{
		Name:    c.name,
		Message: msg,
		Time:    r.Time,
		Start:   c.start,
		Process: c.pid,
	}
	rec.LevelName, rec.LevelNo = levelName(r.Level)
	if c.format.UsesCaller() && r.PC != 0 {
		frames := runtime.CallersFrames([]uintptr{r.PC})
		f, _ := frames.Next()
		rec.File, rec.Line, rec.Function = f.File, f.Line, f.Function
	}
	if c.format.UsesThread() {
		rec.Thread = goroutineID()
	}
	line := c.format.Append(b.line[:0], &rec)
	line = append(line, '\n')
	err := c.sink.write(line)
	if cap(msg) <= maxPooledBuffer && cap(line) <= maxPooledBuffer {
		b.msg, b.line = msg, line
		c.bufs.Put(b)
	}
	if err != nil {
		c.handleError(err)
	}
	return err
}

// handleError keeps the first error of writing a record for Err and prints
// it to errOut; later errors are only returned, which slog.Logger ignores.
func (c *logCore) handleError(err error) {
	if !c.err.CompareAndSwap(nil, &err) {
		return
	}
	where := c.sink.path
	if where == "" {
		where = "its output"
	}
	fmt.Fprintf(c.errOut, "omqs: LogManager %q cannot write to %s: %v (later errors are not printed; see LogManager.Err)\n", c.name, where, err)
}

func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	h2 := *h
	h2.attrs = append([]byte(nil), h.attrs...)
	for _, a := range attrs {
		h2.attrs = appendAttr(h2.attrs, h.prefix, a)
	}
	return &h2
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + name + "."
	return &h2
}

// appendAttr appends " key=value" as slog's TextHandler writes it: group
// members get the group's name and a dot before their key, and a value that
// has spaces, quotes, '=' or characters that do not print is quoted.
func appendAttr(dst []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return dst
	}
	if a.Value.Kind() == slog.KindGroup {
		attrs := a.Value.Group()
		if a.Key != "" {
			prefix = prefix + a.Key + "."
		}
		for _, ga := range attrs {
			dst = appendAttr(dst, prefix, ga)
		}
		return dst
	}
	dst = append(dst, ' ')
	if prefix == "" {
		dst = appendText(dst, a.Key)
	} else {
		dst = appendText(dst, prefix+a.Key)
	}
	dst = append(dst, '=')
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return appendText(dst, transport.Redact(v.String()))
	case slog.KindInt64:
		return strconv.AppendInt(dst, v.Int64(), 10)
	case slog.KindUint64:
		return strconv.AppendUint(dst, v.Uint64(), 10)
	case slog.KindFloat64:
		return strconv.AppendFloat(dst, v.Float64(), 'g', -1, 64)
	case slog.KindBool:
		return strconv.AppendBool(dst, v.Bool())
	case slog.KindDuration:
		return append(dst, v.Duration().String()...)
	case slog.KindTime:
		return v.Time().AppendFormat(dst, "2006-01-02T15:04:05.000Z07:00")
	}
	var s string
	switch x := v.Any().(type) {
	case error:
		s = x.Error()
	case encoding.TextMarshaler:
		b, err := x.MarshalText()
		if err != nil {
			s = "!ERROR:" + err.Error()
		} else {
			s = string(b)
		}
	case []byte:
		s = string(x)
	default:
		s = fmt.Sprintf("%+v", x)
	}
	return appendText(dst, transport.Redact(s))
}

// appendText appends s, quoted if slog's TextHandler would quote it.
func appendText(dst []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(dst, s)
	}
	return append(dst, s...)
}

func needsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b <= ' ' || b == '=' || b == '"' || b == 0x7f {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// RedactedURL is a broker URL (or a comma-separated list of them) to log:
// as an slog attribute value, or printed with fmt, it shows the password as
// "xxxxx".
//
//	logger.Info("connecting", "url", omqs.RedactedURL(cfg.Global.MQURL))
type RedactedURL string

// String returns the URL with its password replaced by "xxxxx".
func (u RedactedURL) String() string { return transport.Redact(string(u)) }

// LogValue implements slog.LogValuer.
func (u RedactedURL) LogValue() slog.Value { return slog.StringValue(u.String()) }

// goroutineID returns the id of the calling goroutine, as the first line of
// its stack trace shows it ("goroutine 7 [running]:").
func goroutineID() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	const prefix = "goroutine "
	if len(b) < len(prefix) || string(b[:len(prefix)]) != prefix {
		return 0
	}
	var id int64
	for _, c := range b[len(prefix):] {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + int64(c-'0')
	}
	return id
}

// logSink is where a LogManager's lines go. write is safe for concurrent
// use; each line is written with one Write call, under mu, so lines of
// concurrent goroutines never interleave.
type logSink struct {
	mu     sync.Mutex
	w      io.Writer
	c      io.Closer // nil when the writer is not ours to close
	closed bool

	// Set for file sinks, which live in fileSinks.
	path string
	spec fileSpec
	refs int // guarded by fileSinks.mu
}

func (s *logSink) write(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	_, err := s.w.Write(p)
	return err
}

func (s *logSink) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.c != nil {
		return s.c.Close()
	}
	return nil
}

// fileSpec is how a log file is written; LogManagers sharing a file must
// agree on it.
type fileSpec struct {
	rotation    string // "", "size" or "time"
	size        int
	schedule    string
	backupCount int
}

// fileSpecOf returns the rotation settings of c, which cfgLogSection has
// checked.
func fileSpecOf(c LogConfig) fileSpec {
	switch {
	case !c.Rotation:
		return fileSpec{}
	case strings.EqualFold(c.RotationType, "time"):
		sched, _ := rotate.ParseSchedule(c.RotatingTime) // checked
		return fileSpec{rotation: "time", schedule: sched.String(), backupCount: c.BackupCount}
	}
	return fileSpec{rotation: "size", size: c.Size, backupCount: c.BackupCount}
}

// fileSinks holds the open log files by absolute path, so that LogManagers
// writing to one file share one writer and one lock. It is the package's only
// mutable state; mu guards m, lj and every sink's refs.
//
// lj keeps the lumberjack.Logger of every size-rotated file ever opened, by
// path and settings, and is never cleared: each Logger starts a goroutine
// that never stops, so reusing them bounds those goroutines to one per file.
// Closing a Logger closes its file only; its next Write reopens it.
var fileSinks = struct {
	mu sync.Mutex
	m  map[string]*logSink
	lj map[fileKey]*lumberjack.Logger
}{m: map[string]*logSink{}, lj: map[fileKey]*lumberjack.Logger{}}

type fileKey struct {
	path string
	spec fileSpec
}

// acquireFileSink returns the sink of path, opening it or adding a reference
// to it.
func acquireFileSink(path string, spec fileSpec, now func() time.Time) (*logSink, error) {
	fileSinks.mu.Lock()
	defer fileSinks.mu.Unlock()
	if s, ok := fileSinks.m[path]; ok {
		if s.spec != spec {
			return nil, fmt.Errorf("%w: log file %s is already open with other rotation settings", ErrInvalidConfig, path)
		}
		s.refs++
		return s, nil
	}
	s := &logSink{path: path, spec: spec, refs: 1}
	switch spec.rotation {
	case "":
		f, err := safefile.OpenAppend(path, false)
		if err != nil {
			return nil, fmt.Errorf("omqs: log file: %w", err)
		}
		s.w, s.c = f, f
	case "size":
		// Create the file now, as Python does, readable by its owner only
		// (log lines may quote messages), and refuse a symbolic link.
		// lumberjack keeps the mode of the file it rotates.
		f, err := safefile.OpenAppend(path, false)
		if err != nil {
			return nil, fmt.Errorf("omqs: log file: %w", err)
		}
		f.Close()
		lj := fileSinks.lj[fileKey{path, spec}]
		if lj == nil {
			lj = &lumberjack.Logger{Filename: path, MaxSize: spec.size, MaxBackups: spec.backupCount, LocalTime: true}
			fileSinks.lj[fileKey{path, spec}] = lj
		}
		s.w, s.c = lj, lj
	case "time":
		sched, err := rotate.ParseSchedule(spec.schedule)
		if err != nil {
			return nil, err
		}
		w, err := rotate.Open(path, rotate.Options{Schedule: sched, BackupCount: spec.backupCount, Now: now})
		if err != nil {
			return nil, fmt.Errorf("omqs: log file: %w", err)
		}
		s.w, s.c = w, w
	default:
		return nil, errors.New("omqs: unknown rotation " + spec.rotation)
	}
	fileSinks.m[path] = s
	return s, nil
}

// releaseFileSink drops a reference to s, closing it with the last one.
func releaseFileSink(s *logSink) error {
	fileSinks.mu.Lock()
	defer fileSinks.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return nil
	}
	delete(fileSinks.m, s.path)
	return s.close()
}

// redactingHandler wraps a handler the user gave (WithLogger) so that the
// library's own log lines never carry a password: the message and every
// attribute that prints a URL with user information are passed through
// transport.Redact. Lines without "://" pass unchanged.
//
// It also marks each record as the library's own (ownContext), so that a
// Manager's SlogHandler, reached directly or through wrappers that pass the
// context on, keeps them out of its lane. A handler derived from slog's
// initial default handler writes through the log package, which
// slog.SetDefault points to the new default's handler; the context would be
// lost on the way. Once SetDefault was called, such records go to the
// default's handler directly (with the WithAttrs and WithGroup calls made
// since), which is where the log package would have sent them.
type redactingHandler struct {
	h      slog.Handler
	viaLog bool                           // h is, or derives from, slog's initial default handler
	ops    []handlerOp                    // with viaLog: the WithAttrs and WithGroup calls that derived h, oldest first
	cache  atomic.Pointer[resolvedTarget] // with viaLog: ops applied to the current default's handler
}

// handlerOp is a WithAttrs (group == "") or WithGroup call.
type handlerOp struct {
	group string
	attrs []slog.Attr
}

// resolvedTarget is the handler a viaLog redactingHandler sends to while
// lg is the default logger: h, or its ops applied to lg's handler.
type resolvedTarget struct {
	lg *slog.Logger
	h  slog.Handler
}

// stdDefault is slog's default handler as the program started, or nil if
// another package replaced it before this one was initialized.
var stdDefault = func() slog.Handler {
	h := slog.Default().Handler()
	if !isStdDefaultHandler(h) {
		return nil
	}
	return h
}()

// isStdDefaultHandler reports whether h is slog's built-in default handler
// (or one derived from it), which writes through the log package.
func isStdDefaultHandler(h slog.Handler) bool {
	return fmt.Sprintf("%T", h) == "*slog.defaultHandler"
}

func redacting(h slog.Handler) slog.Handler {
	if _, ok := h.(*redactingHandler); ok {
		return h
	}
	if _, ok := h.(*logHandler); ok {
		return h // LogManager's handler redacts already, and never reaches a SlogHandler
	}
	r := &redactingHandler{h: h}
	if stdDefault != nil && isStdDefaultHandler(h) {
		r.viaLog = true
	}
	return r
}

// target returns the handler to pass records to: h, unless h writes
// through the log package and slog.SetDefault sent that to another handler.
func (r *redactingHandler) target() slog.Handler {
	if !r.viaLog {
		return r.h
	}
	lg := slog.Default()
	if t := r.cache.Load(); t != nil && t.lg == lg {
		return t.h
	}
	h := r.h
	if cur := lg.Handler(); !isStdDefaultHandler(cur) {
		h = cur
		for _, op := range r.ops {
			if op.attrs != nil {
				h = h.WithAttrs(op.attrs)
			} else {
				h = h.WithGroup(op.group)
			}
		}
	}
	r.cache.Store(&resolvedTarget{lg: lg, h: h})
	return h
}

func (r *redactingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return r.target().Enabled(ownContext(ctx), l)
}

func (r *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	h := r.target()
	ctx = ownContext(ctx)
	dirty := strings.Contains(rec.Message, "://")
	if !dirty {
		rec.Attrs(func(a slog.Attr) bool {
			dirty = attrNeedsRedact(a)
			return !dirty
		})
	}
	if !dirty {
		return h.Handle(ctx, rec)
	}
	nr := slog.NewRecord(rec.Time, rec.Level, transport.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(redactAttr(a))
		return true
	})
	return h.Handle(ctx, nr)
}

func (r *redactingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return r
	}
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = redactAttr(a)
	}
	return r.derive(r.h.WithAttrs(out), handlerOp{attrs: out})
}

func (r *redactingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return r
	}
	return r.derive(r.h.WithGroup(name), handlerOp{group: name})
}

func (r *redactingHandler) derive(h slog.Handler, op handlerOp) *redactingHandler {
	r2 := &redactingHandler{h: h, viaLog: r.viaLog}
	if r.viaLog {
		r2.ops = append(r.ops[:len(r.ops):len(r.ops)], op)
	}
	return r2
}

// ownRecordKey marks the context of the library's own log records, which
// redactingHandler passes on, so that a Manager's SlogHandler keeps them
// out of its lane.
type ownRecordKey struct{}

// ownBackground is context.Background() marked: the library logs without a
// context, and marking its records allocates nothing.
var ownBackground = context.WithValue(context.Background(), ownRecordKey{}, true)

// ownContext returns ctx marked as the context of one of the library's own
// records.
func ownContext(ctx context.Context) context.Context {
	switch {
	case ctx == nil || ctx == context.Background():
		return ownBackground
	case isOwnRecord(ctx):
		return ctx
	}
	return context.WithValue(ctx, ownRecordKey{}, true)
}

func isOwnRecord(ctx context.Context) bool {
	return ctx != nil && ctx.Value(ownRecordKey{}) != nil
}

func attrNeedsRedact(a slog.Attr) bool {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return strings.Contains(v.String(), "://")
	case slog.KindGroup:
		for _, g := range v.Group() {
			if attrNeedsRedact(g) {
				return true
			}
		}
		return false
	case slog.KindAny:
		return strings.Contains(fmt.Sprint(v.Any()), "://")
	}
	return false
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, transport.Redact(v.String()))
	case slog.KindGroup:
		gs := v.Group()
		out := make([]any, len(gs))
		for i, g := range gs {
			out[i] = redactAttr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if s := fmt.Sprint(v.Any()); strings.Contains(s, "://") {
			return slog.String(a.Key, transport.Redact(s))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// bodyPrefixLen is how much of a message body a log line quotes at most.
const bodyPrefixLen = 32

// bodyPrefix returns the start of a message body for a log line: at most
// bodyPrefixLen bytes, as valid UTF-8, with "…" when there is more. Log
// files outlive messages and may be read by others than their recipients:
// the library never logs a whole body.
func bodyPrefix(b []byte) string {
	if len(b) <= bodyPrefixLen {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	cut := bodyPrefixLen
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return strings.ToValidUTF8(string(b[:cut]), "\uFFFD") + "…"
}
