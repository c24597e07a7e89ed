package omqs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// slogBody decodes a record the SlogHandler shipped.
func slogBody(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var rec map[string]any
	if err := json.Unmarshal(body, &rec); err != nil {
		t.Fatalf("body is not one JSON object: %v\n%s", err, body)
	}
	return rec
}

// Records arrive on the log exchange under the key of their level, as JSON
// with the time, level, source, message, logger name, attributes and groups.
func TestSlogHandlerShipsRecords(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testSlogHandlerShipsRecords)
}

func testSlogHandlerShipsRecords(t *testing.T, url string) {
	cfg, _ := backendConfig(t, url)
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithName("shop"))
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	logger := slog.New(m.SlogHandler(&SlogOptions{Level: slog.LevelDebug - 4, AddSource: true}))
	ctx := context.Background()
	want := []struct{ msg, key, level string }{
		{"trace", KeyDebug, "DEBUG-4"},
		{"debug", KeyDebug, "DEBUG"},
		{"info", KeyInfo, "INFO"},
		{"notice", KeyInfo, "INFO+2"},
		{"warn", KeyWarning, "WARN"},
		{"error", KeyError, "ERROR"},
		{"severe", KeyError, "ERROR+2"},
		{"fatal", KeyFatal, "ERROR+4"},
		{"beyond", KeyFatal, "ERROR+8"},
	}
	levels := []slog.Level{slog.LevelDebug - 4, slog.LevelDebug, slog.LevelInfo, slog.LevelInfo + 2, slog.LevelWarn,
		slog.LevelError, slog.LevelError + 2, LevelFatal, LevelFatal + 4}
	for i, w := range want {
		logger.Log(ctx, levels[i], w.msg)
	}
	logger.With("app", "shop").WithGroup("req").With("id", 42).
		Info("paid", slog.Group("user", "name", "ann"), "total", 9.5)
	logs.waitCount(t, len(want)+1, 20*time.Second)

	got := logs.all()
	for i, w := range want {
		d := got[i]
		rec := slogBody(t, d.Body)
		if d.RoutingKey != w.key || rec["msg"] != w.msg || rec["level"] != w.level {
			t.Errorf("record %d: key %q msg %v level %v, want %q %q %q", i, d.RoutingKey, rec["msg"], rec["level"], w.key, w.msg, w.level)
		}
		if rec["logger"] != "shop" {
			t.Errorf("record %d: logger %v, want the Manager's name", i, rec["logger"])
		}
		if ts, _ := rec["time"].(string); ts == "" {
			t.Errorf("record %d has no time: %s", i, d.Body)
		} else if tm, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(tm) > time.Minute {
			t.Errorf("record %d: time %q: %v", i, ts, err)
		}
		src, _ := rec["source"].(map[string]any)
		file, _ := src["file"].(string)
		fn, _ := src["function"].(string)
		if !strings.HasSuffix(file, "slog_handler_test.go") || !strings.HasSuffix(fn, "testSlogHandlerShipsRecords") || src["line"] == nil {
			t.Errorf("record %d: source %v, want this test's file, function and line", i, rec["source"])
		}
	}
	last := got[len(want)]
	if last.RoutingKey != KeyInfo {
		t.Errorf("the record with groups came under %q", last.RoutingKey)
	}
	rec := slogBody(t, last.Body)
	attrs, _ := json.Marshal(map[string]any{"app": rec["app"], "req": rec["req"]})
	if string(attrs) != `{"app":"shop","req":{"id":42,"total":9.5,"user":{"name":"ann"}}}` {
		t.Errorf("attributes and groups: %s\nbody: %s", attrs, last.Body)
	}
	if st := m.Stats().Logs; st.Refused != 0 {
		t.Errorf("Refused = %d", st.Refused)
	}
}

// recordingWorker keeps the messages of its lane; it refuses (returns an
// error for) the bodies that hold fail, if set.
type recordingWorker struct {
	fail string
	mu   sync.Mutex
	got  []Message
}

