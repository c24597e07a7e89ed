package interop_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
)

// perLane is how many messages each producer sends on each lane.
const perLane = 200

// setup returns the broker URL and a marker unique to the test, once both
// RabbitMQ and python3-pika are there. With legacy set it takes the lock on
// the original's shared names first.
func setup(t *testing.T, legacy bool) (url, marker string) {
	t.Helper()
	url = brokertest.URL(t)
	python(t)
	if legacy {
		brokertest.LockLegacyNames(t)
	}
	return url, brokertest.Unique("interop-" + t.Name())
}

// goConsumer is a Go consumer running in the background until the test ends.
type goConsumer interface {
	Run(ctx context.Context) error
	Stop(ctx context.Context) error
	Ready() bool
}

func runGo(t *testing.T, c goConsumer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !c.Ready() {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the Go consumer stopped before it was ready: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the Go consumer is not ready after 30s")
		}
	}
}

// goOpts pin a Go client to the defaults and url, whatever OMQS.cfg says.
func goOpts(t *testing.T, url string, more ...omqs.Option) []omqs.Option {
	cfg := omqs.DefaultConfig()
	cfg.Log.Folder = t.TempDir()
	return append([]omqs.Option{omqs.WithConfig(cfg), omqs.WithURL(url), omqs.WithLogger(testLogger(t)),
		omqs.WithReconnect(200*time.Millisecond, 5)}, more...)
}

// deliveries keeps what a Go callback saw, by body.
type deliveries struct {
	mu  sync.Mutex
	all []omqs.Delivery
}

func (r *deliveries) add(d omqs.Delivery) {
	r.mu.Lock()
	defer r.mu.Unlock()
	d.Body = append([]byte(nil), d.Body...)
	r.all = append(r.all, d)
}

func (r *deliveries) list() []omqs.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]omqs.Delivery(nil), r.all...)
}

// countMarked counts the deliveries whose body holds marker, and their
// distinct bodies.
func (r *deliveries) countMarked(marker string) (n, distinct int) {
	seen := map[string]bool{}
	for _, d := range r.list() {
		if strings.Contains(string(d.Body), marker) {
			n++
			seen[string(d.Body)] = true
		}
	}
	return n, len(seen)
}

// raw returns a channel on a connection of its own, closed with the test.
func raw(t *testing.T) *amqp.Channel { return brokertest.Channel(t) }

