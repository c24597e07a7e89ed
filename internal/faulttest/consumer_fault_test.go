package faulttest_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faulttest"
	"github.com/omqs-go/omqs/internal/lockedbuf"
)

// TestConsumerSurvivesClosedConnections publishes a stream of messages while
// the broker closes every connection twice, and checks that the consumer
// goes not ready, comes back, and receives every message at least once.
func TestConsumerSurvivesClosedConnections(t *testing.T) {
	faulttest.Require(t)
	faulttest.Restore(t)
	url := brokertest.URL(t)
	n := brokertest.NewNames(t)
	logs := &lockedbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", logs.String())
		}
	})
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	common := []omqs.Option{
		omqs.WithConfig(omqs.DefaultConfig()), omqs.WithURL(url), omqs.WithLogger(logger),
		omqs.WithName("omqs fault test"), omqs.WithReconnect(200*time.Millisecond, 100),
		omqs.WithExchange(n.Exchange, "topic", false), omqs.WithKeys(n.Key),
	}

	var (
		mu       sync.Mutex
		received = map[string]int{} // by message id
		bodies   = map[string]bool{}
	)
	var lost atomic.Int32
	c, err := omqs.NewSyncConsumer(append(common,
		omqs.WithQueue(n.Queue),
		omqs.WithErrorHandler(func(error) { lost.Add(1) }),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			mu.Lock()
			received[d.MessageID]++
			bodies[string(d.Body)] = true
			mu.Unlock()
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	unique := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(received)
	}

	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(context.Background()) }()
	faulttest.WaitFor(t, 15*time.Second, "the consumer to be ready", c.Ready)

	// Watch Ready: count its falls and rises.
	var falls, rises atomic.Int32
	watchStop, watchDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		prev := true
		for {
			select {
			case <-watchStop:
				return
			case <-tick.C:
			}
			r := c.Ready()
			switch {
			case prev && !r:
				falls.Add(1)
			case !prev && r:
				rises.Add(1)
			}
			prev = r
		}
	}()
	defer func() {
		close(watchStop)
		<-watchDone
	}()

	p, err := omqs.NewAsyncPublisher(append(common, omqs.WithQueue(""))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	// Publish a steady stream (20 messages every 10 ms) until both faults
	// are over and some more messages went through the new connections.
	var published atomic.Int32
	pubDone, stopPub := make(chan error, 1), make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-stopPub:
				pubDone <- p.Flush(ctx)
				return
			case <-tick.C:
			}
			for range 20 {
				if err := p.Publish(ctx, "", []byte(fmt.Sprint("message ", i))); err != nil {
					pubDone <- fmt.Errorf("publish %d: %w", i, err)
					return
				}
				i++
				published.Add(1)
			}
		}
	}()

	for k := int32(1); k <= 2; k++ {
		before := published.Load()
		faulttest.WaitFor(t, time.Minute, fmt.Sprintf("500 messages published before fault %d", k),
			func() bool { return published.Load() >= before+500 })
		faulttest.CloseConnections(t, "omqs fault test", "omqs fault test")
		faulttest.WaitFor(t, 30*time.Second, fmt.Sprintf("Ready to turn false after fault %d", k),
			func() bool { return falls.Load() >= k })
		faulttest.WaitFor(t, 30*time.Second, fmt.Sprintf("Ready to turn true again after fault %d", k),
			func() bool { return rises.Load() >= k && c.Ready() })
		t.Logf("fault %d: %d published, %d unique received", k, published.Load(), unique())
	}
	after := published.Load()
	faulttest.WaitFor(t, time.Minute, "500 messages published after the faults",
		func() bool { return published.Load() >= after+500 })
	close(stopPub)
	select {
	case err := <-pubDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatalf("publishing did not finish: %v", ctx.Err())
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	total := int(published.Load())
	faulttest.WaitFor(t, time.Minute, "every message to arrive", func() bool { return unique() == total })

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-runDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, n := range received {
		dups += n - 1
	}
	if len(bodies) != total {
		t.Fatalf("%d distinct bodies, want %d", len(bodies), total)
	}
	if lost.Load() < 2 {
		t.Errorf("the error handler heard of %d lost connections, want at least 2", lost.Load())
	}
	t.Logf("%d messages received once or more across 2 faults; %d duplicate deliveries; Ready fell %d times",
		total, dups, falls.Load())
}
