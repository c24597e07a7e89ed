package omqs

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/membroker"
)

func TestPublishersNestedHeaders(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testPublishersNestedHeaders)
}

func testPublishersNestedHeaders(t *testing.T, url string) {
	n := testNames(t, url)
	p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithExchange(n.Exchange, "topic", false), WithQueue(n.Queue),
		WithQueueDurable(false), WithKeys(n.Key), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got := consumeQueue(t, backendChannel(t, url), n.Queue)
	msg := Message{Key: n.Key, Body: []byte("with headers"), ContentType: "application/x-headers", Headers: map[string]any{
		"plain": "v", "n": 7, "wide": 1 << 40, "nested": map[string]any{"a": []any{1, "x", map[string]any{"deep": true}}},
	}}
	if err := p.PublishMessage(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishMessage(ctx, Message{Key: n.Key, Headers: map[string]any{"bad": struct{}{}}}); !errors.Is(err, ErrInvalidMessage) {
		t.Fatalf("unsupported header value: %v, want ErrInvalidMessage", err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	got.waitCount(t, 1, 10*time.Second)
	// As amqp091 decodes them: an int travels as a 32-bit integer (a 64-bit
	// one when it does not fit), nested maps as tables.
	want := amqp.Table{"plain": "v", "n": int32(7), "wide": int64(1) << 40, "nested": amqp.Table{"a": []any{int32(1), "x", amqp.Table{"deep": true}}}}
	if h := got.all()[0].Headers; !reflect.DeepEqual(h, want) {
		t.Fatalf("headers %#v, want %#v", h, want)
	}
	if ct := got.all()[0].ContentType; ct != "application/x-headers" {
		t.Fatalf("content type %q, want the message's", ct)
	}
}

// PublishMessage refuses what AMQP cannot carry, or a consumer could not
// read, before it reaches the connection, with an error naming it.
func TestPublishMessageRefusesInvalid(t *testing.T) {
	t.Parallel()
	p, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(memoryURL(t)), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	deep := map[string]any{}
	for i, h := 0, deep; i < 40; i++ {
		h["d"] = map[string]any{}
		h = h["d"].(map[string]any)
	}
	long := strings.Repeat("x", 256)
	for _, c := range []struct {
		name string
		msg  Message
		says string
	}{
		{"id too long", Message{MessageID: long}, "message id is 256 bytes"},
		{"content type too long", Message{ContentType: long}, "content type is 256 bytes"},
		{"content type not UTF-8", Message{ContentType: "\xff"}, "content type"},
		{"header name too long", Message{Headers: map[string]any{"a": map[string]any{long: 1}}}, `"a": field name`},
		{"headers nested too deep", Message{Headers: deep}, "nested deeper than 32 levels"},
		{"uint beyond int64", Message{Headers: map[string]any{"u": uint(1) << 63}}, `"u": 9223372036854775808 is larger`},
	} {
		if err := p.PublishMessage(context.Background(), c.msg); !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v, want ErrInvalidMessage saying %q", c.name, err, c.says)
		}
	}
}

func TestSyncPublisherNack(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testSyncPublisherNack)
}

func testSyncPublisherNack(t *testing.T, url string) {
	n := testNames(t, url)
	declareNackingQueue(t, url, n)
	p, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithExchange(n.Exchange, "direct", false), WithQueue(""), WithKeys(n.Key), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "", []byte("first")); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := p.Publish(ctx, "", []byte("second")); !errors.Is(err, ErrNacked) {
		t.Fatalf("second publish: %v, want ErrNacked", err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Confirmed != 1 || st.Nacked != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPublisherSections(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testPublisherSections)
}

func testPublisherSections(t *testing.T, url string) {
	for _, sec := range []string{"AsyncBroadcaster", "SyncRouter", "AsyncPublisher", "SyncPublisher"} {
		t.Run(sec, func(t *testing.T) {
			n := testNames(t, url)
			cfg := DefaultConfig()
			pc := PublisherConfig{Exchange: n.Exchange, ExchangeDurable: true, Queue: n.Queue, QueueDurable: true, RoutingKeys: []string{n.Key}}
			switch sec {
			case "AsyncBroadcaster":
				pc.ExchangeType = "fanout"
				cfg.AsyncBroadcaster = pc
			case "SyncRouter":
				pc.ExchangeType = "direct"
				cfg.SyncRouter = pc
			case "AsyncPublisher":
				pc.ExchangeType = "topic"
				cfg.AsyncPublisher = pc
			case "SyncPublisher":
				pc.ExchangeType = "topic"
				cfg.SyncPublisher = pc
			}
			ctx := testCtx(t, 20*time.Second)
			var publish func(key string, body []byte) error
			var stop func(context.Context) error
			if sec[0] == 'A' {
				p, err := NewAsyncPublisher(WithConfig(cfg), WithURL(url), WithSection(sec), WithLogger(testLogger(t)))
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Start(ctx); err != nil {
					t.Fatal(err)
				}
				publish = func(k string, b []byte) error { return p.Publish(ctx, k, b) }
				stop = p.Stop
			} else {
				p, err := NewSyncPublisher(WithConfig(cfg), WithURL(url), WithSection(sec), WithLogger(testLogger(t)))
				if err != nil {
					t.Fatal(err)
				}
				if err := p.Start(ctx); err != nil {
					t.Fatal(err)
				}
				publish = func(k string, b []byte) error { return p.Publish(ctx, k, b) }
				stop = p.Stop
			}
			if err := publish("", []byte("to the default key")); err != nil {
				t.Fatal(err)
			}
			if err := stop(ctx); err != nil {
				t.Fatal(err)
			}
			ch := backendChannel(t, url)
			if err := ch.ExchangeDeclarePassive(n.Exchange, pc.ExchangeType, true, false, false, false, nil); err != nil {
				t.Fatalf("exchange: %v", err)
			}
			wantDepth(t, url, n.Queue, 1)
			// The exchange has the section's type and is durable, and so is
			// the queue: declaring them otherwise is refused.
			other := map[string]string{"fanout": "topic", "direct": "topic", "topic": "direct"}[pc.ExchangeType]
			if err := backendChannel(t, url).ExchangeDeclare(n.Exchange, other, true, false, false, false, nil); err == nil {
				t.Errorf("exchange %s redeclared as %s", n.Exchange, other)
			}
			if err := backendChannel(t, url).ExchangeDeclare(n.Exchange, pc.ExchangeType, true, false, false, false, nil); err != nil {
				t.Errorf("exchange %s is not a durable %s exchange: %v", n.Exchange, pc.ExchangeType, err)
			}
			if _, err := backendChannel(t, url).QueueDeclare(n.Queue, false, false, false, false, nil); err == nil {
				t.Errorf("queue %s redeclared as not durable", n.Queue)
			}
		})
	}
}

// TestPublishersBlockedBroker: while the broker blocks publishing, Publish
// returns when its context ends, without taking the message, and Stop is
// bounded by its context even with a Publish stuck in the transport. It runs
// on the in-process broker only: on RabbitMQ an alarm blocks every user of
// the node (the serial fault suite covers it there).
func TestPublishersBlockedBroker(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	b := membroker.Get(strings.TrimPrefix(url, "memory://"))
	n := testNames(t, url)
	var reported atomic.Int32
	opts := []Option{WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
		WithExchange(n.Exchange, "topic", false), WithQueue(n.Queue), WithQueueDurable(false), WithKeys(n.Key),
		WithErrorHandler(func(error) { reported.Add(1) })}
	ctx := testCtx(t, 20*time.Second)
	// The alarm is raised before the publishers connect: each learns of it
	// from its first publish, which the broker holds.
	b.SetBlocked(true)
	t.Cleanup(func() { b.SetBlocked(false) })
	ap := startedPublisher(t, ctx, NewAsyncPublisher, opts...)
	sp := startedPublisher(t, ctx, NewSyncPublisher, opts...)
	for name, publish := range map[string]func(context.Context, string, []byte) error{"AsyncPublisher": ap.Publish, "SyncPublisher": sp.Publish} {
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- publish(short, "", []byte("during the alarm")) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			b.SetBlocked(false)
			t.Fatalf("%s.Publish did not return when its context ended (after the alarm cleared: %v)", name, <-done)
		}
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s.Publish during the alarm: %v, want the context's error", name, err)
		}
	}
	for name, st := range map[string]LaneStats{"AsyncPublisher": ap.Stats(), "SyncPublisher": sp.Stats()} {
		if st.Accepted != 0 || st.Published != 0 || st.Blocked == 0 {
			t.Fatalf("%s stats %+v: want nothing taken, some time blocked", name, st)
		}
	}
	if n := ap.Pending(); n != 0 {
		t.Fatalf("AsyncPublisher pending %d, want 0", n)
	}

	// Cleared: both publish again.
	b.SetBlocked(false)
	if err := ap.Publish(ctx, "", []byte("after the alarm")); err != nil {
		t.Fatal(err)
	}
	if err := sp.Publish(ctx, "", []byte("after the alarm")); err != nil {
		t.Fatal(err)
	}
	for _, stop := range []func(context.Context) error{ap.Stop, sp.Stop} {
		if err := stop(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// Raised again, and a new publisher's Publish does not give up: Stop's
	// context still bounds Stop, and the message (no spool) is reported lost.
	b.SetBlocked(true)
	ap2 := startedPublisher(t, ctx, NewAsyncPublisher, opts...)
	published := make(chan error, 1)
	go func() { published <- ap2.Publish(context.Background(), "", []byte("never confirmed")) }()
	waitUntil(t, 10*time.Second, "the publish to be in flight", func() bool { return ap2.Pending() == 1 })
	stopCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- ap2.Stop(stopCtx) }()
	select {
	case err := <-stopped:
		if !errors.Is(err, ErrNotConfirmed) {
			t.Fatalf("Stop: %v, want ErrNotConfirmed", err)
		}
	case <-time.After(10 * time.Second):
		b.SetBlocked(false)
		t.Fatalf("Stop did not return during the alarm (after it cleared: %v)", <-stopped)
	}
	if err := <-published; err != nil {
		t.Fatalf("the Publish that was stuck returned %v", err)
	}
	if st := ap2.Stats(); st.Confirmed != 0 || st.Dropped != 1 || ap2.Pending() != 0 {
		t.Fatalf("stats %+v, pending %d: want the message dropped", st, ap2.Pending())
	}
	waitUntil(t, 5*time.Second, "the loss to be reported", func() bool { return reported.Load() >= 1 })
	wantDepth(t, url, n.Queue, 2) // the two published between the alarms
}
