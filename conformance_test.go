package omqs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// The tests below check, through the public API, the broker behaviour OMQS
// relies on, on both backends.

// TestCompetingConsumersRoundRobin: consumers of one queue share its
// messages, one each in turn.
func TestCompetingConsumersRoundRobin(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testCompetingConsumersRoundRobin)
}

func testCompetingConsumersRoundRobin(t *testing.T, url string) {
	cfg, n := backendConfig(t, url)
	cfg.EventConsumer.Exchange, cfg.EventConsumer.Queue, cfg.EventConsumer.Keys = cfg.EventWorker.Exchange, n.Queue, []string{n.Key}
	l, _ := consumerLogger(t)
	var mu sync.Mutex
	var order []int // order[k] is the consumer that got message k
	var consumers []*running
	for i := range 2 {
		consumers = append(consumers, runConsumer(t, NewEventMsgConsumer,
			WithConfig(cfg), WithURL(url), WithLogger(l), WithName(fmt.Sprint("competing ", i)),
			WithCallback(func(_ context.Context, d Delivery) error {
				var k int
				if _, err := fmt.Sscanf(string(d.Body), "event %d", &k); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				for len(order) <= k {
					order = append(order, -1)
				}
				order[k] = i
				return nil
			})))
	}
	// One message at a time (each confirmed before the next), so that each
	// reaches the queue when both consumers wait.
	const N = 20
	var bodies []string
	for k := range N {
		bodies = append(bodies, fmt.Sprint("event ", k))
	}
	publishTo(t, url, cfg.EventWorker.Exchange, "topic", true, n.Key, bodies...)
	got := func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), order...)
	}
	waitUntil(t, 10*time.Second, "every message", func() bool { return len(got()) == N && !slices.Contains(got(), -1) })
	for _, r := range consumers {
		stopNow(t, r)
	}
	o := got()
	for k := 1; k < N; k++ {
		if o[k] == o[k-1] {
			t.Fatalf("messages %d and %d both went to consumer %d (%v), want them in turn", k-1, k, o[k], o)
		}
	}
	wantDepth(t, url, n.Queue, 0)
}

// TestExchangeTypesRouteToConsumers: a fanout exchange gives every message
// to every bound queue, a direct exchange by the exact key, a topic
// exchange by pattern.
func TestExchangeTypesRouteToConsumers(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testExchangeTypesRouteToConsumers)
}

func testExchangeTypesRouteToConsumers(t *testing.T, url string) {
	cases := []struct {
		kind string
		keys [2]string // the two queues' binding keys
		want [2]string // the keys each queue receives, of a, b, a.b
	}{
		{"fanout", [2]string{"", "ignored"}, [2]string{"a,b,a.b", "a,b,a.b"}},
		{"direct", [2]string{"a", "a.b"}, [2]string{"a", "a.b"}},
		{"topic", [2]string{"*", "a.#"}, [2]string{"a,b", "a,a.b"}},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			n := testNames(t, url)
			l, _ := consumerLogger(t)
			recs := [2]*recorder{{}, {}}
			var runs []*running
			for i := range 2 {
				q := fmt.Sprint(n.Queue, ".", i)
				cleanupOn(t, url, nil, []string{q})
				runs = append(runs, runConsumer(t, NewSyncConsumer, baseOpts(url, l, WithExchange(n.Exchange, tc.kind, false), WithQueue(q),
					WithKeys(tc.keys[i]), WithCallback(recs[i].callback))...))
			}
			p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(l),
				WithExchange(n.Exchange, tc.kind, false), WithQueue(""), WithMandatory(false))
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t, 20*time.Second)
			if err := p.Start(ctx); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"a", "b", "a.b"} {
				if err := p.Publish(ctx, k, []byte(k)); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if st := p.Stats(); st.Confirmed != 3 {
				t.Fatalf("publisher stats %+v, want 3 confirmed", st)
			}
			// Routed when confirmed: once the consumers stopped, what they
			// took plus what is left in their queues is what matched.
			for i, want := range tc.want {
				waitUntil(t, 10*time.Second, "the deliveries", func() bool { return recs[i].len() == strings.Count(want, ",")+1 })
			}
			for i, r := range runs {
				stopNow(t, r)
				ch := backendChannel(t, url)
				if depth := queueDepth(t, ch, fmt.Sprint(n.Queue, ".", i)); depth != 0 {
					t.Errorf("queue %d holds %d more messages", i, depth)
				}
				var got []string
				for _, d := range recs[i].all() {
					got = append(got, string(d.Body))
				}
				if strings.Join(got, ",") != tc.want[i] {
					t.Errorf("queue %d bound with %q got %v, want %s", i, tc.keys[i], got, tc.want[i])
				}
			}
		})
	}
}

