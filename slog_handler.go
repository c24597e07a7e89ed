package omqs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"strings"

	"github.com/omqs-go/omqs/internal/transport"
)

// SlogOptions configures Manager.SlogHandler. The zero value (or nil) ships
// records of level INFO and above, without source, named after the Manager,
// and writes the records the lane does not take as text to standard error.
type SlogOptions struct {
	// Level is the lowest level shipped; nil (or a nil *slog.LevelVar)
	// means slog.LevelInfo. A *slog.LevelVar changes it while the program
	// runs.
	Level slog.Leveler
	// AddSource adds "source": {"function", "file", "line"} to each record.
	AddSource bool
	// Name is the "logger" field of each record; "" means the Manager's
	// name (WithName, "OMQS" by default).
	Name string
	// Fallback handles what the lane does not take: the library's own
	// records and the records logged while the Manager is not running
	// (before Start, after Stop), redacted as the lane's are. nil means a
	// slog.TextHandler on standard error, at Level; slog.DiscardHandler
	// drops them. Slog's initial default handler (slog.Default().Handler()
	// before any slog.SetDefault) cannot be the fallback: it writes through
	// the log package, which slog.SetDefault sends back to the new default;
	// it is replaced by the default fallback.
	Fallback slog.Handler
}

// SlogHandler returns an slog.Handler that ships an application's log
// records through the Manager's log lane, to the log exchange
// (omqs.exchange.log by default):
//
//	slog.SetDefault(slog.New(m.SlogHandler(nil)))
//	slog.Info("user signed in", "user", 42) // routing key "info"
//
// The routing key follows the record's level: below slog.LevelInfo
// "debug", below slog.LevelWarn "info", below slog.LevelError "warning",
// below LevelFatal "error", and "fatal" from LevelFatal up. The body is the
// record as slog.JSONHandler writes it, on one line: "time", "level" (as
// slog.Level prints it: "INFO", "WARN", "ERROR+4" for LevelFatal), "source"
// with AddSource, "msg", "logger" (SlogOptions.Name), then the attributes,
// groups as nested objects. Every string of the record (the message, string
// attributes, errors' texts, and the strings of other values as JSON writes
// them) that holds a URL with a password shows the password as "xxxxx", as
// RedactedURL does.
//
// Handle never waits for the broker nor for room: it formats the record and
// puts it in the lane's buffer (or journal, with WithJournal) as SendLog
// does, whatever WithOverflow says. When the buffer is full, the record is
// dropped, counted in Stats().Logs.Refused, and Handle returns an error
// wrapping ErrBufferFull (slog.Logger ignores it); a record larger than
// BUFFER_BYTES is dropped with ErrInvalidMessage. While the Manager is not
// running (before Start returns, from Stop on) records go to
// SlogOptions.Fallback instead, and so
// do the records the library logs itself, through WithLogger, of this
// Manager or of any other Manager, publisher or consumer of the process:
// they never enter the lane, so that making this handler the default logger
// (slog.SetDefault) and passing slog.Default() to WithLogger makes no loop. A
// Fallback that leads back to this handler is cut: such a record is dropped
// and Handle returns an error saying so.
//
// The handler, and those WithAttrs and WithGroup derive from it, are safe
// for concurrent use. A nil Manager's handler passes every record to the
// fallback.
func (m *Manager) SlogHandler(opts *SlogOptions) slog.Handler {
	var o SlogOptions
	if opts != nil {
		o = *opts
	}
	if isNil(o.Level) {
		o.Level = slog.LevelInfo
	}
	if o.Name == "" && m != nil {
		o.Name = m.name
	}
	if isNil(o.Fallback) || isStdDefaultHandler(o.Fallback) {
		o.Fallback = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.Level, AddSource: o.AddSource})
	}
	h := &slogHandler{m: m, level: o.Level, fallback: o.Fallback}
	if m != nil {
		// Its Level does not matter: Handle calls it for the records
		// the slogHandler's Enabled let through.
		h.json = slog.NewJSONHandler(laneWriter{m}, &slog.HandlerOptions{AddSource: o.AddSource}).
			WithAttrs([]slog.Attr{slog.String("logger", redactString(o.Name))})
	}
	return h
}

