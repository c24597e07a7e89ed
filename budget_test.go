package omqs

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/spool"
)

// TestBufferBytesDefaultBoundsBodies is the case at a small scale:
// with the broker away (here a worker that holds its first message), large
// bodies fill the default byte budget long before BUFFER_SIZE messages.
func TestBufferBytesDefaultBoundsBodies(t *testing.T) {
	ew := &blockingWorker{release: make(chan struct{})}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://budget-default"), WithLogger(testLogger(t)),
		WithLogWorker(&blockingWorker{release: closedChan()}), WithEventWorker(ew), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("x", 1<<20)
	accepted := 0
	for i := 0; i < 100; i++ {
		err := m.SendEvent(body, "k")
		if errors.Is(err, ErrBufferFull) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		accepted++
	}
	if want := DefaultBufferBytes / len(body); accepted != want {
		t.Fatalf("%d bodies of 1 MiB accepted, want %d (BUFFER_BYTES %d)", accepted, want, DefaultBufferBytes)
	}
	close(ew.release)
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(ew.got) != accepted {
		t.Fatalf("worker got %d messages, want %d", len(ew.got), accepted)
	}
}

// TestBufferBytesCustomWorker checks the byte budget of a lane: a message
// counts from Send* until its worker is done with it, Send* past the budget
// fails (or waits), a body larger than the budget is invalid, and room comes
// back when the worker finishes.
func TestBufferBytesCustomWorker(t *testing.T) {
	ew := &blockingWorker{release: make(chan struct{})}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://budget-custom"), WithLogger(testLogger(t)),
		WithLogWorker(&blockingWorker{release: closedChan()}), WithEventWorker(ew),
		WithBufferBytes(1000), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	b400, b200 := strings.Repeat("a", 400), strings.Repeat("b", 200)
	l := m.lanes[eventLane]
	if err := m.SendEvent(b400, "k"); err != nil {
		t.Fatal(err)
	}
	// In the worker's hands, the message still counts.
	waitUntil(t, 5*time.Second, "the worker to take a message", func() bool { return l.busy.Load() && l.size() == 0 })
	if err := m.SendEvent(b400, "k"); err != nil {
		t.Fatal(err)
	}
	if err := m.SendEvent(b400, "k"); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("1200 bytes in a 1000-byte lane: %v, want ErrBufferFull", err)
	}
	if err := m.SendEvent(b200, "k"); err != nil {
		t.Fatalf("exactly 1000 bytes: %v", err)
	}
	if err := m.SendEvent("x", "k"); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("1001 bytes: %v, want ErrBufferFull", err)
	}
	// An empty body takes no bytes; only BUFFER_SIZE bounds those.
	if err := m.SendEvent("", "k"); err != nil {
		t.Fatalf("empty body: %v", err)
	}
	if err := m.SendEvent(strings.Repeat("c", 1001), "k"); !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "BUFFER_BYTES") {
		t.Fatalf("a body over the whole budget: %v, want ErrInvalidMessage naming BUFFER_BYTES", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.SendEventContext(ctx, b200, "k"); !errors.Is(err, ErrBufferFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendEventContext past the budget: %v", err)
	}
	if got := l.bytes.Load(); got != 1000 {
		t.Fatalf("lane counts %d bytes, want 1000", got)
	}
	// A sender waiting for bytes gets in once the worker is done.
	waited := make(chan error, 1)
	go func() { waited <- m.SendEventContext(testCtx(t, 10*time.Second), b400, "k") }()
	waitUntil(t, 5*time.Second, "a sender waiting for room", func() bool { return l.waiters.Load() == 1 })
	close(ew.release)
	if err := <-waited; err != nil {
		t.Fatalf("SendEventContext once room came back: %v", err)
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(ew.got) != 5 {
		t.Fatalf("worker got %d messages, want 5", len(ew.got))
	}
	if got := l.bytes.Load(); got != 0 {
		t.Fatalf("lane counts %d bytes after Stop, want 0", got)
	}
}

// TestBufferBytesBuiltinWorkerBrokerAway checks that the bytes a built-in
// worker holds while the broker is away count against the lane until they
// are spooled, and come back once they are.
func TestBufferBytesBuiltinWorkerBrokerAway(t *testing.T) {
	body := strings.Repeat("e", 1024)
	start := func(t *testing.T, times int) (*Manager, string) {
		dir := t.TempDir()
		cfg := DefaultConfig()
		cfg.Global.MQURL = engineRefusedURL(t)
		m, err := NewManager(WithConfig(cfg), WithLogger(testLogger(t)), WithRetryOnFailedConnect(true),
			WithReconnect(20*time.Millisecond, times), WithBufferBytes(4096), WithSpoolDir(dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		return m, dir
	}

	t.Run("held", func(t *testing.T) {
		m, dir := start(t, 0) // retries for ever: the worker holds what it takes
		for i := 0; i < 4; i++ {
			if err := m.SendEvent(body, "k"); err != nil {
				t.Fatal(i, err)
			}
		}
		waitUntil(t, 5*time.Second, "the worker to hold every message", func() bool { return m.lanes[eventLane].size() == 0 })
		if err := m.SendEvent(body, "k"); !errors.Is(err, ErrBufferFull) {
			t.Fatalf("a fifth KiB in a 4 KiB lane: %v, want ErrBufferFull", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		// With no connection up, Stop spools what the worker holds at once.
		if err := m.Stop(ctx); !errors.Is(err, ErrSpooled) && !errors.Is(err, ErrNotConfirmed) {
			t.Fatalf("Stop: %v, want ErrSpooled (or ErrNotConfirmed)", err)
		}
		if n := len(spoolRecords(t, dir, "backup.evt")); n != 4 {
			t.Fatalf("%d records spooled, want 4", n)
		}
		if got := m.lanes[eventLane].bytes.Load(); got != 0 {
			t.Fatalf("lane counts %d bytes after spooling, want 0", got)
		}
	})

	t.Run("spooled", func(t *testing.T) {
		m, _ := start(t, 2) // gives up and spools after two attempts
		refused := false
		for i := 0; i < 8; i++ {
			if err := m.SendEvent(body, "k"); errors.Is(err, ErrBufferFull) {
				refused = true
			} else if err != nil {
				t.Fatal(err)
			}
		}
		// Once the worker gives up, what it spools makes room again.
		waitUntil(t, 10*time.Second, "room once the worker spools", func() bool {
			return m.SendEvent(body, "k") == nil && m.lanes[eventLane].bytes.Load() < 4096
		})
		t.Logf("refused while held: %v", refused)
		if err := m.Stop(testCtx(t, 10*time.Second)); err != nil && !errors.Is(err, ErrSpooled) {
			t.Fatal(err)
		}
		if got := m.lanes[eventLane].bytes.Load(); got != 0 {
			t.Fatalf("lane counts %d bytes after Stop, want 0", got)
		}
	})
}

// TestMaxInFlightBytes checks that a publisher holds at most
// MAX_IN_FLIGHT_BYTES of unconfirmed bodies (one larger body alone), and
// that a publish waiting for bytes goes on once the held ones are resolved.
func TestMaxInFlightBytes(t *testing.T) {
	kib := make([]byte, 1024)
	newHeld := func(t *testing.T, times int, gate <-chan struct{}, sp *spool.Spool) *engine {
		cfg := engineConfigFor(t, engineRefusedURL(t), times, func(ctx context.Context, d time.Duration) error {
			select {
			case <-gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		cfg.window, cfg.maxBytes, cfg.spool = 100, 3000, sp
		e := newEngine(cfg)
		if err := e.start(testCtx(t, 10*time.Second), true); err != nil {
			t.Fatal(err)
		}
		return e
	}
	publish := func(e *engine, body []byte, d time.Duration) error {
		m, err := e.newMsg("k", body)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return e.publish(ctx, m)
	}
	stopNow := func(t *testing.T, e *engine) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := e.stop(ctx); err != nil && !errors.Is(err, ErrNotConfirmed) {
			t.Fatal(err)
		}
	}

	t.Run("bound", func(t *testing.T) {
		e := newHeld(t, 0, nil, nil) // never gives up: holds what it takes
		defer stopNow(t, e)
		for i := 0; i < 2; i++ {
			if err := publish(e, kib, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if err := publish(e, kib, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a third KiB past 3000 bytes: %v, want to wait until the context ends", err)
		}
		if n := e.pending(); n != 2 {
			t.Fatalf("%d messages held, want 2", n)
		}
	})

	t.Run("large body alone", func(t *testing.T) {
		e := newHeld(t, 0, nil, nil)
		defer stopNow(t, e)
		if err := publish(e, make([]byte, 5000), 5*time.Second); err != nil {
			t.Fatalf("a body over the bound into an empty window: %v", err)
		}
		if err := publish(e, []byte("x"), 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a byte beside it: %v, want to wait", err)
		}
	})

	t.Run("room comes back", func(t *testing.T) {
		gate := make(chan struct{})
		sp := spool.New(filepath.Join(t.TempDir(), "x.spool"))
		e := newHeld(t, 2, gate, sp)
		for i := 0; i < 2; i++ {
			if err := publish(e, kib, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		var done atomic.Bool
		third := make(chan error, 1)
		go func() { third <- publish(e, kib, 10*time.Second); done.Store(true) }()
		waitUntil(t, 5*time.Second, "the third publish to wait for bytes", func() bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.byteWait
		})
		if done.Load() {
			t.Fatal("the third publish did not wait")
		}
		close(gate) // the next attempt fails for good: the held messages are spooled
		if err := engineRecv(t, third, "the third publish"); err != nil {
			t.Fatalf("the third publish once the others were spooled: %v", err)
		}
		if err := engineStop(t, e); err != nil {
			t.Fatal(err)
		}
		if n := e.st.spooled.Load(); n != 3 {
			t.Fatalf("%d spooled, want 3", n)
		}
	})
}