// TestConsumerPrefetchBoundsUnacked: a consumer holds at most PREFETCH
// unacknowledged deliveries; the rest wait in the queue.
func TestConsumerPrefetchBoundsUnacked(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerPrefetchBoundsUnacked)
}

func testConsumerPrefetchBoundsUnacked(t *testing.T, url string) {
	const prefetch, N = 3, 10
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	release := make(chan struct{})
	var calls atomic.Int32
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithPrefetch(prefetch), WithCallback(func(ctx context.Context, d Delivery) error {
		calls.Add(1)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))...)
	var bodies []string
	for i := range N {
		bodies = append(bodies, fmt.Sprint("held ", i))
	}
	// The consumer is subscribed before the publishes: without a bound,
	// each message would leave the queue as soon as it arrived.
	publishTo(t, url, n.Exchange, "topic", false, n.Key, bodies...)
	ch := backendChannel(t, url)
	waitUntil(t, 10*time.Second, fmt.Sprintf("%d messages to wait in the queue", N-prefetch), func() bool {
		return queueDepth(t, ch, n.Queue) == N-prefetch
	})
	// A delivery leaves the queue before its callback starts: wait for the
	// callback, then check that no more than the prefetch left the queue.
	waitUntil(t, 10*time.Second, "the first callback", func() bool { return calls.Load() >= 1 })
	wantDepth(t, url, n.Queue, N-prefetch)
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d callbacks ran, want 1 (a SyncConsumer holds one delivery in its callback)", got)
	}
	close(release)
	waitUntil(t, 10*time.Second, "every message", func() bool { return calls.Load() == N })
	stopNow(t, r)
	wantDepth(t, url, n.Queue, 0)
}

// preconditionFailed checks that err is the broker's 406 refusal of a
// declaration, named in the text and reachable with errors.As, wrapping want.
func preconditionFailed(t *testing.T, what string, err, want error) {
	t.Helper()
	var ae *amqp.Error
	switch {
	case err == nil:
		t.Errorf("%s: succeeded, want 406 PRECONDITION_FAILED", what)
	case !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed:
		t.Errorf("%s: %v, want an *amqp091.Error with code 406", what, err)
	case !strings.Contains(err.Error(), "PRECONDITION_FAILED"):
		t.Errorf("%s: %q does not name PRECONDITION_FAILED", what, err)
	case !errors.Is(err, want):
		t.Errorf("%s: %v does not wrap %v", what, err, want)
	}
}

// TestRedeclareInequivalentFails: declaring an existing exchange with another
// type or durability, or an existing queue with another durability, fails at
// once with the broker's 406 PRECONDITION_FAILED. Only that publisher,
// consumer or Manager fails; the clients whose declarations match go on.
func TestRedeclareInequivalentFails(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testRedeclareInequivalentFails)
}