// isNil reports whether x is nil or holds a nil pointer, map, function,
// slice or channel, which would panic when used.
func isNil(x any) bool {
	if x == nil {
		return true
	}
	switch v := reflect.ValueOf(x); v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Slice, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// slogHandler is the handler of Manager.SlogHandler. It is immutable.
type slogHandler struct {
	m        *Manager // nil: everything goes to the fallback
	level    slog.Leveler
	json     slog.Handler // formats a record and writes it to the lane (laneWriter)
	fallback slog.Handler
}

func (h *slogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if isOwnRecord(ctx) {
		return !inFallback(ctx) && h.fallback.Enabled(ctx, l)
	}
	return l >= h.level.Level()
}

// Handle ships r through the log lane; see Manager.SlogHandler.
func (h *slogHandler) Handle(ctx context.Context, r slog.Record) error {
	if isOwnRecord(ctx) {
		return h.toFallback(ctx, r) // redacted by the library's logger
	}
	if recordNeedsRedact(r) {
		r = redactRecord(r)
	}
	if h.m == nil || h.m.stateErr() != nil {
		return h.toFallback(ctx, r)
	}
	err := h.json.Handle(ctx, r)
	if err != nil && (errors.Is(err, ErrNotStarted) || errors.Is(err, ErrStopped)) {
		return h.toFallback(ctx, r) // Stop began meanwhile
	}
	return err
}

// errFallbackCycle is what Handle returns for a record that its fallback
// handed back to it.
var errFallbackCycle = errorOf("Manager", errors.New("SlogHandler: the fallback handed the record back to this handler; record dropped (set SlogOptions.Fallback to a handler that does not lead back)"))

// toFallback passes r to the fallback, unless the record comes back from
// it: then it is dropped, with errFallbackCycle.
func (h *slogHandler) toFallback(ctx context.Context, r slog.Record) error {
	if inFallback(ctx) {
		return errFallbackCycle
	}
	ctx = fallbackContext(ctx)
	if !h.fallback.Enabled(ctx, r.Level) {
		return nil
	}
	return h.fallback.Handle(ctx, r)
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	for i, a := range attrs {
		if valueNeedsRedact(a.Value) {
			out := make([]slog.Attr, len(attrs))
			copy(out, attrs[:i])
			for j := i; j < len(attrs); j++ {
				out[j] = slog.Attr{Key: attrs[j].Key, Value: redactValue(attrs[j].Value)}
			}
			attrs = out
			break
		}
	}
	h2 := *h
	if h.json != nil {
		h2.json = h.json.WithAttrs(attrs)
	}
	h2.fallback = h.fallback.WithAttrs(attrs)
	return &h2
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	if h.json != nil {
		h2.json = h.json.WithGroup(name)
	}
	h2.fallback = h.fallback.WithGroup(name)
	return &h2
}

// laneWriter puts each line slog.JSONHandler writes (one record, with its
// newline) in the Manager's log lane, under the routing key of its level.
type laneWriter struct{ m *Manager }

func (w laneWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSuffix(p, []byte{'\n'})
	l := w.m.lanes[logLane]
	// The one copy: the lane keeps the string until the broker confirms it.
	if err := w.m.sendWith(context.Background(), false, OverflowFail, l, slogKey(lineLevel(line)), string(line)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// slogKey returns the log lane's routing key for level l.
func slogKey(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return KeyDebug
	case l < slog.LevelWarn:
		return KeyInfo
	case l < slog.LevelError:
		return KeyWarning
	case l < LevelFatal:
		return KeyError
	}
	return KeyFatal
}

// lineLevel reads the level of a record back from the line JSONHandler
// wrote, which starts with {"time":"...","level":"INFO" (no "time" when the
// record has none): a name DEBUG, INFO, WARN or ERROR and an optional
// signed offset, as slog.Level.String writes it. It returns LevelInfo for a
// line that does not start so, which JSONHandler never writes.
func lineLevel(line []byte) slog.Level {
	const timeTag, levelTag = `{"time":"`, `"level":"`
	s := line
	if bytes.HasPrefix(s, []byte(timeTag)) {
		end := bytes.IndexByte(s[len(timeTag):], '"')
		if end < 0 {
			return slog.LevelInfo
		}
		s = s[len(timeTag)+end+1:]
	}
	if len(s) == 0 || (s[0] != ',' && s[0] != '{') || !bytes.HasPrefix(s[1:], []byte(levelTag)) {
		return slog.LevelInfo
	}
	s = s[1+len(levelTag):]
	end := bytes.IndexByte(s, '"')
	if end < 0 {
		return slog.LevelInfo
	}
	return parseSlogLevel(s[:end])
}

// levelNames are the names slog.Level.String writes, which an offset may
// follow.
var levelNames = [...]struct {
	name []byte
	l    slog.Level
}{{[]byte("DEBUG"), slog.LevelDebug}, {[]byte("INFO"), slog.LevelInfo}, {[]byte("WARN"), slog.LevelWarn}, {[]byte("ERROR"), slog.LevelError}}

// parseSlogLevel reads a level as slog.Level.String writes it ("INFO",
// "ERROR+4", "DEBUG-2"); it returns LevelInfo for anything else.
func parseSlogLevel(s []byte) slog.Level {
	for _, n := range levelNames {
		if !bytes.HasPrefix(s, n.name) {
			continue
		}
		s = s[len(n.name):]
		if len(s) < 2 || len(s) > 8 || (s[0] != '+' && s[0] != '-') {
			return n.l
		}
		off := 0
		for _, c := range s[1:] {
			if c < '0' || c > '9' {
				return n.l
			}
			off = off*10 + int(c-'0')
		}
		if s[0] == '-' {
			off = -off
		}
		return n.l + slog.Level(off)
	}
	return slog.LevelInfo
}

// recordNeedsRedact reports whether the message or an attribute of r holds
// "://": a URL that may carry a password.
func recordNeedsRedact(r slog.Record) bool {
	if strings.Contains(r.Message, "://") {
		return true
	}
	dirty := false
	r.Attrs(func(a slog.Attr) bool {
		dirty = valueNeedsRedact(a.Value)
		return !dirty
	})
	return dirty
}

// valueNeedsRedact reports whether v, resolved, holds "://" in a string,
// in a group's member, in an error's text, or in another value's JSON.
func valueNeedsRedact(v slog.Value) bool {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return strings.Contains(v.String(), "://")
	case slog.KindGroup:
		for _, a := range v.Group() {
			if valueNeedsRedact(a.Value) {
				return true
			}
		}
	case slog.KindAny:
		x := v.Any()
		if _, jm := x.(json.Marshaler); !jm {
			if err, ok := x.(error); ok {
				return strings.Contains(err.Error(), "://")
			}
		}
		b, err := json.Marshal(x)
		return err == nil && bytes.Contains(b, []byte("://"))
	}
	return false
}

// redactRecord returns r with the passwords of URLs replaced by "xxxxx" in
// its message and attributes, which are resolved.
func redactRecord(r slog.Record) slog.Record {
	nr := slog.NewRecord(r.Time, r.Level, redactString(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(slog.Attr{Key: a.Key, Value: redactValue(a.Value)})
		return true
	})
	return nr
}

// redactValue returns v resolved, with the passwords of URLs replaced by
// "xxxxx": in a string, in a group's members, in an error's text (which
// becomes a string, as JSONHandler writes it), and in the strings of
// another value's JSON.
func redactValue(v slog.Value) slog.Value {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		if s := v.String(); strings.Contains(s, "://") {
			return slog.StringValue(transport.Redact(s))
		}
	case slog.KindGroup:
		g := v.Group()
		out := make([]slog.Attr, len(g))
		for i, a := range g {
			out[i] = slog.Attr{Key: a.Key, Value: redactValue(a.Value)}
		}
		return slog.GroupValue(out...)
	case slog.KindAny:
		x := v.Any()
		if _, jm := x.(json.Marshaler); !jm {
			if err, ok := x.(error); ok {
				if s := err.Error(); strings.Contains(s, "://") {
					return slog.StringValue(transport.Redact(s))
				}
				return v
			}
		}
		return redactJSONValue(x)
	}
	return v
}

