package omqs

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/benchkit"
	"github.com/omqs-go/omqs/internal/brokertest"
)

// The consume benchmarks fill a fresh queue with b.N messages before the
// timer starts, then time connecting, subscribing and handling all of them
// with a manual ack each. Run them with a fixed count so that every variant
// sees the same queue length:
//
//	go test -run='^$' -bench=Consume -benchtime=20000x -count=3 .

// benchQueue declares an exchange, a queue bound to it and fills the queue
// with n messages; everything is deleted when the benchmark ends.
func benchQueue(b *testing.B, url string, n int) brokertest.Names {
	b.Helper()
	names := brokertest.NewNames(b)
	// The same declarations the consumer makes, so its own are no-ops.
	t := benchkit.Topology{Exchange: names.Exchange, Kind: "topic", Queue: names.Queue, Key: names.Key}
	if err := benchkit.Declare(url, t); err != nil {
		b.Fatal(err)
	}
	if err := benchkit.Fill(url, t, n); err != nil {
		b.Fatal(err)
	}
	return names
}

// benchOMQS consumes b.N messages with an OMQS consumer built by build,
// whose callback runs work before acknowledging.
func benchOMQS(b *testing.B, build func(opts ...Option) (runner, error), work func()) {
	url := brokertest.URL(b)
	names := benchQueue(b, url, b.N)
	var got atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	c, err := build(
		WithConfig(DefaultConfig()), WithURL(url), WithLogger(slog.New(slog.DiscardHandler)),
		WithExchange(names.Exchange, "topic", false), WithQueue(names.Queue), WithKeys(names.Key),
		WithPrefetch(DefaultPrefetch),
		WithCallback(func(ctx context.Context, d Delivery) error {
			if work != nil {
				work()
			}
			if got.Add(1) == target {
				close(done)
			}
			return nil
		}),
	)
	if err != nil {
		b.Fatal(err)
	}
	runErr := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { runErr <- c.Run(context.Background()) }()
	select {
	case <-done:
	case err := <-runErr:
		b.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Minute):
		b.Fatalf("consumed %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	if err := <-runErr; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkConsumeOMQS: a SyncConsumer, manual ack after each callback.
func BenchmarkConsumeOMQS(b *testing.B) {
	benchOMQS(b, func(o ...Option) (runner, error) { return NewSyncConsumer(o...) }, nil)
}

// BenchmarkConsumeRaw: amqp091-go by hand on its own connection, same
// prefetch, manual ack per message: the baseline of BenchmarkConsumeOMQS.
func BenchmarkConsumeRaw(b *testing.B) {
	url := brokertest.URL(b)
	names := benchQueue(b, url, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	d, err := benchkit.RawConsume(url, names.Queue, b.N, DefaultPrefetch)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/d.Seconds(), "msgs/s")
}

// workMillisecond stands for a callback's 1 ms of work (I/O, say).
func workMillisecond() {
	t := time.NewTimer(time.Millisecond)
	<-t.C
}

// BenchmarkConsumeSync1ms: a SyncConsumer whose callback works 1 ms.
func BenchmarkConsumeSync1ms(b *testing.B) {
	benchOMQS(b, func(o ...Option) (runner, error) { return NewSyncConsumer(o...) }, workMillisecond)
}

// BenchmarkConsumeAsync8x1ms: an AsyncConsumer with 8 handlers whose
// callback works 1 ms.
func BenchmarkConsumeAsync8x1ms(b *testing.B) {
	benchOMQS(b, func(o ...Option) (runner, error) {
		return NewAsyncConsumer(append(o, WithConcurrency(8))...)
	}, workMillisecond)
}
