package omqs

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faultproxy"
	"github.com/omqs-go/omqs/internal/lockedbuf"
	"github.com/omqs-go/omqs/internal/membroker"
	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

// Helpers shared by the package's tests, by subject.

// ---- Waiting, contexts, logs and configurations.

// waitUntil polls cond until it is true or timeout passes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// urlWithPassword returns the broker URL u with its password replaced by
// password, for tests of refused credentials. A URL without credentials has
// none to get wrong: the test is skipped, or fails with OMQS_REQUIRE_BROKER=1.
func urlWithPassword(t testing.TB, u, password string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatalf("broker URL %s: %v", transport.Redact(u), err)
	}
	if parsed.User == nil {
		if brokertest.Required() {
			t.Fatalf("broker URL %s has no credentials to get wrong", transport.Redact(u))
		}
		t.Skipf("broker URL %s has no credentials to get wrong", transport.Redact(u))
	}
	parsed.User = url.UserPassword(parsed.User.Username(), password)
	return parsed.String()
}

// spoolRecords returns the records of the spool file named file in dir. A
// missing file, or a line that is not a record, fails the test.
func spoolRecords(t testing.TB, dir, file string) []spool.Record {
	t.Helper()
	var recs []spool.Record
	bad, err := spool.Read(filepath.Join(dir, file), func(r spool.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Fatalf("spool file %s: %d line(s) are not records", file, bad)
	}
	return recs
}

// testConfig returns a Config whose workers use exchanges and a queue unique
// to the test on RabbitMQ (deleted afterwards) and whose spool folder is a
// temp dir.
func testConfig(t testing.TB) (*Config, brokertest.Names) {
	t.Helper()
	n := brokertest.NewNames(t)
	cfg := namedConfig(t, n)
	brokertest.Cleanup(t, []string{cfg.LogWorker.Exchange, cfg.EventWorker.Exchange}, nil)
	return cfg, n
}

// backendConfig is testConfig for the broker at url (see backends).
func backendConfig(t testing.TB, url string) (*Config, brokertest.Names) {
	t.Helper()
	n := testNames(t, url)
	cfg := namedConfig(t, n)
	cleanupOn(t, url, []string{cfg.LogWorker.Exchange, cfg.EventWorker.Exchange}, nil)
	return cfg, n
}

// namedConfig returns a Config whose workers use the names of n and whose
// spool folder is a temp dir.
func namedConfig(t testing.TB, n brokertest.Names) *Config {
	cfg := DefaultConfig()
	cfg.Log.Folder = t.TempDir()
	cfg.LogWorker.Exchange = n.Exchange + ".log"
	cfg.EventWorker.Exchange = n.Exchange + ".event"
	cfg.EventWorker.Queue = n.Queue
	cfg.EventWorker.Keys = []string{n.Key}
	cfg.Global.ReconnectInterval = 50 * time.Millisecond
	cfg.Global.ReconnectTimes = 3
	return cfg
}

// collector consumes from its own exclusive queue and keeps what arrives.
type collector struct {
	mu   sync.Mutex
	got  []amqp.Delivery
	ids  map[string]int
	done chan struct{}
	wg   sync.WaitGroup
}

// collect binds a fresh exclusive queue to exchange with pattern and collects
// deliveries until the test ends. The exchange must exist.
func collect(t testing.TB, url, exchange, pattern string) *collector {
	t.Helper()
	ch := backendChannel(t, url)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, pattern, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	return consumeQueue(t, ch, q.Name)
}

// consumeQueue collects the deliveries of an existing queue (automatically
// acknowledged) on ch.
func consumeQueue(t testing.TB, ch transport.Channel, queue string) *collector {
	t.Helper()
	ds, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{ids: map[string]int{}, done: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case d, ok := <-ds:
				if !ok {
					return
				}
				c.mu.Lock()
				c.got = append(c.got, d)
				c.ids[d.MessageId]++
				c.mu.Unlock()
			case <-c.done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(c.done); c.wg.Wait() })
	return c
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *collector) unique() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

func (c *collector) all() []amqp.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]amqp.Delivery(nil), c.got...)
}