func (w *recordingWorker) WorkerWillRun(context.Context) error  { return nil }
func (w *recordingWorker) WorkerWillStop(context.Context) error { return nil }

func (w *recordingWorker) MsgDidReceive(_ context.Context, msg Message) error {
	w.mu.Lock()
	w.got = append(w.got, msg)
	w.mu.Unlock()
	if w.fail != "" && strings.Contains(string(msg.Body), w.fail) {
		return errors.New("this worker refuses the message")
	}
	return nil
}

func (w *recordingWorker) bodies() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.got {
		out = append(out, string(m.Body))
	}
	return out
}

// slogManager starts a Manager on its own in-process broker whose log lane
// goes to a recordingWorker.
func slogManager(t *testing.T, opts ...Option) (*Manager, *recordingWorker) {
	t.Helper()
	url := memoryURL(t)
	cfg, _ := backendConfig(t, url)
	w := &recordingWorker{}
	m := startManager(t, append([]Option{WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithLogWorker(w)}, opts...)...)
	return m, w
}

// No password of a URL reaches the broker: not in the message, attributes,
// errors, other values, nor attributes given to With.
func TestSlogHandlerRedactsPasswords(t *testing.T) {
	t.Parallel()
	m, w := slogManager(t)
	type settings struct {
		Broker string
		Peers  []string
	}
	logger := slog.New(m.SlogHandler(nil))
	logger.Info("connecting to amqp://app:s3cret@rabbit:5672/",
		"url", "amqps://app:s3cret@rabbit/",
		"err", fmt.Errorf("dial amqp://app:s3cret@rabbit: %w", errors.New("refused")),
		"settings", settings{Broker: "amqp://app:s3cret@rabbit/", Peers: []string{"amqp://b:s3cret@peer/"}},
		"typed", RedactedURL("amqp://app:s3cret@rabbit/"))
	logger.With("dsn", "postgres://app:s3cret@db/shop").WithGroup("g").Info("plain", "u", "https://a:s3cret@b/", "n", 1)
	waitUntil(t, 10*time.Second, "two records", func() bool { return len(w.bodies()) == 2 })
	for _, b := range w.bodies() {
		if strings.Contains(b, "s3cret") || !strings.Contains(b, "xxxxx") {
			t.Errorf("a password reached the lane, or nothing was redacted:\n%s", b)
		}
		slogBody(t, []byte(b))
	}
	rec := slogBody(t, []byte(w.bodies()[0]))
	if s, _ := rec["settings"].(map[string]any); s == nil || s["Broker"] != "amqp://app:xxxxx@rabbit/" {
		t.Errorf("a struct holding a URL: %v", rec["settings"])
	}
	rec = slogBody(t, []byte(w.bodies()[1]))
	if g, _ := rec["g"].(map[string]any); g == nil || g["n"] != 1.0 || rec["dsn"] != "postgres://app:xxxxx@db/shop" {
		t.Errorf("record with a group: %v", rec)
	}
}

// Enabled follows the level (default INFO), also when a LevelVar changes.
func TestSlogHandlerLevel(t *testing.T) {
	t.Parallel()
	m, w := slogManager(t)
	ctx := context.Background()
	h := m.SlogHandler(nil)
	if h.Enabled(ctx, slog.LevelDebug) || !h.Enabled(ctx, slog.LevelInfo) || !h.Enabled(ctx, LevelFatal) {
		t.Error("the default level is not INFO")
	}
	var lv slog.LevelVar
	lv.Set(slog.LevelError)
	logger := slog.New(m.SlogHandler(&SlogOptions{Level: &lv})).WithGroup("g").With("a", 1)
	logger.Warn("dropped")
	logger.Error("kept")
	lv.Set(slog.LevelDebug)
	logger.Debug("kept too")
	waitUntil(t, 10*time.Second, "two records", func() bool { return len(w.bodies()) == 2 })
	if got := m.Stats().Logs.Accepted; got != 2 {
		t.Errorf("Accepted = %d, want 2: %q", got, w.bodies())
	}
}

