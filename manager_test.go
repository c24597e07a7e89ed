package omqs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/membroker"
	"github.com/omqs-go/omqs/internal/spool"
)

func TestManagerSendRoundTrip(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerSendRoundTrip)
}

func testManagerSendRoundTrip(t *testing.T, url string) {
	cfg, n := backendConfig(t, url)
	m := startManager(t, WithConfig(cfg), WithURL(url), WithName("roundtrip"))
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	events := collect(t, url, cfg.EventWorker.Exchange, "#")

	before := time.Now().Add(-time.Second)
	sends := []struct {
		send     func() error
		exchange string
		key      string
		body     string
	}{
		{func() error { return m.SendFatal("f1") }, cfg.LogWorker.Exchange, "fatal", "f1"},
		{func() error { return m.SendError("e1") }, cfg.LogWorker.Exchange, "error", "e1"},
		{func() error { return m.SendWarning("w1") }, cfg.LogWorker.Exchange, "warning", "w1"},
		{func() error { return m.SendInfo("i1") }, cfg.LogWorker.Exchange, "info", "i1"},
		{func() error { return m.SendDebug("d1") }, cfg.LogWorker.Exchange, "debug", "d1"},
		{func() error { return m.SendLog("l1", "") }, cfg.LogWorker.Exchange, "info", "l1"},
		{func() error { return m.SendLog("l2", "audit.login") }, cfg.LogWorker.Exchange, "audit.login", "l2"},
		{func() error { return m.SendEvent("ev1", "") }, cfg.EventWorker.Exchange, n.Key, "ev1"},
		{func() error { return m.SendEvent("ev2 ünïcode", "email_notification") }, cfg.EventWorker.Exchange, "email_notification", "ev2 ünïcode"},
	}
	for i, s := range sends {
		if err := s.send(); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	logs.waitCount(t, 7, 10*time.Second)
	events.waitCount(t, 2, 10*time.Second)
	got := map[string]amqp.Delivery{}
	for _, d := range append(logs.all(), events.all()...) {
		got[string(d.Body)] = d
	}
	ids := map[string]bool{}
	for _, s := range sends {
		d, ok := got[s.body]
		if !ok {
			t.Errorf("%q not received", s.body)
			continue
		}
		if d.Exchange != s.exchange || d.RoutingKey != s.key {
			t.Errorf("%q: exchange %q key %q, want %q %q", s.body, d.Exchange, d.RoutingKey, s.exchange, s.key)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("%q: delivery mode %d, want persistent", s.body, d.DeliveryMode)
		}
		if d.ContentType != "" {
			t.Errorf("%q: content type %q, want none (none was given)", s.body, d.ContentType)
		}
		if d.MessageId == "" || ids[d.MessageId] {
			t.Errorf("%q: message id %q empty or repeated", s.body, d.MessageId)
		}
		ids[d.MessageId] = true
		if d.Timestamp.Before(before) || d.Timestamp.After(time.Now().Add(time.Second)) {
			t.Errorf("%q: timestamp %v out of range", s.body, d.Timestamp)
		}
		if d.AppId != "" {
			t.Errorf("%q: app id %q, want none (no WithAppID)", s.body, d.AppId)
		}
	}
	// Events are mandatory and went to the declared durable queue too.
	wantDepth(t, url, n.Queue, 1)
	if st := m.Stats(); st.Returned != 0 || st.Nacked != 0 {
		t.Errorf("stats %+v: nothing should be returned or nacked", st.LaneStats)
	}
}

func TestManagerStopDeliversEverything(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerStopDeliversEverything)
}

func testManagerStopDeliversEverything(t *testing.T, url string) {
	cfg, n := backendConfig(t, url)
	m, err := NewManager(WithConfig(cfg), WithURL(url))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 60*time.Second)
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const N = 10000
	for i := 0; i < N; i++ {
		if err := m.SendEvent(fmt.Sprintf("event %d", i), ""); err != nil {
			t.Fatal(i, err)
		}
	}
	// No pause: Stop must drain and wait for the confirms itself.
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st := m.Stats()
	if st.Events.Accepted != N || st.Events.Confirmed != N {
		t.Fatalf("stats %+v, want %d accepted and confirmed", st.Events, N)
	}
	if l, e := m.Pending(); l != 0 || e != 0 {
		t.Fatalf("pending after Stop = %d, %d", l, e)
	}
	wantDepth(t, url, n.Queue, N)
	if err := m.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := m.SendEvent("late", ""); !errors.Is(err, ErrStopped) {
		t.Fatalf("send after Stop: %v, want ErrStopped", err)
	}
}

