package omqs

import (
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

// killer closes every connection to the in-process broker name as soon as
// it opens, until stopped, and counts the connections it closed: each is a
// session that died young.
type killer struct {
	closed atomic.Int64
	stop   chan struct{}
	done   chan struct{}
}

func killConnections(t *testing.T, name string) *killer {
	t.Helper()
	k := &killer{stop: make(chan struct{}), done: make(chan struct{})}
	b := membroker.Get(name)
	go func() {
		defer close(k.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-k.stop:
				return
			case <-tick.C:
			}
			if n := b.Connections(); n > 0 {
				b.CloseAllConnections("killed by the test")
				k.closed.Add(int64(n))
			}
		}
	}()
	t.Cleanup(k.end)
	return k
}

// end stops the killer and waits for it.
func (k *killer) end() {
	select {
	case <-k.stop:
	default:
		close(k.stop)
	}
	<-k.done
}

// TestConsumerBacksOffAfterYoungSessions: a consumer whose connection is
// closed as soon as it opens (as a delivery amqp091 cannot parse does)
// waits RECONNECT_INTERVAL, then twice as long each time, instead of
// reconnecting at once; after a few it says what may be happening.
func TestConsumerBacksOffAfterYoungSessions(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	l, buf := consumerLogger(t)
	opts := namedOpts(url, l, n, WithReconnect(20*time.Millisecond, 0))
	runConsumer(t, NewSyncConsumer, opts...)

	k := killConnections(t, strings.TrimPrefix(url, "memory://"))
	start := time.Now()
	waitUntil(t, 10*time.Second, "5 sessions closed", func() bool { return k.closed.Load() >= 5 })
	// 20+40+80+160 ms between them at least; at once, it takes a few ms.
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("5 sessions closed within %v: the consumer reconnects without waiting", took)
	}
	waitUntil(t, 10*time.Second, "the report of sessions dying young", func() bool {
		return strings.Contains(buf.String(), "times in a row within 1s of opening")
	})
	k.end()
	if got := k.closed.Load(); got > 8 {
		t.Fatalf("%d sessions closed, want a handful", got)
	}
}

// TestEngineQuarantinesRefusedPublish: a message the broker refuses by
// closing the channel (here 404, for an exchange that does not exist) is
// set aside in FILE.quarantine, counted and reported once; the messages
// around it are all delivered, and it is not republished forever.
func TestEngineQuarantinesRefusedPublish(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		n := testNames(t, url)
		missing := n.Exchange + ".missing"
		cleanupOn(t, url, []string{n.Exchange}, nil)
		c := engineConfigFor(t, url, 0, nil)
		c.topo = topology{exchange: n.Exchange, kind: "topic"}
		c.window = 256
		var reports []error
		var mu sync.Mutex
		c.onError = func(err error) {
			mu.Lock()
			reports = append(reports, err)
			mu.Unlock()
		}
		dir := t.TempDir()
		sp := spool.New(filepath.Join(dir, "backup.evt"))
		c.spool = sp
		e := newEngine(c)
		t.Cleanup(func() { _ = engineStop(t, e) })
		ctx := testCtx(t, 30*time.Second)
		if err := e.start(ctx, false); err != nil {
			t.Fatal(err)
		}
		got := collect(t, url, n.Exchange, "#")

		const before, after = 50, 50
		send := func(i int, exchange string) *outMsg {
			m, err := e.newMsg(n.Key, []byte("m"))
			if err != nil {
				t.Fatal(err)
			}
			m.exchange = exchange
			if err := e.publish(ctx, m); err != nil {
				t.Fatal(err)
			}
			return m
		}
		for i := range before {
			send(i, n.Exchange)
		}
		poison := send(before, missing)
		for i := range after {
			send(before+1+i, n.Exchange)
		}
		if err := e.flush(ctx); err != nil {
			st := e.st.snapshot()
			t.Fatalf("flush: %v; stats %+v", err, st)
		}
		waitUntil(t, 10*time.Second, "the good messages", func() bool { return got.unique() == before+after })
		st := e.st.snapshot()
		if st.Quarantined != 1 || st.Confirmed != before+after || st.Spooled != 0 || st.Dropped != 0 {
			t.Fatalf("stats %+v: want 1 quarantined and %d confirmed", st, before+after)
		}
		if st.Reconnects > 10 {
			t.Fatalf("%d reconnects to find one refused message", st.Reconnects)
		}
		recs := spoolRecords(t, dir, "backup.evt.quarantine")
		if len(recs) != 1 || recs[0].MessageID != poison.id || recs[0].Exchange != missing {
			t.Fatalf("quarantine holds %+v, want the refused message", recs)
		}
		mu.Lock()
		defer mu.Unlock()
		var said int
		for _, err := range reports {
			if strings.Contains(err.Error(), poison.id) {
				said++
				if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "quarantine") {
					t.Errorf("report %v: want ErrInvalidMessage and where it went", err)
				}
			}
		}
		if said != 1 {
			t.Fatalf("the refused message was reported %d times, want once: %v", said, reports)
		}
		// Stop spools nothing: the refused message is not retried.
		if err := engineStop(t, e); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "backup.evt")); !os.IsNotExist(err) {
			t.Fatalf("spool file after Stop: %v, want none", err)
		}
	})
}