// A full buffer does not block Handle, even with OverflowWait: the record is
// dropped, counted in Refused, and Handle says ErrBufferFull.
func TestSlogHandlerFullBuffer(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, _ := backendConfig(t, url)
	cfg.Global.BufferSize = 4
	w := &blockingWorker{release: make(chan struct{})}
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithLogWorker(w), WithOverflow(OverflowWait))
	var release sync.Once
	t.Cleanup(func() { release.Do(func() { close(w.release) }) }) // before Stop
	h := m.SlogHandler(nil)
	const n = 50
	errs := make(chan error, n)
	go func() {
		for i := range n {
			errs <- h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, fmt.Sprint("record ", i), 0))
		}
		close(errs)
	}()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	var refused uint64
	for done := false; !done; {
		select {
		case err, ok := <-errs:
			switch {
			case !ok:
				done = true
			case errors.Is(err, ErrBufferFull):
				refused++
			case err != nil:
				t.Fatalf("Handle: %v", err)
			}
		case <-timeout.C:
			t.Fatal("Handle blocked on a full buffer")
		}
	}
	// The worker holds one message and the buffer 4: the rest is refused.
	if refused < n-5 {
		t.Errorf("%d records refused, want at least %d", refused, n-5)
	}
	if got := m.Stats().Logs.Refused; got != refused {
		t.Errorf("Stats().Logs.Refused = %d, want %d", got, refused)
	}
	release.Do(func() { close(w.release) })
	waitUntil(t, 10*time.Second, "the accepted records", func() bool { return len(w.bodies()) == n-int(refused) })
}

// A record larger than BUFFER_BYTES could never fit: Handle says so.
func TestSlogHandlerRecordTooLarge(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, _ := backendConfig(t, url)
	cfg.Global.BufferBytes = 256
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithLogWorker(&recordingWorker{}))
	h := m.SlogHandler(nil)
	r := slog.NewRecord(time.Now(), slog.LevelInfo, strings.Repeat("x", 300), 0)
	if err := h.Handle(context.Background(), r); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Handle of a record larger than BUFFER_BYTES: %v, want ErrInvalidMessage", err)
	}
	if err := h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelInfo, "fits", 0)); err != nil {
		t.Errorf("Handle of a small record: %v", err)
	}
}

// Before Start and from Stop on, records go to the fallback; a nil
// Manager's handler passes everything to it.
func TestSlogHandlerNotRunningFallsBack(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, _ := backendConfig(t, url)
	w := &recordingWorker{}
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithLogWorker(w))
	if err != nil {
		t.Fatal(err)
	}
	var fb lockedbuf.Buffer
	logger := slog.New(m.SlogHandler(&SlogOptions{Fallback: slog.NewTextHandler(&fb, nil)})).With("a", 1)
	logger.Info("early", "url", "amqp://u:s3cret@h/")
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	logger.Info("running")
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	logger.Info("late")
	if got := w.bodies(); len(got) != 1 || !strings.Contains(got[0], `"msg":"running"`) {
		t.Errorf("the lane got %q, want the one record logged while running", got)
	}
	out := fb.String()
	if !strings.Contains(out, "msg=early a=1 url=amqp://u:xxxxx@h/") || !strings.Contains(out, "msg=late a=1") || strings.Contains(out, "running") {
		t.Errorf("fallback got:\n%s", out)
	}

	var nilLevel *slog.LevelVar
	if h := m.SlogHandler(&SlogOptions{Level: nilLevel, Fallback: (*slog.TextHandler)(nil)}); !h.Enabled(context.Background(), slog.LevelInfo) ||
		h.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("a nil *slog.LevelVar is not the default level")
	}

	var nilFB lockedbuf.Buffer
	var nilManager *Manager
	l2 := slog.New(nilManager.SlogHandler(&SlogOptions{Fallback: slog.NewTextHandler(&nilFB, nil)}))
	l2.WithGroup("g").Info("to nowhere", "k", "v")
	if !strings.Contains(nilFB.String(), "msg=\"to nowhere\" g.k=v") {
		t.Errorf("nil Manager: fallback got %q", nilFB.String())
	}
}