func (c *collector) waitCount(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	waitUntil(t, timeout, "deliveries", func() bool { return c.count() >= n })
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// testLogger returns a logger writing to the test's log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// ---- Backends: every behaviour test runs on the in-process broker and on RabbitMQ.

// The behaviour tests of this package run once per backend: on the
// in-process broker (memory://) and on RabbitMQ. The same assertions hold on
// both, so the in-process broker cannot drift from the real thing. Tests that
// need what only a network broker has (a TCP proxy that cuts, stalls or
// refuses connections, TLS, credentials) run on RabbitMQ alone and say so.

// backend is a broker the behaviour tests run against.
type backend struct {
	name string
	// url returns the broker URL for one subtest. The memory backend gives
	// each subtest a broker of its own; the RabbitMQ backend skips the
	// subtest (or fails it, with OMQS_REQUIRE_BROKER=1) when no broker
	// answers, so that the memory half runs anywhere.
	url func(t *testing.T) string
}

// backends lists the brokers every behaviour test runs on: the in-process
// broker first, then RabbitMQ.
func backends() []backend {
	return []backend{
		{name: "memory", url: func(t *testing.T) string { return memoryURL(t) }},
		{name: "rabbitmq", url: func(t *testing.T) string { return brokertest.URL(t) }},
	}
}

// forEachBackend runs behaviour as one subtest per backend.
func forEachBackend(t *testing.T, behaviour func(t *testing.T, url string)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) { behaviour(t, b.url(t)) })
	}
}

// memoryURL returns the URL of an in-process broker no other test uses. When
// the test ends, every connection to it must be closed (a client that
// leaves one open fails the test); then the broker is emptied.
func memoryURL(t testing.TB) string {
	t.Helper()
	name := brokertest.Unique("omqs-test")
	b := membroker.Get(name)
	t.Cleanup(func() {
		if n := b.Connections(); n != 0 {
			t.Errorf("%d connection(s) to memory://%s still open when the test ended", n, name)
		}
		b.Reset()
	})
	return "memory://" + name
}

// isMemory reports whether url names the in-process broker.
func isMemory(url string) bool { return strings.HasPrefix(url, "memory://") }

// testNames returns an exchange, a queue and a key unique to the test. On
// RabbitMQ they are deleted when the test ends; a memory broker is the
// test's own and emptied anyway.
func testNames(t testing.TB, url string) brokertest.Names {
	t.Helper()
	if isMemory(url) {
		return brokertest.Names{
			Exchange: brokertest.Unique("omqs.test.x"),
			Queue:    brokertest.Unique("omqs.test.q"),
			Key:      brokertest.Unique("omqs.test.k"),
		}
	}
	return brokertest.NewNames(t)
}

// cleanupOn deletes exchanges and queues from RabbitMQ when the test ends;
// on a memory broker it does nothing.
func cleanupOn(t testing.TB, url string, exchanges, queues []string) {
	t.Helper()
	if !isMemory(url) {
		brokertest.Cleanup(t, exchanges, queues)
	}
}

