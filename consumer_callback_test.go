package omqs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// TestConsumerWaitsForCallback: a consumer without a callback declares and
// binds its queue but takes nothing from it (Ready stays false); a message
// published meanwhile reaches the callback once one is set. SetCallback(nil)
// stops taking deliveries until a callback is set again. No body is logged.
func TestConsumerWaitsForCallback(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerWaitsForCallback)
}

func testConsumerWaitsForCallback(t *testing.T, url string) {
	n := testNames(t, url)
	l, logs := consumerLogger(t)
	c, err := NewSyncConsumer(namedOpts(url, l, n)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitUntil(t, 15*time.Second, "the queue to be declared", func() bool {
		return strings.Contains(logs.String(), "not consuming until a callback is set")
	})
	secret := brokertest.Unique("personal data")
	publishTo(t, url, n.Exchange, "topic", false, n.Key, secret)
	wantDepth(t, url, n.Queue, 1) // held in the queue, not taken
	if c.Ready() {
		t.Fatal("Ready without a callback")
	}

	rec := &recorder{}
	c.SetCallback(rec.callback)
	waitUntil(t, 15*time.Second, "the waiting message to reach the callback", func() bool { return rec.len() == 1 })
	if got := string(rec.all()[0].Body); got != secret {
		t.Fatalf("callback got %q, want %q", got, secret)
	}
	if !c.Ready() {
		t.Fatal("not Ready with a callback")
	}

	// Removing the callback stops consuming; the queue keeps what arrives.
	c.SetCallback(nil)
	waitUntil(t, 15*time.Second, "Ready to turn false", func() bool { return !c.Ready() })
	waitUntil(t, 15*time.Second, "the queue to be declared again", func() bool {
		return strings.Count(logs.String(), "not consuming until a callback is set") == 2
	})
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "second")
	wantDepth(t, url, n.Queue, 1)
	c.SetCallback(rec.callback)
	waitUntil(t, 15*time.Second, "the second message", func() bool { return rec.len() == 2 })

	stopCtx, stopCancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer stopCancel()
	if err := c.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("a body was logged:\n%s", logs.String())
	}
	if st := c.Stats(); st.Deliveries != 2 || st.Acks != 2 {
		t.Errorf("Stats = %+v, want 2 deliveries, 2 acks", st)
	}
}

