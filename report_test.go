package omqs

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// TestReporter: an error is logged at ERROR and passed to the error handler
// with the URL's password hidden and its chain intact; passOn skips the log;
// the handler calls run in order.
func TestReporter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log lockedbuf.Buffer
		var mu sync.Mutex
		var got []error
		r := newReporter(slog.New(slog.NewTextHandler(&log, nil)), "test", func(err error) {
			mu.Lock()
			got = append(got, err)
			mu.Unlock()
		}, 8)
		r.report(fmt.Errorf("%w: dial amqp://guest:s3cret@rabbit:5672/", ErrConnection))
		r.passOn(errors.New("only for the handler"))
		r.close()

		if len(got) != 2 {
			t.Fatalf("the handler got %d errors, want 2: %v", len(got), got)
		}
		if !errors.Is(got[0], ErrConnection) || strings.Contains(got[0].Error(), "s3cret") {
			t.Errorf("handler got %q: want ErrConnection with the password hidden", got[0])
		}
		if got[1].Error() != "only for the handler" {
			t.Errorf("second error %q, want the one passed on", got[1])
		}
		out := log.String()
		if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "rabbit:5672") || strings.Contains(out, "s3cret") {
			t.Errorf("log %q: want the error at ERROR with the password hidden", out)
		}
		if strings.Contains(out, "only for the handler") {
			t.Errorf("log %q: passOn logged", out)
		}

		// After close nothing reaches the handler, and the log says so.
		r.report(errors.New("late"))
		if len(got) != 2 {
			t.Errorf("an error reported after close reached the handler")
		}
		if !strings.Contains(log.String(), "error not passed on") {
			t.Errorf("log %q: want a warning for the error dropped after close", log.String())
		}
	})
}

// TestReporterCloseGivesUpOnBlockedHandler: close waits handlerGrace for a
// handler that blocks, then drops the calls queued behind it and says so.
func TestReporterCloseGivesUpOnBlockedHandler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log lockedbuf.Buffer
		release := make(chan struct{})
		var calls int
		r := newReporter(slog.New(slog.NewTextHandler(&log, nil)), "test", func(error) {
			calls++
			<-release
		}, 8)
		r.passOn(errors.New("first"))
		r.passOn(errors.New("queued behind the first"))
		start := time.Now()
		r.close()
		if d := time.Since(start); d != handlerGrace {
			t.Errorf("close returned after %v, want handlerGrace (%v)", d, handlerGrace)
		}
		if !strings.Contains(log.String(), "did not return in time") {
			t.Errorf("log %q: want a warning about the blocked handler", log.String())
		}
		close(release)
		synctest.Wait()
		if calls != 1 {
			t.Errorf("the handler ran %d times, want 1 (the queued call dropped)", calls)
		}
	})
}

// TestReporterStartsNoGoroutineUntilUsed: the constructors build their
// reporter but start its goroutine only when something is passed on, so a
// value that is built and dropped leaves no goroutine behind.
func TestReporterStartsNoGoroutineUntilUsed(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	url := memoryURL(t)
	opts := []Option{WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)), WithErrorHandler(func(error) {})}
	if _, err := NewManager(opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := NewSyncPublisher(opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := NewAsyncPublisher(opts...); err != nil {
		t.Fatal(err)
	}
	if _, err := NewAsyncConsumer(opts...); err != nil {
		t.Fatal(err)
	}
}