// backendChannel opens a channel through the transport seam, on a
// connection of its own that is closed when the test ends, for declarations
// and assertions on the broker's state.
func backendChannel(t testing.TB, url string) testChannel {
	t.Helper()
	eps, err := transport.ParseURLs(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := transport.Dial(ctx, eps[0], transport.DialOptions{Name: "omqs test " + t.Name()})
	if err != nil {
		t.Fatalf("backendChannel: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseDeadline(time.Now().Add(time.Second)) })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("backendChannel: %v", err)
	}
	tc, ok := ch.(testChannel)
	if !ok {
		t.Fatalf("backendChannel: %T cannot inspect or delete what is declared", ch)
	}
	return tc
}

// testChannel is the transport seam's Channel with the methods that only
// tests use, to inspect the broker and clean up after themselves. Both
// implementations (*amqp091.Channel, *membroker.Channel) have them.
type testChannel interface {
	transport.Channel
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	ExchangeDelete(name string, ifUnused, noWait bool) error
	QueueDeclarePassive(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueDelete(name string, ifUnused, ifEmpty, noWait bool) (int, error)
	QueueUnbind(name, key, exchange string, args amqp.Table) error
}

var (
	_ testChannel = (*amqp.Channel)(nil)
	_ testChannel = (*membroker.Channel)(nil)
)

// queueDepth returns how many ready messages queue holds, by a passive
// declare on ch. A missing queue fails the test.
func queueDepth(t testing.TB, ch testChannel, queue string) int {
	t.Helper()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("passive declare of queue %s: %v", queue, err)
	}
	return q.Messages
}

// wantDepth fails the test unless queue on the broker at url holds want
// ready messages.
func wantDepth(t testing.TB, url, queue string, want int) {
	t.Helper()
	if got := queueDepth(t, backendChannel(t, url), queue); got != want {
		t.Fatalf("queue %s on %s holds %d ready messages, want %d", queue, transport.Redact(url), got, want)
	}
}

// ---- Consumers.

// runner is what every consumer type offers.
type runner interface {
	Run(ctx context.Context) error
	Stop(ctx context.Context) error
	Ready() bool
	SetCallback(cb Callback)
}

var (
	_ runner = (*SyncConsumer)(nil)
	_ runner = (*AsyncConsumer)(nil)
	_ runner = (*LogMsgConsumer)(nil)
	_ runner = (*EventMsgConsumer)(nil)
)

// consumerLogger returns a logger writing to a buffer, which is printed when the
// test fails.
func consumerLogger(t *testing.T) (*slog.Logger, *lockedbuf.Buffer) {
	t.Helper()
	b := &lockedbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("consumer log:\n%s", b.String())
		}
	})
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// baseOpts pins the configuration to the defaults (whatever OMQS.cfg or
// $OMQS_CONFIG say), the broker to url and the log to l.
func baseOpts(url string, l *slog.Logger, more ...Option) []Option {
	return append([]Option{
		WithConfig(DefaultConfig()), WithURL(url), WithLogger(l),
		WithReconnect(200*time.Millisecond, 5),
	}, more...)
}

// namedOpts are baseOpts with the unique names of n.
func namedOpts(url string, l *slog.Logger, n brokertest.Names, more ...Option) []Option {
	return baseOpts(url, l, append([]Option{
		WithExchange(n.Exchange, "topic", false), WithQueue(n.Queue), WithKeys(n.Key),
	}, more...)...)
}

// running is a consumer whose Run runs on its own goroutine.
type running struct {
	c      runner
	cancel context.CancelFunc // ends Run's context
	done   chan struct{}
	err    error
}

// wait waits for Run to return and returns its result.
func (r *running) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(timeout):
		t.Fatalf("Run did not return within %v", timeout)
		return nil
	}
}

// startRun runs c in the background until the test ends (then stops it) and
// waits until it is ready.
func startRun(t *testing.T, c runner) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = c.Run(ctx)
	}()
	t.Cleanup(func() {
		defer cancel()
		select {
		case <-r.done:
			return // the test stopped it and checked the results
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		if err := r.wait(t, 15*time.Second); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitUntil(t, 15*time.Second, "the consumer to be ready", func() bool {
		select {
		case <-r.done:
			t.Fatalf("Run returned before the consumer was ready: %v", r.err)
		default:
		}
		return c.Ready()
	})
	return r
}

// runConsumer builds a consumer with build and opts, and runs it as
// startRun does.
func runConsumer[C runner](t *testing.T, build func(...Option) (C, error), opts ...Option) *running {
	t.Helper()
	c, err := build(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return startRun(t, c)
}

// logConsumerFor is NewLogMsgConsumer with its keys given, for runConsumer.
func logConsumerFor(keys ...string) func(...Option) (*LogMsgConsumer, error) {
	return func(opts ...Option) (*LogMsgConsumer, error) { return NewLogMsgConsumer(keys, opts...) }
}

// stopNow stops c and checks that Stop and Run succeed.
func stopNow(t *testing.T, r *running) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := r.wait(t, 15*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r.c.Ready() {
		t.Fatal("Ready() is true after Stop")
	}
}

// publishTo publishes bodies under key to exchange (declared as kind,
// durable) through a SyncPublisher, each confirmed.
func publishTo(t testing.TB, url, exchange, kind string, durable bool, key string, bodies ...string) {
	t.Helper()
	p, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(slog.New(slog.DiscardHandler)),
		WithExchange(exchange, kind, durable), WithQueue(""), WithKeys(key))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range bodies {
		if err := p.Publish(ctx, key, []byte(b)); err != nil {
			t.Fatalf("publish %q: %v", b, err)
		}
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// recorder keeps the deliveries a callback saw.
type recorder struct {
	mu   sync.Mutex
	seen []Delivery
}

func (c *recorder) add(d Delivery) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, d)
}

func (c *recorder) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *recorder) all() []Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Delivery(nil), c.seen...)
}

