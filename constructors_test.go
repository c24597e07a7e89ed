package omqs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// fileLogConfig returns the default configuration with the [Log] section
// writing to the file OMQS.log in dir, which is also the spool folder.
func fileLogConfig(dir string) *Config {
	cfg := DefaultConfig()
	cfg.Log.Type, cfg.Log.Folder = "file", dir
	return cfg
}

// Constructors start no goroutine: a Manager, publisher or consumer that is
// built and never started leaves nothing running, with its default
// LogManager writing to a file and its spool folder set. Stop releases what
// they opened.
func TestConstructorsStartNoGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	dir := t.TempDir()
	var stops []func(context.Context) error
	for _, c := range allConstructors {
		opts := []Option{WithConfig(fileLogConfig(dir)), WithURL("memory://no-goroutine")}
		switch c.name {
		case "NewManager", "NewSyncPublisher", "NewAsyncPublisher":
			opts = append(opts, WithSpoolDir(dir))
		}
		stop, err := c.build(opts...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		stops = append(stops, stop)
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines running after the constructors: %v", err)
	}
	for _, stop := range stops {
		if err := stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := goleak.Find(before); err != nil {
		t.Errorf("goroutines running after Stop: %v", err)
	}
	if path := filepath.Join(dir, "OMQS.log"); sinkOpen(path) {
		t.Errorf("%s is still open after every Stop", path)
	}
}

// sinkOpen reports whether a LogManager still has the log file path open.
func sinkOpen(path string) bool {
	fileSinks.mu.Lock()
	defer fileSinks.mu.Unlock()
	_, ok := fileSinks.m[path]
	return ok
}

// Without WithLogger every constructor logs to a LogManager built from the
// [Log] section, publishers too: a publisher that cannot reach the broker
// writes its failed connection attempt to FOLDER/OMQS.log, and Stop closes
// that file.
func TestPublishersLogToTheLogSectionByDefault(t *testing.T) {
	for _, kind := range []string{"SyncPublisher", "AsyncPublisher"} {
		t.Run(kind, func(t *testing.T) {
			dir := t.TempDir()
			opts := []Option{
				WithConfig(fileLogConfig(dir)), WithURL("amqp://guest:guest@127.0.0.1:1/%2F"),
				WithReconnect(time.Millisecond, 1),
			}
			var start, stop func(context.Context) error
			if kind == "SyncPublisher" {
				p, err := NewSyncPublisher(opts...)
				if err != nil {
					t.Fatal(err)
				}
				start, stop = p.Start, p.Stop
			} else {
				p, err := NewAsyncPublisher(opts...)
				if err != nil {
					t.Fatal(err)
				}
				start, stop = p.Start, p.Stop
			}
			if err := start(testCtx(t, 10*time.Second)); !errors.Is(err, ErrConnection) {
				t.Fatalf("Start with no broker listening: %v, want ErrConnection", err)
			}
			if err := stop(testCtx(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "OMQS.log")
			if sinkOpen(path) {
				t.Errorf("%s is still open after Stop", path)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), "omqs: connect failed") {
				t.Fatalf("%s does not hold the failed connection attempt:\n%s", path, b)
			}
		})
	}
}

// Start called a second time returns ErrRunning for the Manager and both
// publishers (as Run does for consumers), and after Stop ErrStopped; the
// texts read "omqs: <Type>: ...".
func TestStartTwiceIsErrRunning(t *testing.T) {
	type starter struct {
		name        string
		start, stop func(context.Context) error
	}
	cfg := DefaultConfig()
	base := func(t *testing.T) []Option {
		return []Option{WithConfig(cfg), WithURL("memory://start-twice"), WithLogger(testLogger(t)), WithSpoolDir(t.TempDir())}
	}
	builds := []func(t *testing.T) starter{
		func(t *testing.T) starter {
			m, err := NewManager(base(t)...)
			if err != nil {
				t.Fatal(err)
			}
			return starter{"Manager", m.Start, m.Stop}
		},
		func(t *testing.T) starter {
			p, err := NewSyncPublisher(base(t)...)
			if err != nil {
				t.Fatal(err)
			}
			return starter{"SyncPublisher", p.Start, p.Stop}
		},
		func(t *testing.T) starter {
			p, err := NewAsyncPublisher(base(t)...)
			if err != nil {
				t.Fatal(err)
			}
			return starter{"AsyncPublisher", p.Start, p.Stop}
		},
	}
	for _, build := range builds {
		s := build(t)
		t.Run(s.name, func(t *testing.T) {
			ctx := testCtx(t, 10*time.Second)
			if err := s.start(ctx); err != nil {
				t.Fatal(err)
			}
			err := s.start(ctx)
			if !errors.Is(err, ErrRunning) || errors.Is(err, ErrInvalidPublisher) {
				t.Fatalf("second Start = %v, want ErrRunning", err)
			}
			if want := "omqs: " + s.name + ": already running: "; !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("second Start = %q, want it to start with %q", err, want)
			}
			if err := s.stop(ctx); err != nil {
				t.Fatal(err)
			}
			err = s.start(ctx)
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("Start after Stop = %v, want ErrStopped", err)
			}
			if want := "omqs: " + s.name + ": stopped"; err.Error() != want {
				t.Fatalf("Start after Stop = %q, want %q", err, want)
			}
		})
	}
}
