package omqs

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

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