func TestManagerSendErrors(t *testing.T) {
	lw := &blockingWorker{release: make(chan struct{})}
	ew := &blockingWorker{release: make(chan struct{})}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://send-errors"), WithLogWorker(lw), WithEventWorker(ew),
		WithBufferSize(4), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SendInfo("x"); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("before Start: %v, want ErrNotStarted", err)
	}
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// One message in the worker's hands, four in the buffer, then full.
	if err := m.SendEvent("e", "k"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the worker to take a message", func() bool {
		return m.lanes[eventLane].busy.Load() && m.lanes[eventLane].size() == 0
	})
	for i := 0; i < 4; i++ {
		if err := m.SendEvent("e", "k"); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := m.SendEvent("e", "k"); !errors.Is(err, ErrBufferFull) {
		t.Fatalf("got %v, want ErrBufferFull", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := m.SendEventContext(ctx, "e", "k"); !errors.Is(err, ErrBufferFull) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SendEventContext on a full buffer: %v", err)
	}
	// Both refusals are counted, in the event lane only.
	if st := m.Stats(); st.Events.Refused != 2 || st.Logs.Refused != 0 || st.Refused != 2 {
		t.Errorf("refused: events %d, logs %d, total %d; want 2, 0, 2", st.Events.Refused, st.Logs.Refused, st.Refused)
	}
	// The log lane is independent of the full event lane.
	if err := m.SendInfo("still fine"); err != nil {
		t.Fatal(err)
	}
	// Invalid messages are refused; others go on.
	long := strings.Repeat("k", MaxKeyLen+1)
	for _, err := range []error{
		m.SendLog("x", long),
		m.SendLog("x", "bad\xffkey"),
		m.SendInfo("bad \xff text"),
	} {
		if !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("got %v, want ErrInvalidMessage", err)
		}
	}
	waitUntil(t, 5*time.Second, "Pending() = 1, 5", func() bool { l, e := m.Pending(); return l == 1 && e == 5 })
	close(lw.release)
	close(ew.release)
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(ew.got) != 5 || len(lw.got) != 1 {
		t.Fatalf("workers got %d events and %d logs, want 5 and 1", len(ew.got), len(lw.got))
	}
	for _, w := range []*blockingWorker{lw, ew} {
		if strings.Join(w.calls, ",") != "run,stop" {
			t.Errorf("hooks %v, want run,stop", w.calls)
		}
	}
	if err := m.SendInfo("x"); !errors.Is(err, ErrStopped) {
		t.Fatalf("after Stop: %v, want ErrStopped", err)
	}
}

func TestManagerOverflowWait(t *testing.T) {
	ew := &blockingWorker{release: make(chan struct{})}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://overflow-wait"), WithLogWorker(&blockingWorker{release: closedChan()}),
		WithEventWorker(ew), WithBufferSize(1), WithOverflow(OverflowWait), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() { errs <- m.SendEvent("e", "k") }()
	}
	// The worker holds one, the buffer one; the third waits for room.
	waitUntil(t, 5*time.Second, "a full buffer", func() bool { _, e := m.Pending(); return e == 2 })
	close(ew.release)
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if len(ew.got) != 3 {
		t.Fatalf("worker got %d, want 3", len(ew.got))
	}
}

type failingRunWorker struct{ blockingWorker }

func (w *failingRunWorker) WorkerWillRun(ctx context.Context) error {
	w.blockingWorker.WorkerWillRun(ctx)
	return errors.New("boom")
}

func TestManagerWorkerHooksAfterFailedStart(t *testing.T) {
	lw := &blockingWorker{release: closedChan()}
	ew := &failingRunWorker{blockingWorker{release: closedChan()}}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://hooks"), WithLogWorker(lw), WithEventWorker(ew), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 5*time.Second)); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Start: %v, want the worker's error", err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, calls := range [][]string{lw.calls, ew.calls} {
		if strings.Join(calls, ",") != "run,stop" {
			t.Errorf("hooks %v, want run,stop exactly once each", calls)
		}
	}
	if err := m.SendInfo("x"); !errors.Is(err, ErrStopped) {
		t.Fatalf("after failed Start: %v, want ErrStopped", err)
	}
}

type erringWorker struct{ blockingWorker }

func (w *erringWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	if string(msg.Body) == "bad" {
		return errors.New("cannot deliver")
	}
	return w.blockingWorker.MsgDidReceive(ctx, msg)
}

// TestManagerCustomWorkerFailureIsSpooled replaces the event worker with one
// that fails on some messages, next to the built-in log worker publishing to
// the broker.
func TestManagerCustomWorkerFailureIsSpooled(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerCustomWorkerFailureIsSpooled)
}