func redactString(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	return transport.Redact(s)
}

// redactJSONValue returns v, or, when its JSON holds "://", the JSON
// decoded with every string redacted.
func redactJSONValue(v any) slog.Value {
	b, err := json.Marshal(v)
	if err != nil || !bytes.Contains(b, []byte("://")) {
		return slog.AnyValue(v) // JSONHandler reports the error as it would have
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var x any
	if err := d.Decode(&x); err != nil {
		return slog.StringValue(transport.Redact(string(b)))
	}
	return slog.AnyValue(redactJSONStrings(x))
}

// redactJSONStrings redacts the strings (keys too) of a decoded JSON value.
func redactJSONStrings(x any) any {
	switch v := x.(type) {
	case string:
		return transport.Redact(v)
	case []any:
		for i := range v {
			v[i] = redactJSONStrings(v[i])
		}
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[transport.Redact(k)] = redactJSONStrings(e)
		}
		return out
	}
	return x
}

// fallbackRecordKey marks the context of a record a SlogHandler passed to
// its fallback, which must not come back to it (see ownContext for the
// library's own records).
type fallbackRecordKey struct{}

var (
	// Marked copies of context.Background(), with which most records are
	// logged, so that marking them allocates nothing.
	fallbackBackground    = context.WithValue(context.Background(), fallbackRecordKey{}, true)
	ownFallbackBackground = context.WithValue(ownBackground, fallbackRecordKey{}, true)
)

// fallbackContext returns ctx marked as the context of a record a
// SlogHandler passed to its fallback.
func fallbackContext(ctx context.Context) context.Context {
	switch {
	case ctx == nil || ctx == context.Background():
		return fallbackBackground
	case ctx == ownBackground:
		return ownFallbackBackground
	case inFallback(ctx):
		return ctx
	}
	return context.WithValue(ctx, fallbackRecordKey{}, true)
}

func inFallback(ctx context.Context) bool {
	return ctx != nil && ctx.Value(fallbackRecordKey{}) != nil
}
