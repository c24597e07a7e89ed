package omqs

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/benchkit"
)

// BenchmarkMemoryPublishToCallback measures what a unit test pays per message
// on the in-process broker: from a publish to the consumer's callback (a
// SyncConsumer acknowledging each delivery), counting until b.N callbacks
// ran. The publishes go through an AsyncPublisher directly, or through a
// Manager's event lane.
//
//	go test -run='^$' -bench=MemoryPublishToCallback -benchtime=200000x -count=3 .
func BenchmarkMemoryPublishToCallback(b *testing.B) {
	b.Run("AsyncPublisher", func(b *testing.B) {
		url := memoryURL(b)
		n := testNames(b, url)
		quiet := WithLogger(slog.New(slog.DiscardHandler))
		p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), quiet,
			WithExchange(n.Exchange, "topic", false), WithQueue(""))
		if err != nil {
			b.Fatal(err)
		}
		benchToCallback(b, url, n.Exchange, false, n.Queue, n.Key, p.Start, p.Stop, func(ctx context.Context, body []byte) error {
			return p.Publish(ctx, n.Key, body)
		})
	})
	b.Run("Manager.SendEvent", func(b *testing.B) {
		url := memoryURL(b)
		cfg, n := backendConfig(b, url)
		cfg.Global.BufferSize = 65536
		m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		benchToCallback(b, url, cfg.EventWorker.Exchange, true, n.Queue, n.Key, m.Start, m.Stop, func(ctx context.Context, body []byte) error {
			return m.SendEventContext(ctx, string(body), "")
		})
	})
}

// benchToCallback starts a SyncConsumer of queue (bound to exchange with
// key), then starts the producer and times b.N publishes until b.N callbacks
// ran.
func benchToCallback(b *testing.B, url, exchange string, durable bool, queue, key string,
	start, stop func(context.Context) error, publish func(context.Context, []byte) error) {
	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	c, err := NewSyncConsumer(WithConfig(DefaultConfig()), WithURL(url), WithLogger(slog.New(slog.DiscardHandler)),
		WithExchange(exchange, "topic", durable), WithQueue(queue), WithQueueDurable(durable), WithKeys(key),
		WithCallback(func(context.Context, Delivery) error {
			if got.Add(1) == target {
				close(done)
			}
			return nil
		}))
	if err != nil {
		b.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(context.Background()) }()
	for deadline := time.Now().Add(10 * time.Second); !c.Ready(); {
		if time.Now().After(deadline) {
			b.Fatal("the consumer is not ready")
		}
		select {
		case err := <-runErr:
			b.Fatalf("Run: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := start(ctx); err != nil {
		b.Fatal(err)
	}
	body := []byte(benchkit.Body)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := publish(ctx, body); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case err := <-runErr:
		b.Fatalf("Run: %v", err)
	case <-ctx.Done():
		b.Fatalf("%d of %d callbacks ran", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if err := stop(ctx); err != nil {
		b.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
}