func testManagerCustomWorkerFailureIsSpooled(t *testing.T, url string) {
	cfg, _ := backendConfig(t, url)
	dir := t.TempDir()
	release := make(chan struct{})
	ew := &erringWorker{blockingWorker{release: release}}
	var mu sync.Mutex
	var reported []error
	// The collector needs the log exchange before the Manager declares it.
	if err := backendChannel(t, url).ExchangeDeclare(cfg.LogWorker.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)),
		WithEventWorker(ew), WithSpoolDir(dir), WithErrorHandler(func(err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"ok1", "bad", "ok2"} {
		if err := m.SendEvent(b, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.SendWarning("the log lane goes on"); err != nil {
		t.Fatal(err)
	}
	// The worker holds ok1 until Stop has closed the buffers, so bad fails
	// while the Manager stops, and Stop says it was spooled.
	stopCtx := testCtx(t, 10*time.Second)
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop(stopCtx) }()
	waitUntil(t, 5*time.Second, "Stop to close the event buffer", m.lanes[eventLane].closed.Load)
	close(release)
	if err := <-stopped; !errors.Is(err, ErrSpooled) || !strings.Contains(err.Error(), "1 message(s)") {
		t.Fatalf("Stop: %v, want ErrSpooled for the 1 spooled message", err)
	}
	st := m.Stats().Events
	if st.Confirmed != 2 || st.Spooled != 1 {
		t.Fatalf("stats %+v, want 2 confirmed and 1 spooled", st)
	}
	if got := ew.bodies(); strings.Join(got, ",") != "ok1,ok2" {
		t.Fatalf("the custom worker delivered %v, want ok1,ok2", got)
	}
	if strings.Join(ew.calls, ",") != "run,stop" {
		t.Errorf("hooks %v, want run,stop", ew.calls)
	}
	if st := m.Stats().Logs; st.Confirmed != 1 || st.Spooled != 0 {
		t.Fatalf("log stats %+v, want 1 confirmed", st)
	}
	logs.waitCount(t, 1, 10*time.Second)
	if d := logs.all()[0]; string(d.Body) != "the log lane goes on" || d.RoutingKey != KeyWarning {
		t.Fatalf("log delivery %q with key %q", d.Body, d.RoutingKey)
	}
	if recs := spoolRecords(t, dir, "backup.evt"); len(recs) != 1 || recs[0].Body != "bad" || recs[0].Key != "k" {
		t.Fatalf("spool holds %+v", recs)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || !strings.Contains(reported[0].Error(), "cannot deliver") {
		t.Fatalf("error handler got %v", reported)
	}
}

// TestManagerWrongPassword runs on RabbitMQ only: the in-process broker has
// no credentials.
func TestManagerWrongPassword(t *testing.T) {
	bad := urlWithPassword(t, brokertest.URL(t), "s3cr3t-pw")
	cfg, _ := testConfig(t)
	m, err := NewManager(WithConfig(cfg), WithURL(bad))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = m.Start(testCtx(t, 30*time.Second))
	if err == nil {
		t.Fatal("Start succeeded with a wrong password")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Start took %v to fail", d)
	}
	if !errors.Is(err, ErrConnection) {
		t.Errorf("error %v does not wrap ErrConnection", err)
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused {
		t.Errorf("error %v does not carry the broker's ACCESS_REFUSED", err)
	}
	if strings.Contains(err.Error(), "s3cr3t-pw") {
		t.Errorf("error shows the password: %v", err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNewManagerBadURL(t *testing.T) {
	for _, u := range []string{"http://localhost/", "amqp://guest:pw@localhost:5672/?bogus=1", "", "amqp://a b"} {
		_, err := NewManager(WithURL(u))
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("WithURL(%q): %v, want ErrInvalidConfig", u, err)
		}
		if err != nil && strings.Contains(err.Error(), ":pw@") {
			t.Errorf("error shows a password: %v", err)
		}
	}
	if _, err := NewManager(WithPrefetch(3)); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("consumer option on a Manager: %v", err)
	}
}

// The tests from here to TestManagerFailoverToSecondAddress put a TCP proxy
// between the Manager and RabbitMQ that refuses, cuts or stalls connections.
// The in-process broker has no network to break: they run on RabbitMQ only.

func TestManagerUnreachableBrokerRetriesThenFails(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	p.Refuse(true)
	cfg, _ := testConfig(t)
	m, err := NewManager(WithConfig(cfg), WithURL(proxyURL(url, p)), WithReconnect(20*time.Millisecond, 3))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(testCtx(t, 30*time.Second))
	if !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), "3 attempt") {
		t.Fatalf("Start: %v, want ErrConnection after 3 attempts", err)
	}
	m.Stop(context.Background())
}

func TestManagerSpoolsWhileUnreachableAndReplays(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	p.Refuse(true)
	cfg, n := testConfig(t)
	// Declare the exchanges first so a collector can bind before the Manager connects.
	ch := backendChannel(t, url)
	if err := ch.ExchangeDeclare(cfg.LogWorker.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, p)), WithReconnect(20*time.Millisecond, 2),
		WithRetryOnFailedConnect(true), WithLogger(testLogger(t)))
	const N = 100
	for i := 0; i < N; i++ {
		if err := m.SendEvent(fmt.Sprintf("ev %d", i), ""); err != nil {
			t.Fatal(err)
		}
		if err := m.SendInfo(fmt.Sprintf("log %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "everything spooled", func() bool { return m.Stats().Spooled == 2*N })
	for _, f := range []string{"backup.evt", "backup.log"} {
		recs := spoolRecords(t, cfg.Log.Folder, f)
		if len(recs) != N {
			t.Fatalf("%s: %d records, want %d", f, len(recs), N)
		}
		if recs[0].Key == "" || recs[0].MessageID == "" {
			t.Fatalf("%s: first record %+v, want a key and an id", f, recs[0])
		}
	}
	p.Refuse(false)
	waitUntil(t, 20*time.Second, "spool replayed", func() bool { return m.Stats().Replayed == 2*N })
	logs.waitCount(t, N, 10*time.Second)
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	wantDepth(t, url, n.Queue, N)
	left, _ := filepath.Glob(filepath.Join(cfg.Log.Folder, "backup.*"))
	for _, f := range left {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
			t.Errorf("spool file %s still holds %d bytes after replay", f, fi.Size())
		}
	}
}

func TestManagerRepublishesAcrossNetworkCuts(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	cfg, n := testConfig(t)
	m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, p)), WithReconnect(20*time.Millisecond, 100), WithLogger(testLogger(t)))
	got := consumeQueue(t, backendChannel(t, url), n.Queue)
	const N = 20000
	ctx := testCtx(t, 60*time.Second)
	for i := 0; i < N; i++ {
		if err := m.SendEventContext(ctx, fmt.Sprintf("ev %d", i), ""); err != nil {
			t.Fatal(i, err)
		}
		if i == N/3 || i == 2*N/3 {
			// Cut while messages are in flight, then let the reconnect
			// happen before the next cut.
			cuts := m.Stats().Events.Reconnects + 1
			p.Cut()
			waitUntil(t, 10*time.Second, "a reconnect", func() bool { return m.Stats().Events.Reconnects >= cuts })
		}
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, "all events", func() bool {
		if got.unique() == N {
			return true
		}
		t.Logf("unique %d stats %+v", got.unique(), m.Stats().Events)
		return false
	})
	st := m.Stats().Events
	t.Logf("sent %d, unique %d, duplicates %d, stats %+v", N, got.unique(), got.count()-got.unique(), st)
	if st.Reconnects < 2 {
		t.Errorf("reconnects = %d, want at least 2", st.Reconnects)
	}
	if st.Confirmed != N {
		t.Errorf("confirmed = %d, want %d", st.Confirmed, N)
	}
}

