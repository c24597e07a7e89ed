package omqs

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestQueueConfigArguments: one function turns a queue's settings into the
// arguments both the workers and the consumers declare.
func TestQueueConfigArguments(t *testing.T) {
	tests := []struct {
		q    QueueConfig
		want amqp.Table
	}{
		{QueueConfig{}, nil},
		{QueueConfig{QueueType: "classic"}, nil},
		{QueueConfig{QueueType: "Quorum"}, amqp.Table{"x-queue-type": "quorum"}},
		{QueueConfig{DeadLetterExchange: "dlx", MessageTTL: 1500 * time.Millisecond, MaxLength: 10}, amqp.Table{
			"x-dead-letter-exchange": "dlx", "x-message-ttl": int64(1500), "x-max-length": int64(10),
		}},
	}
	for _, tt := range tests {
		got := tt.q.arguments()
		if len(got) != len(tt.want) {
			t.Errorf("%+v: %v, want %v", tt.q, got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if got[k] != v {
				t.Errorf("%+v: %s = %#v, want %#v", tt.q, k, got[k], v)
			}
		}
	}
	if got := (QueueConfig{MaxLength: 1}).Arguments(); len(got) != 1 || got["x-max-length"] != int64(1) {
		t.Errorf("Arguments: %v", got)
	}
	// A worker and a consumer of one section's queue declare the same.
	cfg := DefaultConfig()
	q := QueueConfig{Queue: "q", QueueDurable: true, QueueType: "quorum", DeadLetterExchange: "d", MessageTTL: time.Minute, MaxLength: 5}
	cfg.EventWorker.SetQueueConfig(q)
	cfg.EventConsumer.SetQueueConfig(q)
	c, err := NewEventMsgConsumer(WithConfig(cfg), WithURL("memory://args"), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if w, k := formatArgs(workerTopology(cfg.EventWorker).arguments()), formatArgs(c.topo.arguments()); w != k || w == "none" {
		t.Errorf("worker declares %s, consumer %s", w, k)
	}
}

// TestConfigSharedQueueArguments: sections that name one queue with other
// arguments are refused with an error naming both, before any broker sees
// the declarations.
func TestConfigSharedQueueArguments(t *testing.T) {
	tests := []struct {
		name string
		set  func(w, k *QueueConfig)
		want string // "" when the configuration is valid
	}{
		{"same dead-letter exchange", func(w, k *QueueConfig) { w.DeadLetterExchange, k.DeadLetterExchange = "dlx", "dlx" }, ""},
		{"dead-letter exchange on the consumer only", func(w, k *QueueConfig) { k.DeadLetterExchange = "dlx" },
			`[EventWorker] declares the queue "omqs.queue.event" with QUEUE_TYPE=classic and [EventConsumer] with QUEUE_TYPE=classic, DEAD_LETTER_EXCHANGE=dlx`},
		{"other dead-letter exchange", func(w, k *QueueConfig) { w.DeadLetterExchange, k.DeadLetterExchange = "a", "b" },
			`[EventWorker] declares the queue "omqs.queue.event" with QUEUE_TYPE=classic, DEAD_LETTER_EXCHANGE=a and [EventConsumer] with QUEUE_TYPE=classic, DEAD_LETTER_EXCHANGE=b`},
		{"other TTL", func(w, k *QueueConfig) { w.MessageTTL, k.MessageTTL = time.Second, time.Minute },
			`with QUEUE_TYPE=classic, MESSAGE_TTL=1s and [EventConsumer] with QUEUE_TYPE=classic, MESSAGE_TTL=1m0s`},
		{"max length on the worker only", func(w, k *QueueConfig) { w.MaxLength = 3 },
			`[EventWorker] declares the queue "omqs.queue.event" with QUEUE_TYPE=classic, MAX_LENGTH=3 and [EventConsumer] with QUEUE_TYPE=classic:`},
		{"other queues", func(w, k *QueueConfig) { w.Queue, w.MaxLength = "mine", 3 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			w, k := cfg.EventWorker.QueueConfig(), cfg.EventConsumer.QueueConfig()
			tt.set(&w, &k)
			cfg.EventWorker.SetQueueConfig(w)
			cfg.EventConsumer.SetQueueConfig(k)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v\nwant ErrInvalidConfig with %q", err, tt.want)
			}
			if _, err := NewManager(WithConfig(cfg), WithURL("memory://shared-args")); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewManager: %v", err)
			}
			if _, err := NewEventMsgConsumer(WithConfig(cfg), WithURL("memory://shared-args")); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewEventMsgConsumer: %v", err)
			}
		})
	}
	_, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL("memory://shared-args"),
		WithQueueConfig(QueueConfig{Queue: "q", MessageTTL: 1500 * time.Microsecond}))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "MESSAGE_TTL: 1.5ms is not a whole number of milliseconds") {
		t.Errorf("WithQueueConfig: %v", err)
	}
	_, err = parseConfig("shared.cfg", []byte("[EventConsumer]\nMAX_LENGTH = 10\n[EventWorker]\nMAX_LENGTH = 20\n"))
	if want := "shared.cfg: [EventWorker] declares the queue \"omqs.queue.event\" with QUEUE_TYPE=classic, MAX_LENGTH=20 and [EventConsumer] with QUEUE_TYPE=classic, MAX_LENGTH=10"; !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), want) {
		t.Errorf("parseConfig: %v\nwant %q", err, want)
	}
}

