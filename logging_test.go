package omqs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/lockedbuf"
	"github.com/omqs-go/omqs/internal/pyfmt"
	"github.com/omqs-go/omqs/internal/transport"
)

// fakeClock is a settable clock for time rotation.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// withClock makes time rotation read the time from now.
func withClock(now func() time.Time) LogOption {
	return func(s *logSettings) { s.now = now }
}

// streamConfig is a [Log] section printing format to a stream.
func streamConfig(format string) LogConfig {
	c := DefaultConfig().Log
	c.Format = format
	c.Level = "DEBUG"
	return c
}

// fileConfig is a [Log] section writing format to files in dir.
func fileConfig(dir, format string) LogConfig {
	c := streamConfig(format)
	c.Type = "file"
	c.Folder = dir
	c.Rotation = false
	return c
}

// newStream returns a LogManager printing to a buffer, closed at the end of the test.
func newStream(t *testing.T, name string, cfg LogConfig, opts ...LogOption) (*LogManager, *lockedbuf.Buffer) {
	t.Helper()
	var buf lockedbuf.Buffer
	lm, err := NewLogManager(name, "", append([]LogOption{WithLogConfig(cfg), WithLogOutput(&buf)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lm.Close() })
	return lm, &buf
}

func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDefaultFormatLine(t *testing.T) {
	lm, buf := newStream(t, "", streamConfig(""))
	before := time.Now()
	_, _, line, _ := runtime.Caller(0)
	lm.Logger().Info("hello")
	after := time.Now()

	// %(levelname) -5s %(asctime)s %(filename) -10s:%(lineno) -5d: %(message)s
	got := buf.String()
	const asctimeLen = len("2006-01-02 15:04:05,000")
	if len(got) < 6+asctimeLen {
		t.Fatalf("line %q is too short", got)
	}
	want := fmt.Sprintf("INFO  %s logging_test.go:%-5s: hello\n", got[6:6+asctimeLen], " "+strconv.Itoa(line+1))
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	ts, err := time.ParseInLocation("2006-01-02 15:04:05,000", got[6:6+asctimeLen], time.Local)
	if err != nil {
		t.Fatalf("asctime: %v", err)
	}
	if ts.Before(before.Truncate(time.Millisecond)) || ts.After(after) {
		t.Errorf("asctime %v is not between %v and %v", ts, before, after)
	}
}

func TestHandlerExactLine(t *testing.T) {
	lm, buf := newStream(t, "", streamConfig("[OMQS] "+DefaultLogFormat))
	tm := time.Date(2026, 3, 2, 10, 4, 5, 250_000_000, time.Local)
	var pcs [1]uintptr
	runtime.Callers(1, pcs[:])
	_, _, line, _ := runtime.Caller(0)
	r := slog.NewRecord(tm, LevelFatal, "disk full", pcs[0])
	r.AddAttrs(slog.String("path", "/var"))
	if err := lm.Logger().Handler().Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[OMQS] CRITICAL 2026-03-02 10:04:05,250 logging_test.go: %-4d: disk full path=/var\n", line-1)
	if got := buf.String(); got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

// logHere logs msg at INFO and returns the line it logged from.
func logHere(l *slog.Logger, msg string) int {
	_, _, line, _ := runtime.Caller(0)
	l.Info(msg)
	return line + 1
}

func TestFormatFields(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	tests := []struct {
		format string
		want   func(line int) string
	}{
		{"%(name)s|%(levelname)s|%(levelno)s|%(levelno)d", func(int) string { return "mod|INFO|20|20" }},
		{"%(filename)s|%(module)s|%(funcName)s", func(int) string { return "logging_test.go|logging_test|logHere" }},
		{"%(pathname)s", func(int) string { return file }},
		{"%(lineno)d|%(lineno)5d|%(lineno)-5d|%(lineno) -5d|", func(l int) string {
			return fmt.Sprintf("%d|%5d|%-5d|%-5s|", l, l, l, " "+strconv.Itoa(l))
		}},
		{"%(process)d|%(processName)s|%(threadName)s", func(int) string {
			return fmt.Sprintf("%d|MainProcess|MainThread", os.Getpid())
		}},
		{"%(thread)d", func(int) string { return strconv.FormatInt(goroutineID(), 10) }},
		{"%(message)s|%(message)10s|%(message)-10s|%(message).3s|%(message)r", func(int) string {
			return `hi|        hi|hi        |hi|"hi"`
		}},
		{"100%% %(levelname) -8s|", func(int) string { return "100% INFO    |" }},
	}
	for _, tt := range tests {
		lm, buf := newStream(t, "mod", streamConfig(tt.format))
		line := logHere(lm.Logger(), "hi")
		if got, want := buf.String(), tt.want(line)+"\n"; got != want {
			t.Errorf("format %q:\n got %q\nwant %q", tt.format, got, want)
		}
	}
}

func TestTimeFields(t *testing.T) {
	lm, buf := newStream(t, "", streamConfig("%(created)f|%(msecs)03d|%(relativeCreated)d|%(asctime)s"))
	before := time.Now()
	lm.Logger().Info("x")
	parts := strings.Split(strings.TrimSpace(buf.String()), "|")
	if len(parts) != 4 {
		t.Fatalf("got %q", buf.String())
	}
	created, err := strconv.ParseFloat(parts[0], 64)
	if err != nil || created < float64(before.Unix()) || created > float64(time.Now().Unix()+1) {
		t.Errorf("created = %q, want the current Unix time", parts[0])
	}
	if ms, err := strconv.Atoi(parts[1]); err != nil || ms < 0 || ms > 999 || len(parts[1]) != 3 {
		t.Errorf("msecs = %q", parts[1])
	}
	if rel, err := strconv.Atoi(parts[2]); err != nil || rel < 0 || rel > 60_000 {
		t.Errorf("relativeCreated = %q", parts[2])
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}$`).MatchString(parts[3]) {
		t.Errorf("asctime = %q", parts[3])
	}
}

func TestLevels(t *testing.T) {
	cfg := streamConfig("%(levelname)s %(levelno)s %(message)s")
	cfg.Level = "INFO"
	lm, buf := newStream(t, "", cfg)
	log := lm.Logger()
	derived := log.With("k", 1).WithGroup("g")
	ctx := context.Background()

	log.Debug("hidden")
	derived.Debug("hidden")
	log.Info("i")
	log.Warn("w")
	log.Error("e")
	log.Log(ctx, LevelFatal, "f")
	if err := lm.SetLevel("debug"); err != nil {
		t.Fatal(err)
	}
	log.Debug("d")
	derived.Debug("d2")
	if err := lm.SetLevel("Critical"); err != nil {
		t.Fatal(err)
	}
	log.Error("hidden")
	derived.Log(ctx, LevelFatal, "f2")
	log.Log(ctx, slog.LevelInfo+2, "odd")
	want := []string{
		"INFO 20 i", "WARNING 30 w", "ERROR 40 e", "CRITICAL 50 f",
		"DEBUG 10 d", "DEBUG 10 d2 k=1", "CRITICAL 50 f2 k=1",
	}
	if got := lines(buf.String()); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, tt := range []struct{ set, want string }{
		{"DEBUG", "DEBUG"}, {"info", "INFO"}, {"WARNING", "WARNING"}, {"warn", "WARNING"},
		{" Error ", "ERROR"}, {"FATAL", "CRITICAL"}, {"critical", "CRITICAL"},
	} {
		if err := lm.SetLevel(tt.set); err != nil {
			t.Errorf("SetLevel(%q): %v", tt.set, err)
		}
		if got := lm.Level(); got != tt.want {
			t.Errorf("after SetLevel(%q), Level() = %q, want %q", tt.set, got, tt.want)
		}
	}
	for _, bad := range []string{"", "VERBOSE", "10", "INFOO"} {
		err := lm.SetLevel(bad)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("SetLevel(%q) = %v, want ErrInvalidConfig naming the value", bad, err)
		}
		if lm.Level() != "CRITICAL" {
			t.Errorf("a bad SetLevel changed the level to %s", lm.Level())
		}
	}
	// Python's numbering of levels between the named ones.
	if name, no := levelName(slog.LevelInfo + 2); name != "Level 25" || no != 25 {
		t.Errorf("levelName(INFO+2) = %q, %d", name, no)
	}
}

func TestWithLogLevel(t *testing.T) {
	cfg := streamConfig("%(message)s")
	cfg.Level = "ERROR"
	lm, buf := newStream(t, "", cfg, WithLogLevel("warn"))
	if lm.Level() != "WARNING" {
		t.Errorf("Level() = %s, want WARNING", lm.Level())
	}
	lm.Logger().Info("no")
	lm.Logger().Warn("yes")
	if got := buf.String(); got != "yes\n" {
		t.Errorf("got %q", got)
	}
	if _, err := NewLogManager("", "", WithLogConfig(cfg), WithLogOutput(io.Discard), WithLogLevel("LOUD")); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), `"LOUD"`) {
		t.Errorf("WithLogLevel(LOUD): %v", err)
	}
}

func TestDefaults(t *testing.T) {
	t.Setenv("OMQS_CONFIG", "") // the defaults, whatever the environment names
	lm, err := NewLogManager("", "", WithLogOutput(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	if lm.Name() != "OMQS" || lm.FileName() != "" || lm.Level() != "INFO" {
		t.Errorf("Name %q FileName %q Level %q, want OMQS, \"\", INFO", lm.Name(), lm.FileName(), lm.Level())
	}
	// An empty LogConfig takes the defaults, except Rotation and BackupCount.
	if got := withLogDefaults(LogConfig{}); got.Format != DefaultLogFormat || got.Type != "stream" || got.Folder != "./log/" || got.Size != 5 || got.Rotation {
		t.Errorf("withLogDefaults(LogConfig{}) = %+v", got)
	}
}

func TestLogConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		edit func(*LogConfig)
		want string
	}{
		{"format", func(c *LogConfig) { c.Format = "%(levelname)s %(levelnme)s" }, `log format: position 15: unknown field "levelnme" (did you mean "levelname"?)`},
		{"format end", func(c *LogConfig) { c.Format = "%(message)s %" }, `position 13: '%' at the end`},
		{"format no conversion", func(c *LogConfig) { c.Format = "%(message)" }, `field "message" has no conversion character`},
		{"level", func(c *LogConfig) { c.Level = "LOUD" }, `[Log] LEVEL: "LOUD" is not one of`},
		{"type", func(c *LogConfig) { c.Type = "syslog" }, `[Log] TYPE: "syslog" is not one of stream, file`},
		{"rotation type", func(c *LogConfig) { c.Type = "file"; c.Rotation = true; c.RotationType = "daily" }, `[Log] ROTATION_TYPE: "daily" is not one of size, time`},
		{"size", func(c *LogConfig) { c.Type = "file"; c.Rotation = true; c.RotationType = "size"; c.Size = -1 }, `[Log] SIZE: -1 must be at least 1`},
		{"size too large", func(c *LogConfig) { c.Type, c.Rotation, c.Size = "file", true, cfgMaxLogSize+1 }, `[Log] SIZE: 1048577 must be at most 1048576`},
		{"rotating time", func(c *LogConfig) { c.Type = "file"; c.Rotation = true; c.RotationType = "time"; c.RotatingTime = "W9" }, `[Log] ROTATING_TIME: "W9" is not a rotation time`},
		{"backup count", func(c *LogConfig) { c.Type = "file"; c.Rotation = true; c.BackupCount = -2 }, `[Log] BACKUP_COUNT: -2 must be at least 0`},
	}
	for _, tt := range tests {
		cfg := fileConfig(dir, "%(message)s")
		cfg.Type = "stream"
		tt.edit(&cfg)
		lm, err := NewLogManager("", "", WithLogConfig(cfg), WithLogOutput(io.Discard))
		if err == nil {
			lm.Close()
			t.Errorf("%s: no error", tt.name)
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q, want ErrInvalidConfig containing %q", tt.name, err, tt.want)
		}
		// The checks are those of Config.Validate, word for word.
		c := DefaultConfig()
		c.Log = cfg
		if verr := c.Validate(); verr == nil || verr.Error() != err.Error() {
			t.Errorf("%s: NewLogManager says %q, Validate %v", tt.name, err, verr)
		}
	}
	if lm, err := NewLogManager("", "", WithLogConfig(streamConfig("%(message)s")), WithLogLevel("LOUD"), WithLogOutput(io.Discard)); err == nil || !strings.Contains(err.Error(), `[Log] LEVEL: "LOUD" is not one of`) {
		if err == nil {
			lm.Close()
		}
		t.Errorf("WithLogLevel(\"LOUD\"): error %v", err)
	}
	var pe *pyfmt.Error
	_, err := NewLogManager("", "", WithLogConfig(streamConfig("x %(nope)s")))
	if !errors.As(err, &pe) || pe.Pos != 3 {
		t.Errorf("format error %v does not carry its position", err)
	}
}

func TestFileOutput(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	lm, err := NewLogManager("svc", "svc.log", WithLogConfig(fileConfig(dir, "%(name)s %(message)s")))
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "svc.log")
	if lm.FileName() != want {
		t.Errorf("FileName() = %q, want %q", lm.FileName(), want)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("folder not created: %v", err)
	}
	lm.Logger().Info("one")
	lm.Logger().Info("two")
	if err := lm.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, want); got != "svc one\nsvc two\n" {
		t.Errorf("file holds %q", got)
	}

	// Plain files are appended to; an absolute file name is used as it is.
	lm, err = NewLogManager("svc", want, WithLogConfig(fileConfig(t.TempDir(), "%(message)s")))
	if err != nil {
		t.Fatal(err)
	}
	lm.Logger().Info("three")
	lm.Close()
	if got := readFile(t, want); got != "svc one\nsvc two\nthree\n" {
		t.Errorf("file holds %q", got)
	}
}

func TestFileNameIsAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	lm, err := NewLogManager("", "", WithLogConfig(fileConfig("logs", "%(message)s")))
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	want := filepath.Join(dir, "logs", "OMQS.log")
	if got, _ := filepath.EvalSymlinks(lm.FileName()); got != want && lm.FileName() != want {
		t.Errorf("FileName() = %q, want %q", lm.FileName(), want)
	}
}

// backups returns the names of the files in dir other than current, sorted.
func backups(t *testing.T, dir, current string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != current {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}

func TestSizeRotation(t *testing.T) {
	dir := t.TempDir()
	cfg := fileConfig(dir, "%(message)s")
	cfg.Rotation, cfg.RotationType, cfg.Size, cfg.BackupCount = true, "size", 1, 2
	lm, err := NewLogManager("", "size.log", WithLogConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	if fi, err := os.Stat(lm.FileName()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log file not created at once, or readable by others: %v", err)
	}
	chunk := strings.Repeat("x", 1000)
	for i := 0; i < 3500; i++ { // about 3.5 MB: three rotations
		lm.Logger().Info(chunk, "i", i)
	}
	// lumberjack deletes the backups beyond BACKUP_COUNT in the background.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		b := backups(t, dir, "size.log")
		if len(b) > 0 && len(b) <= cfg.BackupCount {
			for _, n := range b {
				if !regexp.MustCompile(`^size-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d\.\d{3}\.log$`).MatchString(n) {
					t.Errorf("unexpected backup name %q", n)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backups %v: want 1 to %d", b, cfg.BackupCount)
		}
		<-tick.C
	}
	if fi, err := os.Stat(lm.FileName()); err != nil {
		t.Errorf("current file: %v", err)
	} else if fi.Size() > 1<<20 {
		t.Errorf("current file has %d bytes, more than SIZE", fi.Size())
	}
}

func TestTimeRotation(t *testing.T) {
	monday := time.Date(2026, 3, 2, 10, 0, 0, 0, time.Local)
	tests := []struct {
		code   string
		step   time.Duration
		suffix string // regexp of the rotated files' suffix
	}{
		{"1S", time.Second, `\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d`},
		{"5M", 5 * time.Minute, `\d{4}-\d\d-\d\d_\d\d-\d\d`},
		{"2H", 2 * time.Hour, `\d{4}-\d\d-\d\d_\d\d`},
		{"1D", 24 * time.Hour, `\d{4}-\d\d-\d\d`},
		{"MD", 24 * time.Hour, `\d{4}-\d\d-\d\d`},
		{"W2", 7 * 24 * time.Hour, `\d{4}-\d\d-\d\d`},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			dir := t.TempDir()
			cfg := fileConfig(dir, "%(message)s")
			cfg.Rotation, cfg.RotationType, cfg.RotatingTime, cfg.BackupCount = true, "time", tt.code, 2
			clock := &fakeClock{t: monday}
			lm, err := NewLogManager("", "t.log", WithLogConfig(cfg), withClock(clock.Now))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				lm.Logger().Info("line " + strconv.Itoa(i))
				clock.Add(tt.step)
			}
			if err := lm.Close(); err != nil {
				t.Fatal(err)
			}
			// Four rotations; BACKUP_COUNT keeps the newest two.
			b := backups(t, dir, "t.log")
			if len(b) != 2 {
				t.Fatalf("rotated files %v, want 2", b)
			}
			re := regexp.MustCompile(`^t\.log\.` + tt.suffix + `$`)
			var all []string
			for _, n := range b {
				if !re.MatchString(n) {
					t.Errorf("rotated file name %q does not match %s", n, re)
				}
				all = append(all, lines(readFile(t, filepath.Join(dir, n)))...)
			}
			all = append(all, lines(readFile(t, filepath.Join(dir, "t.log")))...)
			if got := strings.Join(all, ","); got != "line 2,line 3,line 4" {
				t.Errorf("lines kept: %s", got)
			}
		})
	}
}

func TestSameNameStreamOnce(t *testing.T) {
	var buf lockedbuf.Buffer
	cfg := streamConfig("%(name)s %(message)s")
	lm1, err := NewLogManager("dup", "", WithLogConfig(cfg), WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	defer lm1.Close()
	lm2, err := NewLogManager("dup", "", WithLogConfig(cfg), WithLogOutput(&buf))
	if err != nil {
		t.Fatal(err)
	}
	defer lm2.Close()
	lm1.Logger().Info("one")
	lm2.Logger().Info("two")
	lm1.Logger().Info("three")
	if got := buf.String(); got != "dup one\ndup two\ndup three\n" {
		t.Errorf("got %q, want each line once", got)
	}
}

func TestSameFileShared(t *testing.T) {
	dir := t.TempDir()
	cfg := fileConfig(dir, "%(name)s %(message)s")
	lm1, err := NewLogManager("dup", "same.log", WithLogConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	lm2, err := NewLogManager("dup", "same.log", WithLogConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if lm1.core.sink != lm2.core.sink {
		t.Error("two LogManagers on one file do not share its writer")
	}
	// The same file reached through another path is the same file.
	lm3, err := NewLogManager("other", filepath.Join(dir, ".", "same.log"), WithLogConfig(fileConfig(t.TempDir(), "%(name)s %(message)s")))
	if err != nil {
		t.Fatal(err)
	}
	if lm3.core.sink != lm1.core.sink {
		t.Error("a cleaned path opens the file a second time")
	}
	// Other rotation settings for an open file are refused.
	rot := cfg
	rot.Rotation, rot.RotationType = true, "size"
	if lm, err := NewLogManager("dup", "same.log", WithLogConfig(rot)); !errors.Is(err, ErrInvalidConfig) {
		if err == nil {
			lm.Close()
		}
		t.Errorf("other rotation settings: %v, want ErrInvalidConfig", err)
	}

	lm1.Logger().Info("one")
	lm2.Logger().Info("two")
	lm3.Logger().Info("three")
	if err := lm1.Close(); err != nil {
		t.Fatal(err)
	}
	lm1.Logger().Info("after close")
	lm2.Logger().Info("four") // still open for lm2
	lm2.Close()
	lm3.Close()
	lm3.Logger().Info("after close")
	if got := readFile(t, filepath.Join(dir, "same.log")); got != "dup one\ndup two\nother three\ndup four\n" {
		t.Errorf("file holds %q, want each line once", got)
	}
	fileSinks.mu.Lock()
	n := len(fileSinks.m)
	fileSinks.mu.Unlock()
	if n != 0 {
		t.Errorf("%d files still open after every LogManager closed", n)
	}
}

func TestClose(t *testing.T) {
	lm, buf := newStream(t, "", streamConfig("%(message)s"))
	log := lm.Logger().With("a", 1)
	if err := lm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lm.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	log.Error("dropped")
	if lm.Logger().Enabled(context.Background(), LevelFatal) {
		t.Error("Enabled after Close")
	}
	if err := lm.Logger().Handler().Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelError, "x", 0)); err != nil {
		t.Errorf("Handle after Close: %v", err)
	}
	if buf.String() != "" {
		t.Errorf("output after Close: %q", buf.String())
	}
}

const secret = "S3cr3tPassw0rd"

type connInfo struct {
	URL  string
	Name string
}

func TestRedaction(t *testing.T) {
	lm, buf := newStream(t, "", streamConfig("%(message)s"))
	raw := "amqp://guest:" + secret + "@rabbit.example:5672/%2F"
	u, _ := url.Parse(raw)
	log := lm.Logger().With("with", raw)
	log.Info("dialing " + raw + " now")
	log.Info("attrs",
		"url", raw,
		"redacted", RedactedURL(raw),
		"list", RedactedURL(raw+","+raw),
		"parsed", u,
		"err", fmt.Errorf("dial %s: refused", raw),
		"struct", connInfo{URL: raw, Name: "x"},
		"bytes", []byte(raw),
		slog.Group("g", "url", raw),
	)
	log.WithGroup("grp").Info("in group", "url", raw)
	log.Info("user-only URL first: amqp://user@h1/ then " + raw)
	log.Info("password with a space: amqp://u:" + secret + " x@h/")
	out := buf.String()
	if strings.Contains(out, secret) || strings.Contains(out, "S3cr3t") {
		t.Errorf("password printed:\n%s", out)
	}
	if n := strings.Count(out, "xxxxx"); n < 14 {
		t.Errorf("%d redactions, want at least 14:\n%s", n, out)
	}
	if !strings.Contains(out, "redacted=amqp://guest:xxxxx@rabbit.example:5672/%2F ") {
		t.Errorf("RedactedURL printed differently:\n%s", out)
	}
	if got := fmt.Sprint(RedactedURL(raw)); got != "amqp://guest:xxxxx@rabbit.example:5672/%2F" {
		t.Errorf("RedactedURL.String() = %q", got)
	}
}

func TestRedactText(t *testing.T) {
	tests := map[string]string{
		"":                              "",
		"no url here":                   "no url here",
		"mail bob@example.com":          "mail bob@example.com",
		"bob@x.com via https://app/":    "bob@x.com via https://app/",
		"https://example.com/a@b":       "https://example.com/a@b",
		"amqp://u:p@h/":                 "amqp://u:xxxxx@h/",
		"amqp://u:xxxxx@h/":             "amqp://u:xxxxx@h/",
		"amqp://:p@h/":                  "amqp://:xxxxx@h/",
		"to amqp://u:p@h/ failed":       "to amqp://u:xxxxx@h/ failed",
		"amqp://u:p@h1,amqp://v:q@h2":   "amqp://u:xxxxx@h1,amqp://v:xxxxx@h2",
		"amqp://user@h1/ amqp://v:q@h2": "amqp://user@h1/ amqp://v:xxxxx@h2",
		"amqp://u:p@ss@h/":              "amqp://u:xxxxx@h/",
		"amqp://u:a b@h/":               "amqp://u:xxxxx@h/",
		"amqp://h:5672/ mail a@b":       "amqp://h:xxxxx@b",
	}
	for in, want := range tests {
		if got := transport.Redact(in); got != want {
			t.Errorf("transport.Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAttributes(t *testing.T) {
	lm, buf := newStream(t, "", streamConfig("%(levelname)s: %(message)s"))
	tm := time.Date(2026, 3, 2, 10, 0, 0, 123_000_000, time.UTC)
	log := lm.Logger()
	log.Info("plain")
	log.Info("kinds", "n", -3, "u", uint64(7), "f", 1.5, "b", true, "d", 1500*time.Millisecond, "t", tm,
		"s", "two words", "empty", "", "eq", "a=b", "q", `say "hi"`, "nl", "a\nb", "uni", "héllo",
		"err", errors.New("boom"), "nil", nil, "key with space", 1)
	log.With("k", "v").WithGroup("req").With("id", 7).WithGroup("more").Info("groups", "x", 1, slog.Group("inner", "y", 2))
	log.Info("group attrs", slog.Group("g", "a", 1, "b", 2), slog.Group("empty"), slog.Group("", "inline", 3), slog.Attr{})
	log.WithGroup("unused").Info("empty group")
	want := []string{
		"INFO: plain",
		`INFO: kinds n=-3 u=7 f=1.5 b=true d=1.5s t=2026-03-02T10:00:00.123Z s="two words" empty="" eq="a=b" q="say \"hi\"" nl="a\nb" uni=héllo err=boom nil=<nil> "key with space"=1`,
		"INFO: groups k=v req.id=7 req.more.x=1 req.more.inner.y=2",
		"INFO: group attrs g.a=1 g.b=2 inline=3",
		"INFO: empty group",
	}
	if got := lines(buf.String()); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestConcurrentLogging(t *testing.T) {
	dir := t.TempDir()
	cfg := fileConfig(dir, DefaultLogFormat)
	lm1, err := NewLogManager("a", "c.log", WithLogConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	lm2, err := NewLogManager("b", "c.log", WithLogConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 16, 200
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lm := lm1
			if g%2 == 1 {
				lm = lm2
			}
			log := lm.Logger().With("g", g)
			for i := 0; i < each; i++ {
				if i%50 == 0 {
					lm.SetLevel("DEBUG")
				}
				log.Debug(strings.Repeat("m", 100), "i", i)
			}
		}()
	}
	wg.Wait()
	lm1.Close()
	lm2.Close()
	got := lines(readFile(t, filepath.Join(dir, "c.log")))
	if len(got) != goroutines*each {
		t.Fatalf("%d lines, want %d", len(got), goroutines*each)
	}
	re := regexp.MustCompile(`^DEBUG \S+ \S+ logging_test\.go:\s*\d+\s*: m{100} g=\d+ i=\d+$`)
	seen := map[string]bool{}
	for _, l := range got {
		if !re.MatchString(l) {
			t.Fatalf("mangled line %q", l)
		}
		k := l[strings.Index(l, " g="):]
		if seen[k] {
			t.Fatalf("line %q twice", k)
		}
		seen[k] = true
	}
}

func TestGoroutineID(t *testing.T) {
	id := goroutineID()
	ch := make(chan int64)
	go func() { ch <- goroutineID() }()
	if other := <-ch; id <= 0 || other <= 0 || other == id {
		t.Errorf("goroutine ids %d and %d", id, other)
	}
}

func BenchmarkLoggerInfo(b *testing.B) {
	lm, err := NewLogManager("bench", "", WithLogConfig(streamConfig(DefaultLogFormat)), WithLogOutput(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	defer lm.Close()
	log := lm.Logger()
	b.ReportAllocs()
	for b.Loop() {
		log.Info("user signed in")
	}
}

func BenchmarkLoggerInfoAttrs(b *testing.B) {
	lm, err := NewLogManager("bench", "", WithLogConfig(streamConfig(DefaultLogFormat)), WithLogOutput(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	defer lm.Close()
	log := lm.Logger().With("service", "web")
	b.ReportAllocs()
	for b.Loop() {
		log.Info("user signed in", "user", 42, "ok", true)
	}
}

// logFailingWriter is an output whose every Write fails.
type logFailingWriter struct{ err error }

func (w logFailingWriter) Write([]byte) (int, error) { return 0, w.err }

// withLogErrorOutput makes the LogManager print its first write error to w
// instead of standard error.
func withLogErrorOutput(w io.Writer) LogOption {
	return func(s *logSettings) { s.errOut = w }
}

// TestLogWriteErrors checks that an error of the output, which slog.Logger
// drops, is printed once and kept for Err.
func TestLogWriteErrors(t *testing.T) {
	errFull := errors.New("disk full")
	var errOut lockedbuf.Buffer
	lm, err := NewLogManager("svc", "", WithLogConfig(streamConfig("%(message)s")),
		WithLogOutput(logFailingWriter{errFull}), withLogErrorOutput(&errOut))
	if err != nil {
		t.Fatal(err)
	}
	defer lm.Close()
	if lm.Err() != nil {
		t.Errorf("Err() = %v before any record", lm.Err())
	}
	lm.Logger().Info("one")
	lm.Logger().With("a", 1).Error("two")
	if !errors.Is(lm.Err(), errFull) {
		t.Errorf("Err() = %v, want %v", lm.Err(), errFull)
	}
	if got := lines(errOut.String()); len(got) != 1 || !strings.Contains(got[0], `omqs: LogManager "svc" cannot write to its output: disk full`) {
		t.Errorf("error output %q, want one line about the error", got)
	}

	// A record longer than SIZE cannot be written with size rotation.
	dir := t.TempDir()
	cfg := fileConfig(dir, "%(message)s")
	cfg.Rotation, cfg.RotationType, cfg.Size = true, "size", 1
	var errOut2 lockedbuf.Buffer
	lm2, err := NewLogManager("big", "big.log", WithLogConfig(cfg), withLogErrorOutput(&errOut2))
	if err != nil {
		t.Fatal(err)
	}
	lm2.Logger().Info(strings.Repeat("x", 2<<20))
	lm2.Close()
	if lm2.Err() == nil || !strings.Contains(lm2.Err().Error(), "exceeds maximum file size") {
		t.Errorf("Err() = %v after a record longer than SIZE", lm2.Err())
	}
	if !strings.Contains(errOut2.String(), lm2.FileName()) {
		t.Errorf("error output %q does not name the file", errOut2.String())
	}
}

// logMillGoroutines counts the goroutines lumberjack started (its millRun).
func logMillGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "created by gopkg.in/natefinch/lumberjack")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestSizeRotationReopenGoroutines checks that opening and closing a
// size-rotated log file again and again leaves at most one lumberjack
// goroutine behind, and that every reopening still writes to the file.
func TestSizeRotationReopenGoroutines(t *testing.T) {
	dir := t.TempDir()
	cfg := fileConfig(dir, "%(message)s")
	cfg.Rotation, cfg.RotationType, cfg.Size = true, "size", 1
	before := logMillGoroutines()
	var want strings.Builder
	for i := 0; i < 5; i++ {
		lm, err := NewLogManager("", "reopen.log", WithLogConfig(cfg))
		if err != nil {
			t.Fatal(err)
		}
		lm.Logger().Info("line " + strconv.Itoa(i))
		fmt.Fprintf(&want, "line %d\n", i)
		if err := lm.Close(); err != nil {
			t.Fatal(err)
		}
		if lm.Err() != nil {
			t.Fatal(lm.Err())
		}
	}
	if got := logMillGoroutines() - before; got > 1 {
		t.Errorf("%d lumberjack goroutines after 5 LogManagers on one file, want at most 1", got)
	}
	if got := readFile(t, filepath.Join(dir, "reopen.log")); got != want.String() {
		t.Errorf("file holds %q, want %q", got, want.String())
	}
}

// keepDefaultLogger restores slog's default logger and the log package's
// output when the test ends.
func keepDefaultLogger(t *testing.T) {
	l, w, f := slog.Default(), log.Writer(), log.Flags()
	t.Cleanup(func() {
		slog.SetDefault(l)
		log.SetOutput(w)
		log.SetFlags(f)
	})
}

// The library's logger made from slog's initial default handler writes
// through the log package until slog.SetDefault; then it writes to the new
// default's handler directly, with its attributes, groups and level, and
// with the context that marks its records as the library's own.
//
// Not parallel: it sets the default logger and the log package's output.
func TestRedactingFollowsDefault(t *testing.T) {
	keepDefaultLogger(t)
	var before lockedbuf.Buffer
	log.SetOutput(&before)
	l := slog.New(redacting(slog.Default().Handler())).With("publisher", "p").WithGroup("g")
	l.Warn("omqs: one", "url", "amqp://u:s3cret@h/")
	if out := before.String(); !strings.Contains(out, "WARN omqs: one publisher=p g.url=amqp://u:xxxxx@h/") {
		t.Errorf("before SetDefault, through the log package: %q", out)
	}

	var after lockedbuf.Buffer
	var own atomic.Int32
	slog.SetDefault(slog.New(markHandler{slog.NewJSONHandler(&after, nil), &own}))
	l.Warn("omqs: two", "url", "amqp://u:s3cret@h/")
	want := `"level":"WARN","msg":"omqs: two","publisher":"p","g":{"url":"amqp://u:xxxxx@h/"}}`
	if out := after.String(); !strings.Contains(out, want) || own.Load() != 1 {
		t.Errorf("after SetDefault: %q (own records %d), want %s", out, own.Load(), want)
	}
	if strings.Contains(before.String(), "two") {
		t.Errorf("the record went through the log package too: %q", before.String())
	}
}

// markHandler counts the records that carry the library's mark.
type markHandler struct {
	slog.Handler
	own *atomic.Int32
}

func (h markHandler) Handle(ctx context.Context, r slog.Record) error {
	if isOwnRecord(ctx) {
		h.own.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h markHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return markHandler{h.Handler.WithAttrs(as), h.own}
}

func (h markHandler) WithGroup(name string) slog.Handler {
	return markHandler{h.Handler.WithGroup(name), h.own}
}