func testRedeclareInequivalentFails(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	// A consumer declares the exchange (topic, durable) and the queue (durable).
	rec := &recorder{}
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithExchange(n.Exchange, "topic", true), WithQueueDurable(true),
		WithCallback(rec.callback))...)

	quick := func(what string, f func(ctx context.Context) error) error {
		t.Helper()
		ctx := testCtx(t, 30*time.Second)
		start := time.Now()
		err := f(ctx)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v to fail", what, d)
		}
		return err
	}
	publisher := func(opts ...Option) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			p, err := NewAsyncPublisher(append([]Option{WithConfig(DefaultConfig()), WithURL(url), WithLogger(l)}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Start(ctx)
			if serr := p.Stop(ctx); serr != nil {
				t.Errorf("Stop after a failed Start: %v", serr)
			}
			return err
		}
	}
	preconditionFailed(t, "publisher declaring the exchange fanout",
		quick("Start", publisher(WithExchange(n.Exchange, "fanout", true), WithQueue(""))), ErrInvalidChannel)
	preconditionFailed(t, "publisher declaring the exchange not durable",
		quick("Start", publisher(WithExchange(n.Exchange, "topic", false), WithQueue(""))), ErrInvalidChannel)
	preconditionFailed(t, "publisher declaring the queue not durable",
		quick("Start", publisher(WithExchange(n.Exchange, "topic", true), WithQueue(n.Queue), WithQueueDurable(false), WithKeys(n.Key))), ErrInvalidQueue)
	preconditionFailed(t, "consumer declaring the exchange direct", quick("Run", func(ctx context.Context) error {
		c, err := NewSyncConsumer(baseOpts(url, l, WithExchange(n.Exchange, "direct", true), WithQueue(""))...)
		if err != nil {
			t.Fatal(err)
		}
		return c.Run(ctx)
	}), ErrInvalidChannel)
	preconditionFailed(t, "Manager declaring the event exchange fanout", quick("Start", func(ctx context.Context) error {
		cfg, _ := backendConfig(t, url)
		cfg.EventWorker.Exchange, cfg.EventWorker.ExchangeType = n.Exchange, "fanout"
		m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(l))
		if err != nil {
			t.Fatal(err)
		}
		err = m.Start(ctx)
		if serr := m.Stop(ctx); serr != nil {
			t.Errorf("Stop after a failed Start: %v", serr)
		}
		return err
	}), ErrInvalidChannel)

	// The consumer whose declarations came first is untouched, and a
	// publisher with matching declarations works.
	if !r.c.Ready() {
		t.Fatal("the first consumer is not ready any more")
	}
	publishTo(t, url, n.Exchange, "topic", true, n.Key, "still flowing")
	waitUntil(t, 10*time.Second, "the message", func() bool { return rec.len() == 1 })
	stopNow(t, r)
}

// TestUnroutableMessagesVanish: a message no queue is bound to receive is
// confirmed and dropped by the broker when it is not mandatory (so are logs
// nobody consumes); nothing delivers it later to a queue bound afterwards.
func TestUnroutableMessagesVanish(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testUnroutableMessagesVanish)
}