// TestEngineBacksOffAfterYoungSessions: a publisher whose connection is
// closed as soon as it opens waits RECONNECT_INTERVAL, then twice as long
// each time, instead of reconnecting at once, and says so after a few.
func TestEngineBacksOffAfterYoungSessions(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	c := engineConfigFor(t, url, 0, nil)
	c.topo = topology{exchange: n.Exchange, kind: "topic"}
	var reports atomic.Int64
	c.onError = func(err error) {
		if strings.Contains(err.Error(), "times in a row within 1s of opening") {
			reports.Add(1)
		}
	}
	e := newEngine(c)
	t.Cleanup(func() { _ = engineStop(t, e) })
	if err := e.start(testCtx(t, 10*time.Second), false); err != nil {
		t.Fatal(err)
	}
	k := killConnections(t, strings.TrimPrefix(url, "memory://"))
	start := time.Now()
	waitUntil(t, 10*time.Second, "5 sessions closed", func() bool { return k.closed.Load() >= 5 })
	// 20+40+80+160 ms between them at least; at once, it takes a few ms.
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("5 sessions closed within %v: the publisher reconnects without waiting", took)
	}
	waitUntil(t, 10*time.Second, "the report of sessions dying young", func() bool { return reports.Load() == 1 })
	k.end()
	if got := k.closed.Load(); got > 8 {
		t.Fatalf("%d sessions closed, want a handful", got)
	}
}

// nestedTable returns a header table nested depth levels deep: RabbitMQ
// takes it, amqp091-go's reader refuses tables nested deeper than 32.
func nestedTable(depth int) amqp.Table {
	t := amqp.Table{"leaf": "x"}
	for range depth - 1 {
		t = amqp.Table{"n": t}
	}
	return t
}

// TestConsumerPoisonDeliveryDeadLettered: a delivery this client cannot
// parse drops the consumer's connection each time it comes. On a quorum
// queue with DELIVERY_LIMIT and a dead-letter exchange the broker
// dead-letters it after that many deliveries, and the messages behind it
// are delivered.
func TestConsumerPoisonDeliveryDeadLettered(t *testing.T) {
	url := brokertest.URL(t)
	n := brokertest.NewNames(t)
	dlx, dlq := n.Exchange+".dlx", n.Queue+".dlq"
	brokertest.Cleanup(t, []string{dlx}, []string{dlq})
	l, buf := consumerLogger(t)
	var rec recorder
	const limit = 2
	runConsumer(t, NewSyncConsumer, baseOpts(url, l,
		WithReconnect(50*time.Millisecond, 0),
		WithExchange(n.Exchange, "topic", false), WithQueue(n.Queue), WithKeys(n.Key),
		WithQueueType("quorum"), WithQueueDurable(true), WithPrefetch(1),
		WithDeadLetterExchange(dlx), WithDeliveryLimit(limit),
		WithCallback(rec.callback))...)

	ch := brokertest.Channel(t)
	if _, err := ch.QueueDeclare(dlq, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(dlq, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 30*time.Second)
	pub := func(body string, h amqp.Table) {
		t.Helper()
		if err := ch.PublishWithContext(ctx, n.Exchange, n.Key, false, false, amqp.Publishing{Body: []byte(body), Headers: h}); err != nil {
			t.Fatal(err)
		}
	}
	pub("poison", nestedTable(40))
	const N = 5
	for i := range N {
		pub(fmt.Sprintf("normal %d", i), nil)
	}

	waitUntil(t, 30*time.Second, "the normal messages", func() bool { return rec.len() == N })
	for _, d := range rec.all() {
		if !strings.HasPrefix(string(d.Body), "normal") {
			t.Fatalf("callback got %q", d.Body)
		}
	}
	// amqp091 cannot read the poison message back either: count it.
	waitUntil(t, 10*time.Second, "the poison message in the dead-letter queue", func() bool {
		q, err := ch.QueueDeclarePassive(dlq, false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages == 1
	})
	if !strings.Contains(buf.String(), "reconnecting") {
		t.Fatalf("no reconnect logged; log:\n%s", buf.String())
	}
}

// TestDeliveryLimitNeedsQuorum: DELIVERY_LIMIT becomes the queue's
// x-delivery-limit, and is refused for a classic queue, which has none.
func TestDeliveryLimitNeedsQuorum(t *testing.T) {
	tests := []struct {
		name    string
		opts    []Option
		want    any // x-delivery-limit, nil for none
		wantErr bool
	}{
		{"none", nil, nil, false},
		{"quorum", []Option{WithQueueType("quorum"), WithQueueDurable(true), WithDeliveryLimit(3)}, int64(3), false},
		{"classic", []Option{WithDeliveryLimit(3)}, nil, true},
		{"negative", []Option{WithQueueType("quorum"), WithDeliveryLimit(-1)}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewSyncConsumer(baseOpts("memory://delivery-limit", testLogger(t), tt.opts...)...)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidConfig) {
					t.Fatalf("err = %v, want ErrInvalidConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.topo.arguments()["x-delivery-limit"]; got != tt.want {
				t.Fatalf("x-delivery-limit = %v, want %v", got, tt.want)
			}
		})
	}
}