func TestManagerStopTimeoutSpoolsUnconfirmed(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	cfg, _ := testConfig(t)
	m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, p)), WithLogger(testLogger(t)))
	// Bytes stop flowing; nothing gets confirmed. (The cleanup runs before
	// the Manager's, if the test fails.)
	p.Stall(true)
	t.Cleanup(func() { p.Stall(false) })
	const N = 50
	for i := 0; i < N; i++ {
		if err := m.SendEvent(fmt.Sprintf("ev %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	// The log worker waits for its message's confirm: the message counts
	// once in Pending.
	if err := m.SendInfo("waits for a confirm"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the worker to take every message", func() bool {
		return m.Stats().Events.Published == N && m.Stats().Logs.Published == 1
	})
	if l, e := m.Pending(); l != 1 || e != N {
		t.Fatalf("pending %d logs and %d events, want 1 and %d", l, e, N)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := m.Stop(ctx)
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), fmt.Sprintf("%d message(s)", N+1)) {
		t.Fatalf("Stop: %v, want ErrNotConfirmed for %d messages", err, N+1)
	}
	for f, want := range map[string]int{"backup.evt": N, "backup.log": 1} {
		if cnt := len(spoolRecords(t, cfg.Log.Folder, f)); cnt != want {
			t.Fatalf("%s holds %d, want %d", f, cnt, want)
		}
	}
}