func testUnroutableMessagesVanish(t *testing.T, url string) {
	cfg, _ := backendConfig(t, url)
	l, _ := consumerLogger(t)
	var returns atomic.Int32
	onReturn := WithReturnHandler(func(Returned) { returns.Add(1) })
	ctx := testCtx(t, 20*time.Second)
	x := cfg.LogWorker.Exchange

	// Logs with no log consumer: the Manager's log lane is not mandatory.
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(l), onReturn)
	if err := m.SendInfo("nobody reads this"); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats().Logs; st.Confirmed != 1 || st.Returned != 0 || st.Nacked != 0 {
		t.Fatalf("log stats %+v, want 1 confirmed and nothing returned", st)
	}

	// A SyncPublisher (not mandatory by default) and an AsyncPublisher made
	// not mandatory: Publish and Flush succeed, the broker confirms.
	sp, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(l), onReturn,
		WithExchange(x, "topic", true), WithQueue(""))
	if err != nil {
		t.Fatal(err)
	}
	ap, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(l), onReturn,
		WithExchange(x, "topic", true), WithQueue(""), WithMandatory(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ap.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sp.Publish(ctx, "info", []byte("sync, unroutable")); err != nil {
		t.Fatalf("SyncPublisher: %v, want the broker's confirm", err)
	}
	if err := ap.Publish(ctx, "info", []byte("async, unroutable")); err != nil {
		t.Fatal(err)
	}
	if err := ap.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]LaneStats{"SyncPublisher": sp.Stats(), "AsyncPublisher": ap.Stats()} {
		if st.Confirmed != 1 || st.Returned != 0 || st.Nacked != 0 {
			t.Errorf("%s stats %+v, want 1 confirmed and nothing returned", name, st)
		}
	}

	// A queue bound now receives what is published from now on, and only that.
	rec := &recorder{}
	r := runConsumer(t, logConsumerFor("#"), baseOpts(url, l, WithQueue(""), WithExchange(x, "topic", true),
		WithCallback(rec.callback))...)
	if err := sp.Publish(ctx, "info", []byte("marker")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the marker", func() bool { return rec.len() >= 1 })
	stopNow(t, r)
	for _, p := range []interface{ Stop(context.Context) error }{sp, ap} {
		if err := p.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, d := range rec.all() {
		got = append(got, string(d.Body))
	}
	if len(got) != 1 || got[0] != "marker" {
		t.Fatalf("the queue bound afterwards got %q, want only the marker", got)
	}
	if n := returns.Load(); n != 0 {
		t.Fatalf("%d returns reported for non-mandatory publishes", n)
	}
}

// TestMemoryBrokersAreSeparate: clients with the same memory URL share one
// broker; memory://A, memory://B and memory:// are three brokers.
func TestMemoryBrokersAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := memoryURL(t), memoryURL(t)
	cfg, n := backendConfig(t, a)
	l, _ := consumerLogger(t)
	recs := map[string]*recorder{}
	var runs []*running
	t.Cleanup(func() {
		// memory:// lives as long as the process: remove what the test put there.
		ch := backendChannel(t, "memory://")
		if _, err := ch.QueueDelete(n.Queue, false, false, false); err != nil {
			t.Errorf("delete queue: %v", err)
		}
		if err := ch.ExchangeDelete(cfg.EventWorker.Exchange, false, false); err != nil {
			t.Errorf("delete exchange: %v", err)
		}
	})
	for _, url := range []string{a, b, "memory://"} {
		// The same names everywhere: the Manager's event path.
		rec := &recorder{}
		recs[url] = rec
		runs = append(runs, runConsumer(t, NewSyncConsumer, baseOpts(url, l, WithExchange(cfg.EventWorker.Exchange, "topic", true),
			WithQueue(n.Queue), WithQueueDurable(true), WithKeys(n.Key), WithCallback(rec.callback))...))
	}
	m := startManager(t, WithConfig(cfg), WithURL(a), WithLogger(l))
	for i := range 3 {
		if err := m.SendEvent(fmt.Sprint("on A ", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats().Events; st.Confirmed != 3 || st.Returned != 0 {
		t.Fatalf("event stats %+v", st)
	}
	waitUntil(t, 10*time.Second, "the events on A", func() bool { return recs[a].len() == 3 })
	for _, r := range runs {
		stopNow(t, r)
	}
	for _, url := range []string{b, "memory://"} {
		if got := recs[url].len(); got != 0 {
			t.Errorf("%s: the consumer got %d events sent to %s", url, got, a)
		}
		wantDepth(t, url, n.Queue, 0)
	}
	if recs[a].len() != 3 {
		t.Errorf("%s: the consumer got %d events, want 3", a, recs[a].len())
	}
}

// TestConfigFileMemoryURL: MQURL=memory:// in a configuration file runs
// the Manager and the consumers on the in-process broker.
func TestConfigFileMemoryURL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	x, q, k := brokertest.Unique("omqs.test.cfg.x"), brokertest.Unique("omqs.test.cfg.q"), brokertest.Unique("omqs.test.cfg.k")
	path := filepath.Join(dir, "OMQS.cfg")
	cfgText := fmt.Sprintf(`[Global]
MQURL=memory://
RECONNECT_INTERVAL=0.05
[Log]
FOLDER=%s
LEVEL=ERROR
[LogWorker]
EXCHANGE=%[2]s.log
[EventWorker]
EXCHANGE=%[2]s
QUEUE=%[3]s
KEYS=%[4]s
[EventConsumer]
EXCHANGE=%[2]s
QUEUE=%[3]s
KEYS=%[4]s
`, dir, x, q, k)
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ch := backendChannel(t, "memory://")
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Errorf("delete queue: %v", err)
		}
		for _, name := range []string{x, x + ".log"} {
			if err := ch.ExchangeDelete(name, false, false); err != nil {
				t.Errorf("delete exchange: %v", err)
			}
		}
	})
	rec := &recorder{}
	r := runConsumer(t, NewEventMsgConsumer, WithConfigFile(path), WithCallback(rec.callback))
	m := startManager(t, WithConfigFile(path))
	if err := m.SendEvent("configured in a file", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the event", func() bool { return rec.len() == 1 })
	stopNow(t, r)
	if d := rec.all()[0]; string(d.Body) != "configured in a file" || d.Exchange != x || d.RoutingKey != k {
		t.Fatalf("delivery %+v", d)
	}
	// The queue is on the in-process broker (an amqp:// URL would have put it elsewhere).
	if _, err := backendChannel(t, "memory://").QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
		t.Fatalf("the event queue is not on memory://: %v", err)
	}
}
