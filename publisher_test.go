package omqs

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestPublishersNestedHeaders(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testPublishersNestedHeaders)
}

func testPublishersNestedHeaders(t *testing.T, url string) {
	n := testNames(t, url)
	p, err := NewAsyncPublisher(WithURL(url), WithExchange(n.Exchange, "topic", false), WithQueue(n.Queue),
		WithQueueDurable(false), WithKeys(n.Key), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 20*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	got := consumeQueue(t, backendChannel(t, url), n.Queue)
	msg := Message{Key: n.Key, Body: []byte("with headers"), Headers: map[string]any{
		"plain": "v", "n": 7, "nested": map[string]any{"a": []any{1, "x", map[string]any{"deep": true}}},
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
	// As amqp091 decodes them: an int travels as a 32-bit integer, nested
	// maps as tables.
	want := amqp.Table{"plain": "v", "n": int32(7), "nested": amqp.Table{"a": []any{int32(1), "x", amqp.Table{"deep": true}}}}
	if h := got.all()[0].Headers; !reflect.DeepEqual(h, want) {
		t.Fatalf("headers %#v, want %#v", h, want)
	}
}

func TestSyncPublisherNack(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testSyncPublisherNack)
}

func testSyncPublisherNack(t *testing.T, url string) {
	n := testNames(t, url)
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
	p, err := NewSyncPublisher(WithURL(url), WithExchange(n.Exchange, "direct", false), WithQueue(""), WithKeys(n.Key), WithLogger(testLogger(t)))
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
			if depth := queueDepth(t, ch, n.Queue); depth != 1 {
				t.Fatalf("queue holds %d messages, want 1", depth)
			}
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