// TestManagerStopTimeoutWithStuckWrite: when the network stalls with more
// data than the sockets buffer, a publish is stuck writing. Stop's context
// still bounds Stop: the connection is closed under the stuck write, and what
// was not confirmed is spooled.
func TestManagerStopTimeoutWithStuckWrite(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	cfg, _ := testConfig(t)
	m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, p)), WithLogger(testLogger(t)))
	p.Stall(true)
	t.Cleanup(func() { p.Stall(false) }) // runs before the Manager's cleanup
	const N = 32
	big := strings.Repeat("x", 1<<20)
	for i := 0; i < N; i++ {
		if err := m.SendEvent(big, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Some publishes fit in the socket buffers; one is then stuck.
	waitUntil(t, 10*time.Second, "the first publishes", func() bool { return m.Stats().Events.Published > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop(ctx) }()
	var err error
	select {
	case err = <-stopped:
	case <-time.After(60 * time.Second):
		// Stop returns once it has spooled the 32 MiB held, which takes
		// seconds under the race detector on a busy machine; a write stuck
		// for good would keep it until the network comes back.
		p.Stall(false)
		t.Fatalf("Stop did not return with a write stuck (once the network came back: %v)", <-stopped)
	}
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), fmt.Sprintf("%d message(s)", N)) {
		t.Fatalf("Stop: %v, want ErrNotConfirmed for %d messages", err, N)
	}
	// Only the event lane held messages: only its spool file is named.
	if !strings.Contains(err.Error(), "backup.evt") || strings.Contains(err.Error(), "backup.log") {
		t.Errorf("Stop: %v, want only backup.evt named", err)
	}
	if cnt := len(spoolRecords(t, cfg.Log.Folder, "backup.evt")); cnt != N {
		t.Fatalf("spool holds %d, want %d", cnt, N)
	}
}

func TestManagerReturnsUnroutableEvents(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerReturnsUnroutableEvents)
}