func (c *recorder) keys() []string {
	var ks []string
	for _, d := range c.all() {
		ks = append(ks, d.RoutingKey)
	}
	return ks
}

func (c *recorder) callback(ctx context.Context, d Delivery) error {
	c.add(d)
	return nil
}

// ---- Managers, and brokers behind a fault-injecting proxy.

func startManager(t *testing.T, opts ...Option) *Manager {
	t.Helper()
	m, err := NewManager(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Stop(context.Background()) })
	return m
}

// blockingWorker holds every message until release is closed.
type blockingWorker struct {
	release chan struct{}
	mu      sync.Mutex
	got     []Message
	calls   []string
}

func (w *blockingWorker) WorkerWillRun(context.Context) error {
	w.mu.Lock()
	w.calls = append(w.calls, "run")
	w.mu.Unlock()
	return nil
}

func (w *blockingWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	select {
	case <-w.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	w.mu.Lock()
	w.got = append(w.got, msg)
	w.mu.Unlock()
	return nil
}

// bodies returns the bodies of the messages the worker delivered.
func (w *blockingWorker) bodies() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.got {
		out = append(out, string(m.Body))
	}
	return out
}

func (w *blockingWorker) WorkerWillStop(context.Context) error {
	w.mu.Lock()
	w.calls = append(w.calls, "stop")
	w.mu.Unlock()
	return nil
}

func newProxy(t testing.TB, brokerURL string) *faultproxy.Proxy {
	t.Helper()
	u, err := amqp.ParseURI(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := faultproxy.New(fmt.Sprintf("%s:%d", u.Host, u.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func proxyURL(brokerURL string, p *faultproxy.Proxy) string {
	u, _ := amqp.ParseURI(brokerURL)
	u.Host, u.Port = strings.Split(p.Addr(), ":")[0], atoiPort(p.Addr())
	return u.String()
}

func atoiPort(addr string) int {
	var port int
	fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &port)
	return port
}

// breakable returns the URL clients should use so that the test can close
// their connections under them, and the function that does it: on the
// in-process broker, the broker closes every connection (320
// CONNECTION_FORCED, as `rabbitmqctl close_all_connections` would); on
// RabbitMQ, a TCP proxy in front of it cuts them.
func breakable(t *testing.T, url string) (clientURL string, cut func()) {
	t.Helper()
	if isMemory(url) {
		b := membroker.Get(strings.TrimPrefix(url, "memory://"))
		return url, func() { b.CloseAllConnections("closed by the test") }
	}
	p := newProxy(t, url)
	return proxyURL(url, p), p.Cut
}

// ---- Publishers.

// startedPublisher builds a publisher with build and opts and starts it.
func startedPublisher[P interface{ Start(context.Context) error }](t *testing.T, ctx context.Context,
	build func(...Option) (P, error), opts ...Option) P {
	t.Helper()
	p, err := build(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return p
}

// declareNackingQueue declares n's direct exchange and a queue bound to it
// with n.Key that holds one message and refuses the next, so that the broker
// nacks it.
func declareNackingQueue(t *testing.T, url string, n brokertest.Names) {
	t.Helper()
	ch := backendChannel(t, url)
	if err := ch.ExchangeDeclare(n.Exchange, "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// A queue that holds one message and refuses the next: the broker nacks it.
	if _, err := ch.QueueDeclare(n.Queue, false, false, false, false, amqp.Table{"x-max-length": 1, "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(n.Queue, n.Key, n.Exchange, false, nil); err != nil {
		t.Fatal(err)
	}
}
