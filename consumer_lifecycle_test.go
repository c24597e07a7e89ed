package omqs

import (
	"context"
	"testing"
	"time"
)

// TestConsumerStopWaitsForRunToFinish: Stop called while Run is finishing
// (it has stopped consuming and waits for the error handler) waits for Run to
// return instead of taking the consumer for one that never ran.
func TestConsumerStopWaitsForRunToFinish(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	handlerIn := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	c, err := NewSyncConsumer(namedOpts(url, l, n,
		WithCallback(func(context.Context, Delivery) error { panic("to call the error handler") }),
		WithErrorHandler(func(error) {
			select {
			case handlerIn <- struct{}{}:
			default:
			}
			<-release
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(ctx) }()
	waitFor(t, 10*time.Second, "Ready", c.Ready)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "panics")
	select {
	case <-handlerIn:
	case <-time.After(10 * time.Second):
		t.Fatal("the error handler was not called")
	}

	// End Run: it marks itself done, then waits for the blocked error handler
	// (at most handlerGrace) before it returns.
	cancel()
	core := c.core()
	waitFor(t, 10*time.Second, "Run to be finishing", func() bool {
		core.mu.Lock()
		defer core.mu.Unlock()
		return core.state == consumerDone
	})
	select {
	case <-core.runDone:
		t.Fatal("Run returned before Stop was called; the error handler did not hold it")
	default:
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer stopCancel()
	if err := c.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-core.runDone:
	default:
		t.Fatal("Stop returned while Run was still finishing")
	}
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}