// With the journal, records go through it to the broker as without.
func TestSlogHandlerJournal(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, _, _ := journalConfig(t, url)
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	logger := slog.New(m.SlogHandler(nil))
	logger.Warn("journaled", "n", 1)
	logs.waitCount(t, 1, 10*time.Second)
	d := logs.all()[0]
	if rec := slogBody(t, d.Body); d.RoutingKey != KeyWarning || rec["msg"] != "journaled" {
		t.Errorf("got %s under %q", d.Body, d.RoutingKey)
	}
}

// The handler as the default logger, with OMQS logging through
// slog.Default(): OMQS's own records go to the fallback and never to the
// lane. The Manager's logger is slog's initial default (its records travel
// through the log package), the publisher's is the handler itself. The
// Manager's worker refuses records that hold "fail", which makes the
// Manager report a failure: were that report shipped, it would fail again,
// without end.
//
// Not parallel: it sets the default logger.
func TestSlogHandlerDefaultLoggerNoLoop(t *testing.T) {
	keepDefaultLogger(t)
	url := memoryURL(t)
	cfg, _ := backendConfig(t, url)
	w := &recordingWorker{fail: "fail"}
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(slog.Default()), WithLogWorker(w))
	var fb lockedbuf.Buffer
	slog.SetDefault(slog.New(m.SlogHandler(&SlogOptions{Fallback: slog.NewTextHandler(&fb, nil)})))

	slog.Info("app one")
	slog.Info("app fail two")
	log.Print("app three, through the log package")
	p, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(engineRefusedURL(t)), WithLogger(slog.Default()),
		WithName("billing"), WithReconnect(10*time.Millisecond, 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(testCtx(t, 20*time.Second)); err == nil {
		t.Fatal("Start succeeded against a refused port")
	}
	waitUntil(t, 10*time.Second, "the Manager's report and the publisher's connect failure in the fallback", func() bool {
		out := fb.String()
		return strings.Contains(out, "log worker failed on message") && strings.Contains(out, "connect failed")
	})
	if got := m.Stats().Logs.Accepted; got != 3 {
		t.Errorf("the lane took %d records, want the application's 3: %q", got, w.bodies())
	}
	waitUntil(t, 10*time.Second, "the application's records", func() bool { return len(w.bodies()) >= 3 })
	for _, b := range w.bodies() {
		if strings.Contains(b, "omqs:") || !strings.Contains(b, "app ") {
			t.Errorf("the lane got a record that is not the application's: %s", b)
		}
	}
	if strings.Contains(fb.String(), "app ") {
		t.Errorf("an application record went to the fallback:\n%s", fb.String())
	}
}

// A fallback that leads back to the handler neither recurses nor
// deadlocks: the record that comes back is dropped. Slog's initial default
// handler, which writes through the log package, is replaced.
//
// Not parallel: it sets the default logger.
func TestSlogHandlerFallbackCycle(t *testing.T) {
	keepDefaultLogger(t)
	initial := slog.Default().Handler()
	url := memoryURL(t)
	cfg, _ := backendConfig(t, url)
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	var seen atomic.Int32
	back := forwardHandler{seen: &seen}
	slog.SetDefault(slog.New(m.SlogHandler(&SlogOptions{Fallback: back})))
	done := make(chan struct{})
	go func() {
		defer close(done)
		slog.Info("not started: to the fallback, which sends it back")
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Handle did not return")
	}
	if seen.Load() != 1 {
		t.Errorf("the fallback saw the record %d times, want 1", seen.Load())
	}
	// The record that came back is dropped with an error that says so.
	rec := slog.NewRecord(time.Now(), slog.LevelInfo, "came back", 0)
	if err := m.SlogHandler(&SlogOptions{Fallback: back}).Handle(fallbackContext(context.Background()), rec); !errors.Is(err, errFallbackCycle) {
		t.Errorf("Handle of a record its fallback handed back: %v, want errFallbackCycle", err)
	}

	h := m.SlogHandler(&SlogOptions{Fallback: initial})
	if h.(*slogHandler).fallback == initial {
		t.Error("slog's initial default handler kept as the fallback")
	}
}