// TestManagerAndConsumerShareQueue: a consumer that declares the event
// queue with a dead-letter exchange, a TTL and a length limit, and a Manager
// whose [EventWorker] says the same, both start, in either order, and the
// events flow. A Manager that declares the queue otherwise fails with an
// error that names the arguments it sent and what to do.
func TestManagerAndConsumerShareQueue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		cfg, n := backendConfig(t, url)
		dlx := n.Exchange + ".dlx"
		cleanupOn(t, url, []string{dlx}, nil)
		q := QueueConfig{Queue: n.Queue, QueueDurable: true, QueueType: "classic",
			DeadLetterExchange: dlx, MessageTTL: time.Hour, MaxLength: 1000}
		cfg.EventWorker.SetQueueConfig(q)
		cfg.EventConsumer.SetQueueConfig(q)
		cfg.EventConsumer.Exchange = cfg.EventWorker.Exchange
		cfg.EventConsumer.Keys = []string{n.Key}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}

		got := make(chan string, 4)
		l, _ := consumerLogger(t)
		runConsumer(t, NewEventMsgConsumer, WithConfig(cfg), WithURL(url), WithLogger(l),
			WithCallback(func(_ context.Context, d Delivery) error { got <- string(d.Body); return nil }))

		m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
		if err := m.SendEvent("shared", ""); err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if b != "shared" {
				t.Fatalf("got %q", b)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the consumer did not receive the event")
		}

		// A publisher given the section's QueueConfig declares the same
		// (as the omqs command does).
		p, err := NewSyncPublisher(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)),
			WithExchange(cfg.EventWorker.Exchange, "topic", true), WithQueueConfig(cfg.EventWorker.QueueConfig()), WithKeys(n.Key))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Start(testCtx(t, 15*time.Second)); err != nil {
			t.Fatalf("publisher Start: %v", err)
		}
		if err := p.Stop(testCtx(t, 15*time.Second)); err != nil {
			t.Fatal(err)
		}

		// The queue now exists with a dead-letter exchange: a Manager
		// whose [EventWorker] leaves it out is refused by the broker, and
		// says why.
		other := cfg.clone()
		other.EventWorker.DeadLetterExchange = ""
		other.EventConsumer.Queue = n.Queue + ".other"
		mo, err := NewManager(WithConfig(other), WithURL(url), WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		err = mo.Start(testCtx(t, 15*time.Second))
		_ = mo.Stop(context.Background())
		var ae *amqp.Error
		if !errors.Is(err, ErrInvalidQueue) || !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed ||
			!strings.Contains(err.Error(), "x-max-length=1000, x-message-ttl=3600000") ||
			!strings.Contains(err.Error(), "the queue exists with other settings") {
			t.Fatalf("Start: %v\nwant ErrInvalidQueue wrapping a 406 and naming the arguments", err)
		}
	})
}
