package omqs

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConsumerReadyFalseWhileCallbackOutlivesConnection: when the connection
// is lost while a callback that ignores its context runs, Ready turns false
// at once, not when the callback returns; once it returns the consumer
// reconnects and the message comes again.
func TestConsumerReadyFalseWhileCallbackOutlivesConnection(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerReadyFalseWhileCallbackOutlivesConnection)
}

func testConsumerReadyFalseWhileCallbackOutlivesConnection(t *testing.T, url string) {
	n := testNames(t, url)
	clientURL, cut := breakable(t, url)
	l, _ := consumerLogger(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var calls, redelivered atomic.Int32
	var returned atomic.Bool
	c, err := NewAsyncConsumer(namedOpts(clientURL, l, n, WithConcurrency(2), WithReconnect(20*time.Millisecond, 100),
		WithCallback(func(ctx context.Context, d Delivery) error {
			if calls.Add(1) == 1 {
				entered <- struct{}{}
				<-release // ignores ctx
				returned.Store(true)
				return nil
			}
			if d.Redelivered {
				redelivered.Add(1)
			}
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, c)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "slow")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	cut()
	waitUntil(t, 10*time.Second, "Ready to turn false while the callback runs", func() bool { return !c.Ready() })
	if returned.Load() {
		t.Fatal("the callback returned before it was released")
	}
	close(release)
	waitUntil(t, 15*time.Second, "the consumer to be ready again", c.Ready)
	waitUntil(t, 15*time.Second, "the message to come again", func() bool { return redelivered.Load() == 1 })
}

// TestConsumerConnectionLossCancelsCallbacks: a callback that waits on its
// context learns that the connection was lost (its delivery cannot be
// acknowledged any more); the consumer then reconnects and the message is
// delivered again.
func TestConsumerConnectionLossCancelsCallbacks(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerConnectionLossCancelsCallbacks)
}

func testConsumerConnectionLossCancelsCallbacks(t *testing.T, url string) {
	n := testNames(t, url)
	clientURL, cut := breakable(t, url)
	l, _ := consumerLogger(t)
	entered := make(chan struct{}, 1)
	var calls, redelivered atomic.Int32
	c, err := NewSyncConsumer(namedOpts(clientURL, l, n, WithReconnect(20*time.Millisecond, 100),
		WithCallback(func(ctx context.Context, d Delivery) error {
			if calls.Add(1) == 1 {
				entered <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}
			if d.Redelivered {
				redelivered.Add(1)
			}
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, c)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "interrupted")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	cut()
	waitUntil(t, 15*time.Second, "the message to come again after the reconnect", func() bool { return redelivered.Load() == 1 })
	if !c.Ready() {
		t.Fatal("Ready is false after the consumer got a delivery on its new connection")
	}
}

// TestConsumerReadyBeforeFirstCallbackOfASession: a callback never sees
// Ready false on a live connection. The delivery that waits in the queue
// when the consumer reconnects reaches a handler at once; many handlers make
// the consumer spend long starting them, so a consumer that turned Ready
// only after starting its handlers would be caught.
func TestConsumerReadyBeforeFirstCallbackOfASession(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	clientURL, cut := breakable(t, url)
	l, _ := consumerLogger(t)
	entered := make(chan struct{}, 1)
	var calls atomic.Int32
	readyInCallback := make(chan bool, 1)
	var c *AsyncConsumer // read by the callback, which runs once Run started
	c, err := NewAsyncConsumer(namedOpts(clientURL, l, n, WithConcurrency(1000), WithReconnect(20*time.Millisecond, 100),
		WithCallback(func(ctx context.Context, d Delivery) error {
			if calls.Add(1) == 1 {
				entered <- struct{}{}
				<-ctx.Done() // the connection is lost under it
				return ctx.Err()
			}
			select {
			case readyInCallback <- c.Ready():
			default:
			}
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, c)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "waits in the queue across the reconnect")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	cut()
	select {
	case ready := <-readyInCallback:
		if !ready {
			t.Fatal("Ready was false in the first callback on the new connection")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the message did not come again after the reconnect")
	}
}

// TestConsumerNoAckConnectionLossKeepsCallbackContext: with auto-ack a
// callback running when the connection is lost keeps a live context: its
// delivery exists nowhere else.
func TestConsumerNoAckConnectionLossKeepsCallbackContext(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	clientURL, cut := breakable(t, url)
	l, _ := consumerLogger(t)
	entered := make(chan context.Context, 1)
	release := make(chan struct{})
	c, err := NewSyncConsumer(namedOpts(clientURL, l, n, WithNoAck(true), WithReconnect(20*time.Millisecond, 100),
		WithCallback(func(ctx context.Context, d Delivery) error {
			select {
			case entered <- ctx:
				<-release
			default:
			}
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	startRun(t, c)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "auto-acked")
	var cbCtx context.Context
	select {
	case cbCtx = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	cut()
	waitUntil(t, 10*time.Second, "Ready to turn false", func() bool { return !c.Ready() })
	err = cbCtx.Err()
	close(release)
	if err != nil {
		t.Fatalf("the auto-acknowledged callback's context ended with the connection: %v", err)
	}
	waitUntil(t, 15*time.Second, "the consumer to be ready again", c.Ready)
}

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
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n,
		WithCallback(func(context.Context, Delivery) error { panic("to call the error handler") }),
		WithErrorHandler(func(error) {
			select {
			case handlerIn <- struct{}{}:
			default:
			}
			<-release
		}))...)
	c := r.c.(*SyncConsumer)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "panics")
	select {
	case <-handlerIn:
	case <-time.After(10 * time.Second):
		t.Fatal("the error handler was not called")
	}

	// End Run: it marks itself done, then waits for the blocked error handler
	// (at most handlerGrace) before it returns.
	r.cancel()
	core := c.core()
	waitUntil(t, 10*time.Second, "Run to be finishing", func() bool {
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
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestConsumerNoAckGiveUpIsReported: with auto-ack, a callback that gives up
// because Run's context ended loses its delivery; the loss is logged and
// counted to the error handler.
func TestConsumerNoAckGiveUpIsReported(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	l, logs := consumerLogger(t)
	entered := make(chan struct{}, 1)
	var mu sync.Mutex
	var reported []error
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithNoAck(true),
		WithCallback(func(ctx context.Context, d Delivery) error {
			entered <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}),
		WithErrorHandler(func(err error) {
			mu.Lock()
			defer mu.Unlock()
			reported = append(reported, err)
		}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "given up")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	r.cancel()
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "the message is lost") {
		t.Fatalf("the lost delivery was not logged as an error:\n%s", out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || !strings.Contains(reported[0].Error(), "1 auto-acknowledged deliveries lost") {
		t.Fatalf("reported %v, want one error counting 1 lost delivery", reported)
	}
}