// forwardHandler counts records and passes them on to the default logger's
// handler.
type forwardHandler struct{ seen *atomic.Int32 }

func (f forwardHandler) Enabled(context.Context, slog.Level) bool { return true }
func (f forwardHandler) Handle(ctx context.Context, r slog.Record) error {
	f.seen.Add(1)
	return slog.Default().Handler().Handle(ctx, r)
}
func (f forwardHandler) WithAttrs([]slog.Attr) slog.Handler { return f }
func (f forwardHandler) WithGroup(string) slog.Handler      { return f }

// countingHandler counts the records it handles.
type countingHandler struct{ n *atomic.Int64 }

func (c countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (c countingHandler) Handle(context.Context, slog.Record) error {
	c.n.Add(1)
	return nil
}
func (c countingHandler) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c countingHandler) WithGroup(string) slog.Handler      { return c }

// Many goroutines log through handlers derived from one, while the Manager
// runs and while it stops: every record reaches the lane, whole, or the
// fallback.
func TestSlogHandlerConcurrent(t *testing.T) {
	t.Parallel()
	m, w := slogManager(t)
	var fellBack atomic.Int64
	base := slog.New(m.SlogHandler(&SlogOptions{Fallback: countingHandler{&fellBack}}))
	const goroutines, each = 8, 200
	var wg sync.WaitGroup
	var stopped atomic.Bool
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logger := base.With("g", g).WithGroup("w")
			for i := range each {
				logger.Info("n", "i", i)
				if g == 0 && i == each/2 && stopped.CompareAndSwap(false, true) {
					if err := m.Stop(testCtx(t, 20*time.Second)); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	st := m.Stats().Logs
	if st.Refused != 0 {
		t.Errorf("Refused = %d", st.Refused)
	}
	if got := st.Accepted + uint64(fellBack.Load()); got != goroutines*each {
		t.Errorf("lane %d + fallback %d = %d records, want %d", st.Accepted, fellBack.Load(), got, goroutines*each)
	}
	if fellBack.Load() == 0 {
		t.Error("no record logged after Stop went to the fallback")
	}
	next := map[float64]float64{}
	for _, b := range w.bodies() {
		var rec struct {
			G float64
			W struct{ I float64 }
		}
		if err := json.Unmarshal([]byte(b), &rec); err != nil {
			t.Fatalf("%v: %s", err, b)
		}
		if rec.W.I != next[rec.G] {
			t.Fatalf("goroutine %v: record %v after %v", rec.G, rec.W.I, next[rec.G]-1)
		}
		next[rec.G]++
	}
}

func TestSlogLevelParsing(t *testing.T) {
	for _, l := range []slog.Level{slog.LevelDebug - 8, slog.LevelDebug, slog.LevelDebug + 1, slog.LevelInfo, slog.LevelInfo + 3,
		slog.LevelWarn, slog.LevelWarn + 2, slog.LevelError, slog.LevelError - 1, LevelFatal, LevelFatal + 100} {
		line := fmt.Appendf(nil, `{"time":"2026-12-02T10:00:00.000+01:00","level":%q,"msg":"x","a":{"level":"ERROR"}}`, l.String())
		if got := lineLevel(line); got != l {
			t.Errorf("%s: read %s", l, got)
		}
	}
	for _, line := range []string{``, `{"msg":"x"}`, `{"level":"LOUD"}`, `{"level":"INFO+x"}`, `{"level":"INFO`} {
		if got := lineLevel([]byte(line)); got != slog.LevelInfo {
			t.Errorf("%s: read %s, want INFO", line, got)
		}
	}
	for l, key := range map[slog.Level]string{slog.LevelDebug - 1: KeyDebug, slog.LevelInfo - 1: KeyDebug, slog.LevelInfo: KeyInfo,
		slog.LevelWarn - 1: KeyInfo, slog.LevelWarn: KeyWarning, slog.LevelError: KeyError, LevelFatal - 1: KeyError, LevelFatal: KeyFatal} {
		if got := slogKey(l); got != key {
			t.Errorf("slogKey(%s) = %q, want %q", l, got, key)
		}
	}
}

// gateWorker takes a message only when it is given a token: until then the
// Manager's log lane holds them.
type gateWorker struct{ gate chan struct{} }

func (w gateWorker) WorkerWillRun(context.Context) error  { return nil }
func (w gateWorker) WorkerWillStop(context.Context) error { return nil }

func (w gateWorker) MsgDidReceive(ctx context.Context, _ Message) error {
	select {
	case <-w.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// heldSlogManager starts a Manager on its own in-process broker whose log
// lane has room for n records and whose worker takes them only when let
// (let(k) lets it take k): what runs meanwhile is the caller's call alone.
// The worker takes the rest when the test ends.
func heldSlogManager(tb testing.TB, n int) (m *Manager, let func(k int)) {
	tb.Helper()
	url := memoryURL(tb)
	cfg, _ := backendConfig(tb, url)
	cfg.Global.BufferSize = min(n+16, cfgMaxBufferSize)
	cfg.Global.BufferBytes = max(DefaultBufferBytes, 512*n)
	w := gateWorker{gate: make(chan struct{})}
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(slog.New(slog.DiscardHandler)), WithLogWorker(w))
	if err != nil {
		tb.Fatal(err)
	}
	if err := m.Start(testCtx(tb, 30*time.Second)); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		close(w.gate)
		if err := m.Stop(context.Background()); err != nil {
			tb.Error(err)
		}
	})
	return m, func(k int) {
		for range k {
			w.gate <- struct{}{}
		}
	}
}

// A record costs the caller one allocation: the string the lane keeps.
func TestSlogHandlerAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("under -race, sync.Pool drops buffers: allocations are not counted")
	}
	const runs = 1000
	m, _ := heldSlogManager(t, runs+1)
	logger := slog.New(m.SlogHandler(nil)).With("request", 7)
	if n := testing.AllocsPerRun(runs, func() {
		logger.Info("user signed in", "user", 42, "method", "password", "elapsed", 3*time.Millisecond)
	}); n > 1 {
		t.Errorf("%v allocations per record, want 1", n)
	}
	if st := m.Stats().Logs; st.Refused != 0 || st.Accepted != runs+1 {
		t.Errorf("Accepted %d, Refused %d: want %d, 0", st.Accepted, st.Refused, runs+1)
	}
}