// TestPythonToGo: events and logs published as the original publishes them
// reach Go consumers, with what they carry (no message id, not persistent);
// MAX_REDELIVERIES still applies to a message without an id.
func TestPythonToGo(t *testing.T) {
	url, marker := setup(t, false)
	evQueue, evKey := brokertest.Unique("omqs.test.interop.ev"), brokertest.Unique("omqs.test.interop.k")
	logQueue, logKey := brokertest.Unique("omqs.test.interop.log"), brokertest.Unique("omqs.test.interop.l")
	dlx, dlq := brokertest.Unique("omqs.test.interop.dlx"), brokertest.Unique("omqs.test.interop.dlq")
	brokertest.Cleanup(t, []string{dlx}, []string{evQueue, logQueue, dlq})
	ch := raw(t)
	if err := ch.ExchangeDeclare(dlx, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(dlq, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}

	requeued := marker + "-requeue-0"
	events, logs := &deliveries{}, &deliveries{}
	ec, err := omqs.NewEventMsgConsumer(goOpts(t, url, omqs.WithQueue(evQueue), omqs.WithKeys(evKey),
		omqs.WithMaxRedeliveries(2), omqs.WithDeadLetterExchange(dlx),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error {
			events.add(d)
			if string(d.Body) == requeued {
				return omqs.Requeue(errors.New("not yet"))
			}
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	runGo(t, ec)
	lc, err := omqs.NewLogMsgConsumer([]string{logKey}, goOpts(t, url, omqs.WithQueue(logQueue),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error { logs.add(d); return nil }))...)
	if err != nil {
		t.Fatal(err)
	}
	runGo(t, lc)

	spool := t.TempDir()
	runPeer(t, url, "publish-events", fmt.Sprint(perLane), marker+"-ev-", evKey, spool)
	runPeer(t, url, "publish-logs", fmt.Sprint(perLane), marker+"-log-", logKey, spool)
	runPeer(t, url, "publish-events", "1", marker+"-requeue-", evKey, spool)

	waitFor(t, time.Minute, "every event and log at the Go consumers", func() bool {
		_, ev := events.countMarked(marker + "-ev-")
		_, lg := logs.countMarked(marker + "-log-")
		return ev == perLane && lg == perLane
	})
	// Requeued twice (MAX_REDELIVERIES=2), then rejected to the dead-letter
	// exchange: without a message id the count keys on exchange, key and body.
	var dead amqp.Delivery
	waitFor(t, time.Minute, "the requeued event in the dead-letter queue", func() bool {
		d, ok, err := ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			dead = d
		}
		return ok
	})
	if string(dead.Body) != requeued {
		t.Errorf("dead-lettered %q, want %q", dead.Body, requeued)
	}
	if n, _ := events.countMarked(requeued); n != 3 {
		t.Errorf("the requeued event was delivered %d times, want 3 (1 + MAX_REDELIVERIES)", n)
	}

	for _, d := range events.list() {
		if d.MessageID != "" || d.ContentType != "" || d.AppID != "" || !d.Timestamp.IsZero() || d.DeliveryMode != 0 || d.Persistent() {
			t.Fatalf("event from Python: id %q, type %q, app %q, time %v, mode %d; want none set",
				d.MessageID, d.ContentType, d.AppID, d.Timestamp, d.DeliveryMode)
		}
		if d.Exchange != omqs.EventExchange || d.RoutingKey != evKey {
			t.Fatalf("event from Python on %q with key %q", d.Exchange, d.RoutingKey)
		}
	}
	redelivered := 0
	for _, d := range events.list() {
		if string(d.Body) == requeued && d.Redelivered {
			redelivered++
		}
	}
	if redelivered != 2 {
		t.Errorf("the requeued event came back %d times with Redelivered set, want 2", redelivered)
	}
	for _, d := range logs.list() {
		if d.MessageID != "" || d.ContentType != "text/plain" || d.DeliveryMode != 1 || d.Persistent() {
			t.Fatalf("log from Python: id %q, type %q, mode %d; want text/plain, mode 1", d.MessageID, d.ContentType, d.DeliveryMode)
		}
	}
	if n, distinct := logs.countMarked(marker); n != distinct {
		t.Errorf("logs: %d deliveries of %d messages", n, distinct)
	}
	if entries, _ := os.ReadDir(spool); len(entries) != 0 {
		t.Errorf("peer.py spooled with the broker up: %v", entries)
	}
}

// TestGoToPython: what a Go Manager sends reaches consumers that behave as
// the original's (auto-ack, no prefetch), once each.
func TestGoToPython(t *testing.T) {
	url, marker := setup(t, false)
	evQueue, evKey := brokertest.Unique("omqs.test.interop.ev"), brokertest.Unique("omqs.test.interop.k")
	logQueue, logKey := brokertest.Unique("omqs.test.interop.log"), brokertest.Unique("omqs.test.interop.l")
	brokertest.Cleanup(t, nil, []string{evQueue, logQueue})
	pyEvents := startPyConsumer(t, url, "consume-events", evQueue, evKey, marker)
	pyLogs := startPyConsumer(t, url, "consume-logs", logQueue, logKey, marker)

	m, err := omqs.NewManager(goOpts(t, url)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range perLane {
		if err := m.SendEvent(fmt.Sprintf("%s-ev-%d", marker, i), evKey); err != nil {
			t.Fatal(err)
		}
		if err := m.SendLog(fmt.Sprintf("%s-log-%d", marker, i), logKey); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	waitFor(t, time.Minute, "every event and log at the Python consumers", func() bool {
		return len(pyEvents.all()) >= perLane && len(pyLogs.all()) >= perLane
	})
	pyEvents.stop(t)
	pyLogs.stop(t)
	for lane, c := range map[string]*pyConsumer{"event": pyEvents, "log": pyLogs} {
		ids := map[string]bool{}
		for _, msg := range c.all() {
			if msg.MessageID == "" || msg.DeliveryMode != 2 || msg.ContentType != "" {
				t.Errorf("%s at Python: id %q, mode %d, type %q; want an id, persistent, no content type (none was given)", lane, msg.MessageID, msg.DeliveryMode, msg.ContentType)
			}
			if ids[msg.Body] {
				t.Errorf("%s %q arrived twice", lane, msg.Body)
			}
			ids[msg.Body] = true
		}
		if len(ids) != perLane {
			t.Errorf("%s: %d of %d arrived", lane, len(ids), perLane)
		}
	}
}

// TestLegacyEOF: the "EOF" the original's stop() publishes on each lane
// reaches Go consumers as a message, which IsLegacyEOF recognises. The
// event one also lands in omqs.queue.event, as the original's does.
func TestLegacyEOF(t *testing.T) {
	url, _ := setup(t, true)
	evQueue, logQueue := brokertest.Unique("omqs.test.interop.ev"), brokertest.Unique("omqs.test.interop.log")
	brokertest.Cleanup(t, nil, []string{evQueue, logQueue})
	events, logs := &deliveries{}, &deliveries{}
	ec, err := omqs.NewEventMsgConsumer(goOpts(t, url, omqs.WithQueue(evQueue),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error { events.add(d); return nil }))...)
	if err != nil {
		t.Fatal(err)
	}
	runGo(t, ec)
	lc, err := omqs.NewLogMsgConsumer([]string{omqs.KeyInfo}, goOpts(t, url, omqs.WithQueue(logQueue),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error { logs.add(d); return nil }))...)
	if err != nil {
		t.Fatal(err)
	}
	runGo(t, lc)

	runPeer(t, url, "stop")
	eof := func(r *deliveries) *omqs.Delivery {
		for _, d := range r.list() {
			if d.IsLegacyEOF() {
				return &d
			}
		}
		return nil
	}
	waitFor(t, time.Minute, "the EOF of each lane", func() bool { return eof(events) != nil && eof(logs) != nil })
	if d := eof(events); d.RoutingKey != omqs.DefaultEventKey || d.ContentType != "" {
		t.Errorf("event EOF: key %q, type %q", d.RoutingKey, d.ContentType)
	}
	if d := eof(logs); d.RoutingKey != omqs.KeyInfo || d.ContentType != "text/plain" {
		t.Errorf("log EOF: key %q, type %q", d.RoutingKey, d.ContentType)
	}
}

// TestCompetingOnEventQueue: a Go EventMsgConsumer and a consumer that
// behaves as the original's share omqs.queue.event while a Go Manager and
// a Python producer publish to it with the default key: every event
// arrives, once. Both consumers put back what is not the test's and drop
// the original's EOF sentinel.
func TestCompetingOnEventQueue(t *testing.T) {
	url, marker := setup(t, true)
	ch := raw(t)
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	var chMu sync.Mutex
	goGot := &deliveries{}
	ec, err := omqs.NewEventMsgConsumer(goOpts(t, url, omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
		switch {
		case strings.Contains(string(d.Body), marker):
			goGot.add(d)
			return nil
		case d.IsLegacyEOF():
			return nil
		}
		// Not the test's: publish it again to the queue, then acknowledge.
		chMu.Lock()
		defer chMu.Unlock()
		conf, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", omqs.EventQueue, false, false, amqp.Publishing{
			ContentType: d.ContentType, MessageId: d.MessageID, AppId: d.AppID, Timestamp: d.Timestamp,
			Headers: amqp.Table(d.Headers), DeliveryMode: d.DeliveryMode, Body: d.Body,
		})
		if err != nil {
			return omqs.Requeue(err)
		}
		if ok, err := conf.WaitContext(ctx); !ok || err != nil {
			return omqs.Requeue(fmt.Errorf("republish not confirmed: %v", err))
		}
		return nil
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	runGo(t, ec)
	py := startPyConsumer(t, url, "consume-events", "", omqs.DefaultEventKey, marker)

	m, err := omqs.NewManager(goOpts(t, url)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range perLane {
		if err := m.SendEvent(fmt.Sprintf("%s-go-%d", marker, i), ""); err != nil {
			t.Fatal(err)
		}
	}
	runPeer(t, url, "publish-events", fmt.Sprint(perLane), marker+"-py-", "", t.TempDir())
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	total := func() int {
		n, _ := goGot.countMarked(marker)
		return n + len(py.all())
	}
	waitFor(t, time.Minute, "every event at one of the consumers", func() bool { return total() >= 2*perLane })
	// Everything of the test has arrived: stopping the auto-ack consumer
	// now loses nothing of it.
	py.stop(t)
	seen := map[string]string{}
	for _, d := range goGot.list() {
		if prev, dup := seen[string(d.Body)]; dup {
			t.Errorf("%q arrived twice (%s, go)", d.Body, prev)
		}
		seen[string(d.Body)] = "go"
	}
	for _, msg := range py.all() {
		if prev, dup := seen[msg.Body]; dup {
			t.Errorf("%q arrived twice (%s, python)", msg.Body, prev)
		}
		seen[msg.Body] = "python"
	}
	for _, src := range []string{"go", "py"} {
		for i := range perLane {
			if _, ok := seen[fmt.Sprintf("%s-%s-%d", marker, src, i)]; !ok {
				t.Errorf("event %s-%d never arrived", src, i)
			}
		}
	}
	goN, _ := goGot.countMarked(marker)
	t.Logf("of %d events, the Go consumer received %d and the Python one %d", 2*perLane, goN, len(py.all()))
}

// TestPresetsMeetTheOriginal: the publisher presets ([AsyncPublisher] ...)
// are declared as the original declares them, in either order, so that a
// Go and a Python publisher left to their defaults both start.
func TestPresetsMeetTheOriginal(t *testing.T) {
	url, _ := setup(t, true)
	sections := []string{"AsyncPublisher", "SyncPublisher", "AsyncBroadcaster", "SyncBroadcaster", "AsyncRouter", "SyncRouter"}
	prefixes := []string{"asyncPublisher", "syncPublisher", "asyncBroadcaster", "syncBroadcaster", "asyncRouter", "syncRouter"}

	// Delete afterwards only what no one had declared before.
	exists := func(passive func(*amqp.Channel) error) bool {
		err := passive(raw(t))
		var ae *amqp.Error
		switch {
		case err == nil:
			return true
		case errors.As(err, &ae) && ae.Code == amqp.NotFound:
			return false
		}
		t.Fatalf("cannot tell whether a preset exists: %v", err)
		return false
	}
	var xs, qs []string
	for _, p := range prefixes {
		x, q := "omqs.default."+p+".exchange", "omqs.default."+p+".queue"
		if !exists(func(ch *amqp.Channel) error {
			return ch.ExchangeDeclarePassive(x, "topic", false, false, false, false, nil)
		}) {
			xs = append(xs, x)
		}
		if !exists(func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
			return err
		}) {
			qs = append(qs, q)
		}
	}
	fresh := len(xs) == len(prefixes) && len(qs) == len(prefixes)
	brokertest.Cleanup(t, xs, qs)

	startGo := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, sec := range sections {
			opts := goOpts(t, url, omqs.WithSection(sec))
			var start, stop func(context.Context) error
			if strings.HasPrefix(sec, "Sync") {
				p, err := omqs.NewSyncPublisher(opts...)
				if err != nil {
					t.Fatal(err)
				}
				start, stop = p.Start, p.Stop
			} else {
				p, err := omqs.NewAsyncPublisher(opts...)
				if err != nil {
					t.Fatal(err)
				}
				start, stop = p.Start, p.Stop
			}
			if err := start(ctx); err != nil {
				t.Fatalf("[%s] with its defaults: %v", sec, err)
			}
			if err := stop(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if fresh {
		// Go first, then Python.
		startGo(t)
		runPeer(t, url, "declare-presets")
		brokertest.Delete(t, xs, qs)
	}
	// Python first, then Go.
	runPeer(t, url, "declare-presets")
	startGo(t)
}

// TestPeerSpoolLines: with the broker away, peer.py writes the original's
// spool lines, "key:body" (an empty key for a default event), the format
// OMQS for Go finds in a folder shared with the original.
func TestPeerSpoolLines(t *testing.T) {
	python(t)
	dir := t.TempDir()
	const away = "amqp://guest:guest@127.0.0.1:1/"
	runPeer(t, away, "publish-events", "2", "ev-", "", dir)
	runPeer(t, away, "publish-events", "1", "keyed:", "signup", dir)
	runPeer(t, away, "publish-logs", "1", "log-", "error", dir)
	for file, want := range map[string]string{
		"backup.evt": ":ev-0\n:ev-1\nsignup:keyed:0\n",
		"backup.log": "error:log-0\n",
	} {
		got, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s:\n%q\nwant\n%q", file, got, want)
		}
	}
}