// TestConsumerStopWithoutCallback: Stop ends a Run that waits for a callback.
func TestConsumerStopWithoutCallback(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	l, logs := consumerLogger(t)
	c, err := NewLogMsgConsumer(nil, namedOpts(url, l, n)...)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	waitUntil(t, 10*time.Second, "the queue to be declared", func() bool {
		return strings.Contains(logs.String(), "not consuming until a callback is set")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestConsumerDedup: the same message id published twice reaches the
// callback once with WithDedup, and twice without; messages without an id
// are never de-duplicated.
func TestConsumerDedup(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		for _, on := range []bool{true, false} {
			name := "off"
			if on {
				name = "on"
			}
			t.Run(name, func(t *testing.T) { testConsumerDedup(t, url, on) })
		}
	})
}

func testConsumerDedup(t *testing.T, url string, on bool) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	rec := &recorder{}
	opts := namedOpts(url, l, n, WithCallback(rec.callback))
	if on {
		opts = append(opts, WithDedup(100, time.Minute))
	}
	c, err := NewSyncConsumer(opts...)
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, c)
	ch := backendChannel(t, url)
	publish := func(id, body string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ch.PublishWithContext(ctx, n.Exchange, n.Key, false, false, amqp.Publishing{MessageId: id, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	publish("dup-1", "first")
	publish("dup-1", "first again")
	publish("", "no id")
	publish("", "no id")
	publish("end", "end")
	waitUntil(t, 15*time.Second, "the last message", func() bool {
		all := rec.all()
		return len(all) > 0 && string(all[len(all)-1].Body) == "end"
	})
	stopNow(t, r)
	want, wantDup := 4, uint64(1)
	if !on {
		want, wantDup = 5, 0
	}
	if got := rec.len(); got != want {
		t.Fatalf("callback saw %d messages (%v), want %d", got, rec.all(), want)
	}
	st := c.Stats()
	if st.Duplicates != wantDup || st.Deliveries != 5 || st.Acks != 5 {
		t.Fatalf("Stats = %+v, want %d duplicates, 5 deliveries, 5 acks", st, wantDup)
	}
	wantDepth(t, url, n.Queue, 0)
}

func TestDedupWindow(t *testing.T) {
	now := time.Unix(1000, 0)
	w := newDedupWindow(2, time.Minute)
	w.now = func() time.Time { return now }
	if w.seen("a") {
		t.Fatal("a seen before it was added")
	}
	w.add("a")
	w.add("b")
	if !w.seen("a") || !w.seen("b") {
		t.Fatal("a or b not seen")
	}
	w.add("c") // evicts a, the oldest
	if w.seen("a") || !w.seen("b") || !w.seen("c") {
		t.Fatal("size bound: want a forgotten, b and c seen")
	}
	now = now.Add(time.Minute + time.Millisecond)
	if w.seen("b") {
		t.Fatal("b seen after the window")
	}
	w.add("c") // renewed
	now = now.Add(30 * time.Second)
	if !w.seen("c") {
		t.Fatal("renewed c not seen within the window")
	}
	if len(w.ids) > 2 {
		t.Fatalf("%d ids held, more than the size", len(w.ids))
	}
	unbounded := newDedupWindow(1, 0)
	unbounded.add("x")
	if !unbounded.seen("x") {
		t.Fatal("window 0: x forgotten")
	}
}

// TestConsumerQueueExpires: a LogMsgConsumer's named, non-durable queue is
// declared with x-expires (DefaultQueueExpires unless set), so that a queue
// its reader left does not fill up for ever; the broker then refuses the
// same queue without the argument.
func TestConsumerQueueExpires(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		for _, tc := range []struct {
			name string
			opt  []Option
			want int64
		}{
			{"default", nil, int64(DefaultQueueExpires / time.Millisecond)},
			{"option", []Option{WithQueueExpires(90 * time.Second)}, 90000},
		} {
			t.Run(tc.name, func(t *testing.T) {
				n := testNames(t, url)
				cleanupOn(t, url, nil, []string{n.Queue})
				l, _ := consumerLogger(t)
				r := runConsumer(t, logConsumerFor(), namedOpts(url, l, n, append(tc.opt, WithCallback((&recorder{}).callback))...)...)
				stopNow(t, r)
				ch := backendChannel(t, url)
				if _, err := ch.QueueDeclare(n.Queue, false, false, false, false, amqp.Table{"x-expires": tc.want}); err != nil {
					t.Fatalf("declare with x-expires %d: %v", tc.want, err)
				}
				_, err := backendChannel(t, url).QueueDeclare(n.Queue, false, false, false, false, nil)
				var ae *amqp.Error
				if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || !strings.Contains(ae.Reason, "x-expires") {
					t.Fatalf("declare without x-expires = %v, want 406 naming x-expires", err)
				}
			})
		}
	})
}

func TestConsumerQueueExpiresRefused(t *testing.T) {
	url := memoryURL(t)
	l, _ := consumerLogger(t)
	for _, opts := range [][]Option{
		{WithQueueExpires(time.Minute)},                      // the event queue is durable
		{WithQueue(""), WithQueueExpires(time.Minute)},       // server-named
		{WithQueue("q"), WithQueueExpires(time.Microsecond)}, // below RabbitMQ's unit
	} {
		if _, err := NewEventMsgConsumer(baseOpts(url, l, opts...)...); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%v: err = %v, want ErrInvalidConfig", opts, err)
		}
	}
	// 0 turns it off, also where it does not apply.
	c, err := NewEventMsgConsumer(baseOpts(url, l, WithQueueExpires(0))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.topo.arguments()["x-expires"]; ok {
		t.Error("x-expires on a durable queue")
	}
	_ = c.Stop(context.Background())
}

// TestConsumerSharedEventQueueWarning: binding other keys to the shared
// default event queue is logged as a warning naming the fix.
func TestConsumerSharedEventQueueWarning(t *testing.T) {
	url := memoryURL(t)
	for _, tc := range []struct {
		name string
		opts []Option
		warn bool
	}{
		{"default keys", nil, false},
		{"other keys", []Option{WithKeys("billing.*")}, true},
		{"default and other keys", []Option{WithKeys(DefaultEventKey, "billing.*")}, true},
		{"own queue", []Option{WithQueue("billing.events"), WithKeys("billing.*")}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, logs := consumerLogger(t)
			c, err := NewEventMsgConsumer(baseOpts(url, l, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Stop(context.Background())
			out := logs.String()
			got := strings.Contains(out, "level=WARN") && strings.Contains(out, EventQueue) && strings.Contains(out, "WithQueue")
			if got != tc.warn {
				t.Fatalf("warned %v, want %v:\n%s", got, tc.warn, out)
			}
		})
	}
}