func testManagerReturnsUnroutableEvents(t *testing.T, url string) {
	cfg, _ := backendConfig(t, url)
	returned := make(chan Returned, 1)
	m := startManager(t, WithConfig(cfg), WithURL(url), WithReturnHandler(func(r Returned) { returned <- r }),
		WithLogger(testLogger(t)))
	if err := m.SendEvent("nobody listens", "no.such.binding"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-returned:
		if r.Key != "no.such.binding" || string(r.Body) != "nobody listens" || r.ReplyCode != amqp.NoRoute || r.MessageID == "" {
			t.Fatalf("returned %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no return reported")
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats().Events; st.Returned != 1 {
		t.Fatalf("returned = %d, want 1", st.Returned)
	}
}

func TestManagerFailoverToSecondAddress(t *testing.T) {
	url := brokertest.URL(t)
	a, b := newProxy(t, url), newProxy(t, url)
	a.Refuse(true) // the first address is down
	cfg, n := testConfig(t)
	list := proxyURL(url, a) + ", " + proxyURL(url, b)
	m := startManager(t, WithConfig(cfg), WithURL(list), WithReconnect(20*time.Millisecond, 5), WithLogger(testLogger(t)))
	if err := m.SendEvent("via b", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "a confirm", func() bool { return m.Stats().Events.Confirmed == 1 })
	// b goes down, a comes back: the next connection goes to a.
	a.Refuse(false)
	b.Refuse(true)
	b.Cut()
	waitUntil(t, 10*time.Second, "reconnects", func() bool { return m.Stats().Reconnects >= 2 })
	if err := m.SendEvent("via a", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if a.Accepts() < 2 || b.Accepts() < 2 {
		t.Errorf("accepts: a %d, b %d; want both used by both workers", a.Accepts(), b.Accepts())
	}
	wantDepth(t, url, n.Queue, 2)
}

func TestManagerQuorumQueue(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerQuorumQueue)
}

func testManagerQuorumQueue(t *testing.T, url string) {
	cfg, n := backendConfig(t, url)
	cfg.EventWorker.QueueType = "quorum"
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	if err := m.SendEvent("to a quorum queue", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A passive declare does not compare the type; a declaration does.
	if _, err := backendChannel(t, url).QueueDeclare(n.Queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("queue is not a quorum queue: %v", err)
	}
	if _, err := backendChannel(t, url).QueueDeclare(n.Queue, true, false, false, false, nil); err == nil {
		t.Fatal("declaring the queue as a classic queue was accepted")
	}
	wantDepth(t, url, n.Queue, 1)
}

// refusingWorker fails every message, so that the Manager spools it.
type refusingWorker struct{}

func (refusingWorker) WorkerWillRun(context.Context) error { return nil }
func (refusingWorker) MsgDidReceive(context.Context, Message) error {
	return errors.New("refused by the test worker")
}
func (refusingWorker) WorkerWillStop(context.Context) error { return nil }

// TestManagerReplaysSpool: what one Manager could not deliver stays in the
// spool files of its folder, and the next Manager started on that folder
// publishes it, ids and keys unchanged, then empties the files.
func TestManagerReplaysSpool(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerReplaysSpool)
}

func testManagerReplaysSpool(t *testing.T, url string) {
	cfg, n := backendConfig(t, url)
	const N = 50

	// The first Manager's workers refuse everything: all of it is spooled.
	first, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)),
		WithLogWorker(refusingWorker{}), WithEventWorker(refusingWorker{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := range N {
		if err := first.SendEvent(fmt.Sprintf("ev %d", i), ""); err != nil {
			t.Fatal(err)
		}
		if err := first.SendLog(fmt.Sprintf("log %d", i), "audit"); err != nil {
			t.Fatal(err)
		}
	}
	// Everything the first Manager took is spooled; Stop says how much.
	if err := first.Stop(testCtx(t, 10*time.Second)); err != nil && !errors.Is(err, ErrSpooled) {
		t.Fatal(err)
	}
	if st := first.Stats(); st.Spooled != 2*N {
		t.Fatalf("first Manager spooled %d, want %d", st.Spooled, 2*N)
	}
	spooled := map[string]spool.Record{}
	for _, f := range []string{"backup.evt", "backup.log"} {
		for _, r := range spoolRecords(t, cfg.Log.Folder, f) {
			spooled[r.MessageID] = r
		}
	}
	if len(spooled) != 2*N {
		t.Fatalf("spool files hold %d distinct messages, want %d", len(spooled), 2*N)
	}

	// The second Manager publishes the spool when it connects.
	ch := backendChannel(t, url)
	if err := ch.ExchangeDeclare(cfg.LogWorker.Exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	second := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	waitUntil(t, 20*time.Second, "the spool to be replayed", func() bool { return second.Stats().Replayed == 2*N })
	if err := second.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	logs.waitCount(t, N, 10*time.Second)
	events := consumeQueue(t, ch, n.Queue)
	events.waitCount(t, N, 10*time.Second)
	for _, d := range append(logs.all(), events.all()...) {
		r, ok := spooled[d.MessageId]
		if !ok {
			t.Fatalf("delivery %q has id %q, which is not in the spool", d.Body, d.MessageId)
		}
		if string(d.Body) != r.Body || d.RoutingKey != r.Key {
			t.Fatalf("delivery %q key %q, spooled as %q key %q", d.Body, d.RoutingKey, r.Body, r.Key)
		}
		delete(spooled, d.MessageId)
	}
	if len(spooled) != 0 {
		t.Fatalf("%d spooled messages were not delivered", len(spooled))
	}
	if st := second.Stats(); st.Accepted != 0 || st.Spooled != 0 || st.Dropped != 0 {
		t.Fatalf("second Manager stats %+v: it only replayed", st.LaneStats)
	}
	left, _ := filepath.Glob(filepath.Join(cfg.Log.Folder, "backup.*"))
	for _, f := range left {
		if fi, err := os.Stat(f); err == nil && fi.Size() > 0 {
			t.Errorf("spool file %s still holds %d bytes after replay", f, fi.Size())
		}
	}
}

// TestManagerAndConsumerSurviveConnectionLoss: while events flow from a
// Manager to a consumer, every connection is lost twice. The Manager
// republishes what was not confirmed, the consumer reconnects, and every
// event arrives (duplicates allowed, nothing lost).
func TestManagerAndConsumerSurviveConnectionLoss(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerAndConsumerSurviveConnectionLoss)
}

func testManagerAndConsumerSurviveConnectionLoss(t *testing.T, url string) {
	cfg, n := backendConfig(t, url)
	clientURL, cut := breakable(t, url)
	var mu sync.Mutex
	seen := map[string]int{}
	var lost atomic.Int32 // connection losses the consumer reported
	r := runConsumer(t, NewSyncConsumer, WithConfig(cfg), WithURL(clientURL), WithLogger(testLogger(t)), WithReconnect(20*time.Millisecond, 100),
		WithErrorHandler(func(err error) {
			if errors.Is(err, ErrConnection) {
				lost.Add(1)
			}
		}),
		WithExchange(cfg.EventWorker.Exchange, "topic", true), WithQueue(n.Queue), WithQueueDurable(true), WithKeys(n.Key),
		WithCallback(func(_ context.Context, d Delivery) error {
			mu.Lock()
			seen[d.MessageID]++
			mu.Unlock()
			return nil
		}))
	m := startManager(t, WithConfig(cfg), WithURL(clientURL), WithReconnect(20*time.Millisecond, 100), WithLogger(testLogger(t)))
	const N = 5000
	ctx := testCtx(t, 60*time.Second)
	for i := range N {
		if err := m.SendEventContext(ctx, fmt.Sprintf("ev %d", i), ""); err != nil {
			t.Fatal(i, err)
		}
		if i == N/3 || i == 2*N/3 {
			// Cut while both are connected: the consumer reported the
			// previous loss (Ready turned false before) and is ready again.
			before := int32(0)
			if i == 2*N/3 {
				before = 1
			}
			waitUntil(t, 10*time.Second, "the consumer to be connected", func() bool { return lost.Load() >= before && r.c.Ready() })
			reconnects := m.Stats().Events.Reconnects + 1
			cut()
			waitUntil(t, 10*time.Second, "the event worker to reconnect", func() bool { return m.Stats().Events.Reconnects >= reconnects })
		}
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st := m.Stats().Events
	if st.Confirmed != N || st.Reconnects < 2 || st.Spooled != 0 || st.Dropped != 0 {
		t.Fatalf("event stats %+v, want %d confirmed after at least 2 reconnects", st, N)
	}
	unique := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
	waitUntil(t, 20*time.Second, fmt.Sprintf("%d distinct events", N), func() bool { return unique() == N })
	waitUntil(t, 10*time.Second, "the consumer to report two lost connections", func() bool { return lost.Load() >= 2 })
	stopNow(t, r)
	wantDepth(t, url, n.Queue, 0)
}

// TestManagerBlockedBroker: while the broker blocks publishing (a memory
// alarm), the Manager counts the blocked time, delivers everything once the
// alarm clears, and a Stop whose context ends during the alarm returns in
// time and spools what was not confirmed. It runs on the in-process broker
// only: on RabbitMQ an alarm blocks every user of the node, so the serial
// fault suite covers it there.
func TestManagerBlockedBroker(t *testing.T) {
	t.Parallel()
	for _, clear := range []bool{true, false} {
		name := "cleared"
		if !clear {
			name = "stop during the alarm"
		}
		t.Run(name, func(t *testing.T) {
			url := memoryURL(t)
			b := membroker.Get(strings.TrimPrefix(url, "memory://"))
			cfg, n := backendConfig(t, url)
			// The alarm is raised before the Manager connects: its
			// connections learn of it when they publish.
			b.SetBlocked(true)
			t.Cleanup(func() { b.SetBlocked(false) })
			m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
			const events, logs = 20, 5
			for i := range events {
				if err := m.SendEvent(fmt.Sprint("event ", i), ""); err != nil {
					t.Fatal(err)
				}
			}
			for i := range logs {
				if err := m.SendInfo(fmt.Sprint("log ", i)); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, 10*time.Second, "both workers to be blocked", func() bool {
				st := m.Stats()
				return st.Events.Blocked > 0 && st.Logs.Blocked > 0
			})
			if l, e := m.Pending(); l != logs || e != events {
				t.Fatalf("pending %d logs, %d events; want %d, %d", l, e, logs, events)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if clear {
				b.SetBlocked(false)
				ctx = testCtx(t, 10*time.Second)
			}
			stopped := make(chan error, 1)
			go func() { stopped <- m.Stop(ctx) }()
			var err error
			select {
			case err = <-stopped:
			case <-time.After(10 * time.Second):
				b.SetBlocked(false)
				t.Fatalf("Stop did not return while the broker was blocked (after the alarm cleared: %v)", <-stopped)
			}
			st := m.Stats()
			if clear {
				if err != nil {
					t.Fatal(err)
				}
				if st.Events.Confirmed != events || st.Logs.Confirmed != logs || st.Spooled != 0 {
					t.Fatalf("stats %+v, want everything confirmed", st)
				}
				wantDepth(t, url, n.Queue, events)
				return
			}
			if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), fmt.Sprintf("%d message(s)", events+logs)) {
				t.Fatalf("Stop: %v, want ErrNotConfirmed for %d messages", err, events+logs)
			}
			for f, want := range map[string]int{"backup.evt": events, "backup.log": logs} {
				if cnt := len(spoolRecords(t, cfg.Log.Folder, f)); cnt != want {
					t.Errorf("%s holds %d messages, want %d", f, cnt, want)
				}
			}
			if st.Confirmed != 0 || st.Spooled != events+logs || st.Dropped != 0 {
				t.Fatalf("stats %+v, want all %d spooled", st.LaneStats, events+logs)
			}
		})
	}
}

// TestManagerClockSleepsWhileIdle: with nothing to send, the Manager's clock
// goroutine sleeps; the first message after that is stamped with the time
// it was sent, not with the time the clock fell asleep.
func TestManagerClockSleepsWhileIdle(t *testing.T) {
	t.Parallel()
	url := "memory://" + strings.ReplaceAll(t.Name(), "/", ".")
	cfg, _ := backendConfig(t, url)
	m := startManager(t, WithConfig(cfg), WithURL(url))
	events := collect(t, url, cfg.EventWorker.Exchange, "#")

	waitUntil(t, 10*time.Second, "the clock to sleep", m.clockAsleep.Load)
	m.now.Store(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()) // what a sleeping clock would stamp
	before := time.Now().Add(-time.Second)
	if err := m.SendEvent("after a quiet spell", ""); err != nil {
		t.Fatal(err)
	}
	events.waitCount(t, 1, 10*time.Second)
	if ts := events.all()[0].Timestamp; ts.Before(before) {
		t.Errorf("the first event after the clock slept is stamped %v, before it was sent (%v)", ts, before)
	}
	// It falls asleep again once the lanes are quiet.
	waitUntil(t, 10*time.Second, "the clock to sleep again", m.clockAsleep.Load)
}

// TestManagerLogLanePipelines: the log worker does not wait for each confirm
// before it publishes the next log. With the broker's answers held up, it
// writes several logs, in order, while none is confirmed.
func TestManagerLogLanePipelines(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	cfg, _ := testConfig(t)
	m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, p)), WithLogger(testLogger(t)))
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	p.Stall(true)
	const n = 20
	for i := range n {
		if err := m.SendInfo(fmt.Sprintf("log %02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "several logs published before any confirm", func() bool {
		return m.Stats().Logs.Published >= 2
	})
	if c := m.Stats().Logs.Confirmed; c != 0 {
		t.Fatalf("%d logs confirmed through a stalled connection", c)
	}
	p.Stall(false)
	if err := m.Stop(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	logs.waitCount(t, n, 10*time.Second)
	for i, d := range logs.all()[:n] {
		if want := fmt.Sprintf("log %02d", i); string(d.Body) != want {
			t.Fatalf("log %d is %q, want %q: the lane's order was not kept", i, d.Body, want)
		}
	}
}

// TestManagerStartRefusesUnwritableFolder: a spool folder that cannot be
// written is found at Start, with a stream logger too, not when an outage
// needs the spool.
func TestManagerStartRefusesUnwritableFolder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Log.Type = "stream"
	cfg.Log.Folder = filepath.Join(file, "log") // under a file: cannot exist
	m, err := NewManager(WithConfig(cfg), WithURL("memory://"+t.Name()), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(testCtx(t, 10*time.Second))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), cfg.Log.Folder) {
		t.Fatalf("Start with FOLDER under a file: %v, want ErrInvalidConfig naming the folder", err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestManagerSpoolWriteFailureIsReportedAsLoss: when the broker is away and
// the spool file cannot be written, the give-up report says the messages
// are lost (not "written to"), and Stop returns an error.
func TestManagerSpoolWriteFailureIsReportedAsLoss(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "backup.evt"), 0o700); err != nil { // a folder where the file should be
		t.Fatal(err)
	}
	var mu sync.Mutex
	var reports []string
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("amqp://guest:guest@127.0.0.1:1/"), WithSpoolDir(dir),
		WithReconnect(10*time.Millisecond, 2), WithRetryOnFailedConnect(true), WithLogger(testLogger(t)),
		WithErrorHandler(func(err error) { mu.Lock(); reports = append(reports, err.Error()); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m.SendEvent("nowhere to go", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the message to be dropped", func() bool { return m.Stats().Events.Dropped == 1 })
	err = m.Stop(testCtx(t, 10*time.Second))
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), "neither confirmed nor written") {
		t.Errorf("Stop: %v, want an error saying a message was lost", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range reports {
		if strings.Contains(r, "written to") && strings.Contains(r, "backup.evt") && !strings.Contains(r, "could not be written") {
			t.Errorf("a report says the messages were written: %s", r)
		}
	}
}
