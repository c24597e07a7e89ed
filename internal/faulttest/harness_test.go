package faulttest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faultproxy"
	"github.com/omqs-go/omqs/internal/faulttest"
	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// namePrefix starts the connection name of every client these tests make, so
// that OMQS_FAULT_OWN_ONLY=1 can find them.
const namePrefix = "omqs-faults"

// logSink is a slog handler that keeps the library's log lines (printed when
// the test fails) and counts the "connection lost" lines of each publisher,
// which mark when a publisher saw a fault.
type logSink struct {
	slog.Handler
	buf    *lockedbuf.Buffer
	mu     *sync.Mutex
	losses map[string]int // by publisher name
}

func newLogSink(t testing.TB) *logSink {
	buf := &lockedbuf.Buffer{}
	s := &logSink{
		Handler: slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}),
		buf:     buf, mu: &sync.Mutex{}, losses: map[string]int{},
	}
	t.Cleanup(func() {
		if t.Failed() {
			out := s.buf.String()
			const max = 200 << 10
			if len(out) > max {
				out = "...\n" + out[len(out)-max:]
			}
			t.Logf("library log:\n%s", out)
		}
	})
	return s
}

func (s *logSink) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "omqs: connection lost") {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "publisher" {
				s.mu.Lock()
				s.losses[a.Value.String()]++
				s.mu.Unlock()
				return false
			}
			return true
		})
	}
	return s.Handler.Handle(ctx, r)
}

func (s *logSink) WithAttrs(as []slog.Attr) slog.Handler {
	c := *s
	c.Handler = s.Handler.WithAttrs(as)
	return &c
}

func (s *logSink) WithGroup(name string) slog.Handler {
	c := *s
	c.Handler = s.Handler.WithGroup(name)
	return &c
}

// lost returns how many times publisher name lost its connection.
func (s *logSink) lost(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.losses[name]
}

// withParams returns rawURL with query parameters added and, when hostPort is
// not "", its host and port replaced.
func withParams(t testing.TB, rawURL, hostPort string, params url.Values) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	if hostPort != "" {
		u.Host = hostPort
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// newProxy starts a fault proxy in front of the broker at brokerURL.
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

// idSet counts deliveries by message id and remembers which sequence numbers
// (parsed from the body) arrived.
type idSet struct {
	mu          sync.Mutex
	ids         map[string]int
	seqs        []bool
	total       int
	redelivered int
	progress    atomic.Uint64 // total, readable without the lock
}

func newIDSet(n int) *idSet { return &idSet{ids: make(map[string]int, n), seqs: make([]bool, n)} }

func (s *idSet) add(id string, body []byte, redelivered bool) {
	seq, ok := parseSeq(body)
	s.mu.Lock()
	s.ids[id]++
	s.total++
	if redelivered {
		s.redelivered++
	}
	if ok && seq < len(s.seqs) {
		s.seqs[seq] = true
	}
	s.mu.Unlock()
	s.progress.Add(1)
}

// counts returns the deliveries and the distinct message ids.
func (s *idSet) counts() (total, unique int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total, len(s.ids)
}

func (s *idSet) unique() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// missing returns up to max sequence numbers that were accepted but did not
// arrive, and how many there are.
func (s *idSet) missing(accepted []bool, max int) (some []int, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, a := range accepted {
		if a && !s.seqs[i] {
			n++
			if len(some) < max {
				some = append(some, i)
			}
		}
	}
	return some, n
}

// body returns the text of message seq of a stream: a sequence number that
// parseSeq reads back, padded to about size bytes like a log line.
func body(stream string, seq, size int) string {
	s := fmt.Sprintf("seq=%08d stream=%s ", seq, stream)
	if pad := size - len(s); pad > 0 {
		s += strings.Repeat("x", pad)
	}
	return s
}

func parseSeq(b []byte) (int, bool) {
	const prefix = "seq="
	if len(b) < len(prefix)+8 || string(b[:len(prefix)]) != prefix {
		return 0, false
	}
	n, err := strconv.Atoi(string(b[len(prefix) : len(prefix)+8]))
	return n, err == nil
}

// collector consumes a queue with a plain amqp091 client, acknowledging each
// delivery after recording it, and reconnects after every fault (it is one
// of the connections close_all_connections and stop_app break).
type collector struct {
	url, queue, name string
	got              *idSet
	conns            atomic.Int32
	stop             chan struct{}
	done             chan struct{}
}

// startCollector consumes queue until the test ends.
func startCollector(t testing.TB, brokerURL, queue, name string, expect int) *collector {
	t.Helper()
	c := &collector{url: brokerURL, queue: queue, name: name, got: newIDSet(expect),
		stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan struct{})
	go c.run(ready)
	t.Cleanup(func() {
		close(c.stop)
		<-c.done
	})
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatalf("collector: not consuming %s after 30s", queue)
	}
	return c
}

func (c *collector) run(ready chan struct{}) {
	defer close(c.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c.session(ready)
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
	}
}

// session consumes on one connection until it breaks or the collector stops.
func (c *collector) session(ready chan struct{}) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(c.name)
	conn, err := amqp.DialConfig(c.url, amqp.Config{Properties: props, Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if err := ch.Qos(2000, 0, false); err != nil {
		return
	}
	ds, err := ch.Consume(c.queue, "", false, false, false, false, nil)
	if err != nil {
		return
	}
	if c.conns.Add(1) == 1 {
		close(ready)
	}
	for {
		select {
		case d, ok := <-ds:
			if !ok {
				return
			}
			c.got.add(d.MessageId, d.Body, d.Redelivered)
			if err := d.Ack(false); err != nil {
				return
			}
		case <-c.stop:
			return
		}
	}
}

// declareQueue declares a queue bound to a durable topic exchange (both
// deleted when the test ends), as a plain client would before the run.
func declareQueue(t testing.TB, exchange, queue, key string, durable bool) {
	t.Helper()
	ch := brokertest.Channel(t)
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, durable, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	brokertest.Cleanup(t, []string{exchange}, []string{queue})
}

// envInt reads a positive integer from the environment.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q is not a positive integer", name, v)
	}
	return n
}

// hold keeps a fault in place for d: the fault's length is part of the
// scenario, not a wait for a condition.
func hold(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

// testConfig returns a Config whose workers use names unique to the test and
// whose spool folder is a temporary directory.
func testConfig(t testing.TB) (*omqs.Config, brokertest.Names) {
	t.Helper()
	n := brokertest.NewNames(t)
	cfg := omqs.DefaultConfig()
	cfg.Log.Folder = t.TempDir()
	cfg.LogWorker.Exchange = n.Exchange + ".log"
	cfg.EventWorker.Exchange = n.Exchange + ".event"
	cfg.EventWorker.Queue = n.Queue
	cfg.EventWorker.Keys = []string{n.Key}
	cfg.Global.ReconnectInterval = 200 * time.Millisecond
	cfg.Global.ReconnectTimes = 25
	brokertest.Cleanup(t, []string{cfg.LogWorker.Exchange, cfg.EventWorker.Exchange}, nil)
	return cfg, n
}

// stopCtx returns a context for a Stop at the end of a test.
func stopCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var _ = faulttest.Enabled