// BenchmarkSlogHandler compares logger.Info with three attributes through
// the SlogHandler (formatting, and handing to the lane) with slog's
// JSONHandler writing to io.Discard. The Manager's log worker takes the
// records while the timer is stopped, every slogBenchChunk records, so
// that the call alone is measured, with the memory of the records
// delivered reused as it is in a running program.
func BenchmarkSlogHandler(b *testing.B) {
	log3 := func(b *testing.B, logger *slog.Logger, between func()) {
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i > 0 && i%slogBenchChunk == 0 && between != nil {
				b.StopTimer()
				between()
				b.StartTimer()
			}
			logger.Info("user signed in", "user", 42, "method", "password", "elapsed", 3*time.Millisecond)
		}
		b.StopTimer()
	}
	b.Run("JSONHandler-discard", func(b *testing.B) {
		log3(b, slog.New(slog.NewJSONHandler(io.Discard, nil)), nil)
	})
	b.Run("omqs", func(b *testing.B) {
		m, let := heldSlogManager(b, slogBenchChunk)
		log3(b, slog.New(m.SlogHandler(nil)), func() { let(slogBenchChunk) })
		if st := m.Stats().Logs; st.Refused != 0 {
			b.Errorf("%d records refused: the buffer is too small to measure the call alone", st.Refused)
		}
	})
}

// slogBenchChunk is how many records BenchmarkSlogHandler logs between two
// pauses in which the worker takes them.
const slogBenchChunk = 4096
