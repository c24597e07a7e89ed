package omqs

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

// engineRefusedURL returns the URL of a local port nothing listens on: every
// dial is refused at once.
func engineRefusedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "amqp://guest:guest@" + addr + "/"
}

// engineConfigFor is an engineConfig for url with the given reconnect
// settings, logging to the test.
func engineConfigFor(t *testing.T, url string, times int, wait func(context.Context, time.Duration) error) engineConfig {
	t.Helper()
	eps, err := transport.ParseURLs(url)
	if err != nil {
		t.Fatal(err)
	}
	return engineConfig{
		kind: "AsyncPublisher", name: "engine-test", appID: "engine-test",
		endpoints: eps, interval: 20 * time.Millisecond, times: times, window: 64,
		logger: testLogger(t), wait: wait,
	}
}

// engineStop stops e within 10 seconds and returns Stop's error.
func engineStop(t *testing.T, e *engine) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.stop(ctx)
}

// engineRecv receives from c or fails the test after 10 seconds.
func engineRecv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// A Publish taken while Start connects is held for the connection; when
// Start then fails, the message is spooled (not left in flight for ever,
// which made Stop wait for it).
func TestEngineFailedStartSpoolsHeldPublishes(t *testing.T) {
	t.Parallel()
	waiting := make(chan struct{}, 1)
	release := make(chan struct{})
	c := engineConfigFor(t, engineRefusedURL(t), 2, func(ctx context.Context, _ time.Duration) error {
		waiting <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	sp := spool.New(filepath.Join(t.TempDir(), "engine.spool"))
	c.spool = sp
	e := newEngine(c)
	started := make(chan error, 1)
	go func() { started <- e.start(context.Background(), false) }()
	engineRecv(t, waiting, "Start's first failed attempt")

	m, err := e.newMsg("k", []byte("held while connecting"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.publish(context.Background(), m); err != nil {
		t.Fatalf("publish while connecting: %v", err)
	}
	close(release)
	if err := engineRecv(t, started, "Start"); !errors.Is(err, ErrConnection) {
		t.Fatalf("Start: %v, want ErrConnection", err)
	}
	if n := e.pending(); n != 0 {
		t.Fatalf("%d message(s) still pending after the failed Start, want 0", n)
	}
	if st := e.st.snapshot(); st.Accepted != 1 || st.Spooled != 1 {
		t.Fatalf("stats %+v: want the held message spooled", st)
	}
	if err := engineStop(t, e); err != nil {
		t.Fatalf("Stop after the failed Start: %v", err)
	}
	if n, err := sp.Count(); err != nil || n != 1 {
		t.Fatalf("spool holds %d record(s) (%v), want 1", n, err)
	}
}

// With RECONNECT_TIMES=1 the Dialer gives up after each attempt without
// waiting: the reconnect loop waits an interval before the next attempt.
func TestEngineGiveUpWaitsBeforeNextAttempt(t *testing.T) {
	t.Parallel()
	l, logs := consumerLogger(t)
	paused := make(chan struct{}, 1)
	c := engineConfigFor(t, engineRefusedURL(t), 1, func(ctx context.Context, _ time.Duration) error {
		select {
		case paused <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return ctx.Err()
	})
	c.logger = l
	e := newEngine(c)
	if err := e.start(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	attempts := func() int { return strings.Count(logs.String(), "connect failed") }
	waitUntil(t, 10*time.Second, "a pause or many attempts", func() bool { return len(paused) > 0 || attempts() >= 50 })
	if len(paused) == 0 {
		t.Fatalf("%d attempts without a pause between them", attempts())
	}
	if n := attempts(); n != 1 {
		t.Fatalf("%d attempts before the pause, want 1", n)
	}
	if err := engineStop(t, e); err != nil {
		t.Fatal(err)
	}
}

// A spool file whose replayed messages are still unconfirmed when the
// connection drops is not replayed again by the reconnect: its messages are
// resent, once.
func TestEngineReplayFileNotRepublishedWhileInFlight(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	c := engineConfigFor(t, url, 3, nil)
	c.topo = topology{exchange: n.Exchange, kind: "direct", queue: n.Queue, queueType: "classic", keys: []string{n.Key}}
	sp := spool.New(filepath.Join(t.TempDir(), "engine.spool"))
	c.spool = sp
	const N = 5
	var recs []spool.Record
	for i := range N {
		recs = append(recs, spool.NewRecord(n.Exchange, n.Key, "id-"+string(rune('a'+i)), time.Now(), []byte("spooled"), nil))
	}
	if err := sp.Append(recs...); err != nil {
		t.Fatal(err)
	}
	e := newEngine(c)
	t.Cleanup(func() { _ = engineStop(t, e) })
	ctx := testCtx(t, 20*time.Second)
	e.mu.Lock()
	e.state = stateDown
	e.mu.Unlock()
	outstanding := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.outstanding)
	}
	replayDone := func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return !e.replaying
	}

	// Nothing reads the first session's confirms: the replayed messages
	// stay outstanding.
	s1, err := e.connect(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	e.install(s1)
	waitUntil(t, 10*time.Second, "the replay", func() bool { return replayDone() && outstanding() == N })

	// The connection drops; the next one resends them and looks for spool
	// files to replay.
	e.teardown(s1)
	s2, err := e.connect(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	e.install(s2)
	waitUntil(t, 10*time.Second, "the second replay", replayDone)
	if got := outstanding(); got != N {
		t.Fatalf("%d messages outstanding after the reconnect, want the %d resent", got, N)
	}

	served := make(chan error, 1)
	go func() { served <- e.serve(s2) }()
	waitUntil(t, 10*time.Second, "the confirms", func() bool { return e.st.snapshot().Replayed == N })
	if st := e.st.snapshot(); st.Republished != N {
		t.Fatalf("stats %+v: want %d republished", st, N)
	}
	// The last confirm removes the file, then its in-flight mark.
	waitUntil(t, 10*time.Second, "the replayed file to go", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return len(e.replayFiles) == 0
	})
	if files, err := filepath.Glob(sp.Path() + ".replay.*"); err != nil || len(files) != 0 {
		t.Fatalf("replay files %v (%v), want the replayed file removed", files, err)
	}
	if err := engineStop(t, e); err != nil {
		t.Fatal(err)
	}
	if err := engineRecv(t, served, "serve to end"); err != nil {
		t.Fatal(err)
	}
}

// Lines of a spool file that cannot be read are counted as dropped and
// reported, not only logged.
func TestEngineReplayReportsUnreadableLines(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	dir := t.TempDir()
	var mu sync.Mutex
	var reported []error
	p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
		WithExchange(n.Exchange, "direct", false), WithQueue(n.Queue), WithQueueDurable(false), WithKeys(n.Key),
		WithSpoolDir(dir), WithErrorHandler(func(err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	sp := spool.New(filepath.Join(dir, n.Exchange+".spool"))
	if err := sp.Append(spool.NewRecord(n.Exchange, n.Key, "good", time.Now(), []byte("good"), nil)); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(sp.Path(), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("not a record\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()

	ctx := testCtx(t, 20*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the replay", func() bool { st := p.Stats(); return st.Replayed == 1 && st.SetAside == 1 })
	waitUntil(t, 10*time.Second, "the report", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(reported) == 1 && strings.Contains(reported[0].Error(), "1 line(s) could not be replayed (1 unreadable)") &&
			strings.Contains(reported[0].Error(), sp.AsidePath())
	})
	if st := p.Stats(); st.Dropped != 0 {
		t.Errorf("%d message(s) dropped: a line set aside is not lost", st.Dropped)
	}
	if b, err := os.ReadFile(sp.AsidePath()); err != nil || string(b) != "not a record\n" {
		t.Errorf("set aside %q, %v", b, err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// A message the broker nacks and the publisher spools is reported with
// both ErrSpooled and ErrNacked.
func TestEngineSpooledNackKeepsErrNacked(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	declareNackingQueue(t, url, n)
	ctx := testCtx(t, 20*time.Second)
	p := startedPublisher(t, ctx, NewSyncPublisher, WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
		WithExchange(n.Exchange, "direct", false), WithQueue(""), WithKeys(n.Key),
		WithSpoolDir(t.TempDir()), WithReconnect(time.Minute, 3))
	if err := p.Publish(ctx, "", []byte("first")); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := p.Publish(ctx, "", []byte("second")); !errors.Is(err, ErrSpooled) || !errors.Is(err, ErrNacked) {
		t.Fatalf("second publish: %v, want ErrSpooled and ErrNacked", err)
	}
	// The replay that start began may take the spooled message before Stop
	// refuses to publish it: then Stop says it stays in the replay file.
	if err := p.Stop(ctx); err != nil && !(errors.Is(err, ErrSpooled) && strings.Contains(err.Error(), "1 message(s) read back")) {
		t.Fatal(err)
	}
}

// When Stop spools what is unconfirmed and closing the spool then fails,
// Stop's error carries both.
func TestEngineStopReportsSpoolCloseError(t *testing.T) {
	t.Parallel()
	// fsync of /dev/null fails (EINVAL). The spool does not follow a
	// symbolic link, and never renames a file that is not regular.
	link := os.DevNull
	if _, err := os.Stat(link); err != nil {
		t.Skip(err)
	}
	c := engineConfigFor(t, engineRefusedURL(t), 0, func(ctx context.Context, _ time.Duration) error {
		<-ctx.Done()
		return ctx.Err()
	})
	c.spool = spool.New(link)
	e := newEngine(c)
	if err := e.start(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	m, err := e.newMsg("k", []byte("never confirmed"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.publish(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = e.stop(ctx)
	if !errors.Is(err, ErrNotConfirmed) || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Stop: %v, want ErrNotConfirmed and the failed fsync", err)
	}
}

// A message's spool record keeps its content type.
func TestOutMsgRecordKeepsContentType(t *testing.T) {
	m := &outMsg{exchange: "x", key: "k", id: "i", body: []byte("b"), ct: "text/x", headers: map[string]any{"h": "v"}}
	if r := m.record(); r.ContentType != "text/x" || r.Headers["h"] != "v" || r.MessageID != "i" {
		t.Fatalf("record %+v", r)
	}
}
