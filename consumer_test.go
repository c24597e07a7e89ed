package omqs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// deadLetterQueue declares a durable fanout exchange (as
// WithDeadLetterExchange declares it) with a queue bound to it, both deleted
// after the test, and returns their names.
func deadLetterQueue(t testing.TB, url string) (exchange, queue string) {
	t.Helper()
	exchange, queue = brokertest.Unique("omqs.test.dlx"), brokertest.Unique("omqs.test.dlq")
	cleanupOn(t, url, []string{exchange}, []string{queue})
	ch := backendChannel(t, url)
	if err := ch.ExchangeDeclare(exchange, "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(queue, "", exchange, false, nil); err != nil {
		t.Fatal(err)
	}
	return exchange, queue
}

// TestConsumerDefaultTopology checks that the constructors without names
// declare the original's exchanges, queues, keys and durability. These names
// are shared on the broker: what the test created is deleted after it, and
// what existed before is left alone.
func TestConsumerDefaultTopology(t *testing.T) {
	forEachBackend(t, testConsumerDefaultTopology)
}

func testConsumerDefaultTopology(t *testing.T, url string) {
	if !isMemory(url) {
		brokertest.LockLegacyNames(t) // no other package's test on these names meanwhile
	}
	cases := []struct {
		name            string
		build           func(opts ...Option) (runner, error)
		exchange        string
		exchangeDurable bool
		queue           string
		queueDurable    bool
		key             string
		queueArgs       amqp.Table
	}{
		{"SyncConsumer", func(o ...Option) (runner, error) { return NewSyncConsumer(o...) },
			DefaultExchange, false, DefaultQueue, false, DefaultRoutingKey, nil},
		{"AsyncConsumer", func(o ...Option) (runner, error) { return NewAsyncConsumer(o...) },
			DefaultExchange, false, DefaultQueue, false, DefaultRoutingKey, nil},
		// The log queue expires once unused ([LogConsumer] QUEUE_EXPIRES).
		{"LogMsgConsumer", func(o ...Option) (runner, error) { return NewLogMsgConsumer(nil, o...) },
			LogExchange, true, LogQueue, false, DefaultLogKey, amqp.Table{"x-expires": int64(DefaultQueueExpires / time.Millisecond)}},
		{"EventMsgConsumer", func(o ...Option) (runner, error) { return NewEventMsgConsumer(o...) },
			EventExchange, true, EventQueue, true, DefaultEventKey, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ins := backendChannel(t, url)
			// Leave alone what another user of this broker declared. Only
			// the broker's 404 says a name is free: on any other failure
			// the test cannot tell, and must not delete it afterwards.
			existed := func(what string, passive func(testChannel) error) bool {
				err := passive(backendChannel(t, url))
				var ae *amqp.Error
				switch {
				case err == nil:
					return true
				case errors.As(err, &ae) && ae.Code == amqp.NotFound:
					return false
				}
				t.Fatalf("cannot tell whether %s exists: %v", what, err)
				return false
			}
			xExisted := existed("exchange "+tc.exchange, func(ch testChannel) error {
				return ch.ExchangeDeclarePassive(tc.exchange, "topic", false, false, false, false, nil)
			})
			qExisted := existed("queue "+tc.queue, func(ch testChannel) error {
				_, err := ch.QueueDeclarePassive(tc.queue, false, false, false, false, nil)
				return err
			})
			var xs, qs []string
			if !xExisted {
				xs = []string{tc.exchange}
			}
			if !qExisted {
				qs = []string{tc.queue}
			}
			cleanupOn(t, url, xs, qs)

			l, _ := consumerLogger(t)
			col := &recorder{}
			r := runConsumer(t, tc.build, baseOpts(url, l, WithCallback(col.callback))...)

			// Bound with the default key: a message published with it arrives.
			body := brokertest.Unique("default-topology")
			publishTo(t, url, tc.exchange, "topic", tc.exchangeDurable, tc.key, body)
			waitUntil(t, 10*time.Second, "the message sent with the default key", func() bool {
				for _, d := range col.all() {
					if string(d.Body) == body {
						return true
					}
				}
				return false
			})
			stopNow(t, r)

			// Passive declares: they exist.
			if err := ins.ExchangeDeclarePassive(tc.exchange, "topic", tc.exchangeDurable, false, false, false, nil); err != nil {
				t.Fatalf("exchange %s: %v", tc.exchange, err)
			}
			if _, err := ins.QueueDeclarePassive(tc.queue, tc.queueDurable, false, false, false, nil); err != nil {
				t.Fatalf("queue %s: %v", tc.queue, err)
			}
			// A passive declare does not compare flags; declaring with the
			// expected flags does (the broker refuses inequivalent ones), and
			// declaring with the opposite durability must be refused.
			equivalent := func(durable bool, declare func(ch testChannel, durable bool) error) error {
				return declare(backendChannel(t, url), durable)
			}
			declX := func(ch testChannel, durable bool) error {
				return ch.ExchangeDeclare(tc.exchange, "topic", durable, false, false, false, nil)
			}
			declQ := func(ch testChannel, durable bool) error {
				_, err := ch.QueueDeclare(tc.queue, durable, false, false, false, tc.queueArgs)
				return err
			}
			if err := equivalent(tc.exchangeDurable, declX); err != nil {
				t.Errorf("exchange %s is not topic with durable=%v: %v", tc.exchange, tc.exchangeDurable, err)
			}
			if err := equivalent(!tc.exchangeDurable, declX); err == nil {
				t.Errorf("exchange %s: declaring it with durable=%v was accepted", tc.exchange, !tc.exchangeDurable)
			}
			if err := equivalent(tc.queueDurable, declQ); err != nil {
				t.Errorf("queue %s is not durable=%v: %v", tc.queue, tc.queueDurable, err)
			}
			if err := equivalent(!tc.queueDurable, declQ); err == nil {
				t.Errorf("queue %s: declaring it with durable=%v was accepted", tc.queue, !tc.queueDurable)
			}
		})
	}
}

func TestConsumerTopicPatterns(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerTopicPatterns)
}

func testConsumerTopicPatterns(t *testing.T, url string) {
	n := testNames(t, url)
	debugQueue := brokertest.Unique("omqs.test.q.debug")
	cleanupOn(t, url, nil, []string{debugQueue})
	l, _ := consumerLogger(t)

	all, debug := &recorder{}, &recorder{}
	runConsumer(t, NewSyncConsumer, baseOpts(url, l, WithExchange(n.Exchange, "topic", false),
		WithQueue(n.Queue), WithKeys("#"), WithCallback(all.callback))...)
	rd := runConsumer(t, logConsumerFor("*.debug"), baseOpts(url, l, WithExchange(n.Exchange, "topic", false),
		WithQueue(debugQueue), WithCallback(debug.callback))...)

	keys := []string{"app.debug", "app.info", "a.b.debug", "debug"}
	for _, k := range keys {
		publishTo(t, url, n.Exchange, "topic", false, k, "msg "+k)
	}
	waitUntil(t, 10*time.Second, "# to receive every key", func() bool { return all.len() == len(keys) })
	waitUntil(t, 10*time.Second, "*.debug to receive a message", func() bool { return debug.len() >= 1 })
	// Everything was routed when the publishes were confirmed: once the
	// consumer stopped, what it took plus what is left is what matched.
	stopNow(t, rd)
	left := queueDepth(t, backendChannel(t, url), debugQueue)
	if got := debug.keys(); len(got) != 1 || got[0] != "app.debug" || left != 0 {
		t.Fatalf("*.debug got %v with %d left in the queue, want only app.debug", got, left)
	}
}

func TestConsumerAck(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerAck)
}

func testConsumerAck(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	col := &recorder{}
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(col.callback))...)
	const N = 20
	var bodies []string
	for i := range N {
		bodies = append(bodies, fmt.Sprint("ack ", i))
	}
	publishTo(t, url, n.Exchange, "topic", false, n.Key, bodies...)
	waitUntil(t, 10*time.Second, "all messages", func() bool { return col.len() == N })
	stopNow(t, r)
	for i, d := range col.all() {
		if string(d.Body) != bodies[i] {
			t.Fatalf("delivery %d is %q, want %q (order)", i, d.Body, bodies[i])
		}
	}
	wantDepth(t, url, n.Queue, 0) // all acknowledged
}

func TestConsumerNoAck(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerNoAck)
}

func testConsumerNoAck(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	col := &recorder{}
	r := runConsumer(t, NewAsyncConsumer, namedOpts(url, l, n, WithNoAck(true), WithConcurrency(2), WithCallback(func(ctx context.Context, d Delivery) error {
		col.add(d)
		return errors.New("ignored: auto-ack")
	}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "a", "b", "c")
	waitUntil(t, 10*time.Second, "all messages", func() bool { return col.len() == 3 })
	stopNow(t, r)
	wantDepth(t, url, n.Queue, 0) // auto-ack: the callback's error changes nothing
}

func TestConsumerRejectDeadLetters(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerRejectDeadLetters)
}

func testConsumerRejectDeadLetters(t *testing.T, url string) {
	n := testNames(t, url)
	dlx, dlq := deadLetterQueue(t, url)
	l, _ := consumerLogger(t)
	var calls atomic.Int32
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithDeadLetterExchange(dlx), WithCallback(func(ctx context.Context, d Delivery) error {
		calls.Add(1)
		return errors.New("cannot handle this")
	}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "bad 1", "bad 2", "bad 3")
	ins := backendChannel(t, url)
	waitUntil(t, 10*time.Second, "3 dead-lettered messages", func() bool { return queueDepth(t, ins, dlq) == 3 })
	stopNow(t, r)
	if got := calls.Load(); got != 3 {
		t.Fatalf("callback ran %d times, want 3 (a rejected message must not come back)", got)
	}
	wantDepth(t, url, n.Queue, 0)
}

func TestConsumerRequeue(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerRequeue)
}

func testConsumerRequeue(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	col := &recorder{}
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(func(ctx context.Context, d Delivery) error {
		col.add(d)
		if !d.Redelivered {
			return Requeue(errors.New("not now"))
		}
		return nil
	}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "again")
	waitUntil(t, 10*time.Second, "the redelivery", func() bool { return col.len() == 2 })
	stopNow(t, r)
	seen := col.all()
	if len(seen) != 2 || seen[0].Redelivered || !seen[1].Redelivered || seen[0].MessageID != seen[1].MessageID {
		t.Fatalf("want the same message twice, the second time with Redelivered: %+v", seen)
	}
	wantDepth(t, url, n.Queue, 0)
}

func TestConsumerMaxRedeliveries(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerMaxRedeliveries)
}

func testConsumerMaxRedeliveries(t *testing.T, url string) {
	n := testNames(t, url)
	dlx, dlq := deadLetterQueue(t, url)
	l, logs := consumerLogger(t)
	var calls atomic.Int32
	reported := make(chan error, 10)
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithDeadLetterExchange(dlx), WithMaxRedeliveries(2),
		WithErrorHandler(func(err error) { reported <- err }),
		WithCallback(func(ctx context.Context, d Delivery) error {
			calls.Add(1)
			return Requeue(errors.New("still not now"))
		}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "poison")
	ins := backendChannel(t, url)
	waitUntil(t, 10*time.Second, "the message to be dead-lettered", func() bool { return queueDepth(t, ins, dlq) == 1 })
	stopNow(t, r)
	if got := calls.Load(); got != 3 {
		t.Fatalf("callback ran %d times, want 3 (the first delivery and 2 redeliveries)", got)
	}
	select {
	case err := <-reported:
		if !strings.Contains(err.Error(), "MAX_REDELIVERIES") {
			t.Fatalf("reported error %q does not name MAX_REDELIVERIES", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the rejection was not reported to the error handler")
	}
	if !strings.Contains(logs.String(), "MAX_REDELIVERIES") {
		t.Fatal("the rejection was not logged")
	}
}

// TestConsumerQuorumDeliveryCount checks that the x-delivery-count header of
// a quorum queue bounds redeliveries for a consumer that never saw the
// message before. It also stops a consumer from its own callback.
func TestConsumerQuorumDeliveryCount(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerQuorumDeliveryCount)
}

func testConsumerQuorumDeliveryCount(t *testing.T, url string) {
	n := testNames(t, url)
	dlx, dlq := deadLetterQueue(t, url)
	l, _ := consumerLogger(t)
	opts := func(more ...Option) []Option {
		return namedOpts(url, l, n, append([]Option{WithQueueType("quorum"), WithQueueDurable(true),
			WithDeadLetterExchange(dlx)}, more...)...)
	}

	// First consumer: no limit; requeues the message 4 times, then stops
	// itself on the fifth delivery (requeueing it a fifth time).
	var firstCalls atomic.Int32
	var first *SyncConsumer
	first, err := NewSyncConsumer(opts(WithMaxRedeliveries(0), WithCallback(func(ctx context.Context, d Delivery) error {
		if firstCalls.Add(1) == 5 {
			if err := first.Stop(ctx); err != nil {
				return err
			}
		}
		return Requeue(nil)
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, first)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "counted by the broker")
	if err := r.wait(t, 15*time.Second); err != nil {
		t.Fatalf("Run after Stop from a callback: %v", err)
	}

	// Second consumer: at most 2 requeues; the broker says 5 happened.
	second := &recorder{}
	r2 := runConsumer(t, NewSyncConsumer, opts(WithMaxRedeliveries(2), WithCallback(func(ctx context.Context, d Delivery) error {
		second.add(d)
		return Requeue(nil)
	}))...)
	ins := backendChannel(t, url)
	waitUntil(t, 10*time.Second, "the message to be dead-lettered", func() bool { return queueDepth(t, ins, dlq) == 1 })
	stopNow(t, r2)
	seen := second.all()
	if len(seen) != 1 {
		t.Fatalf("second consumer saw the message %d times, want once", len(seen))
	}
	if deliveryCount(amqp.Table(seen[0].Headers)) < 2 {
		t.Fatalf("headers %v: want x-delivery-count of at least 2", seen[0].Headers)
	}
}

func TestConsumerPanic(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerPanic)
}

func testConsumerPanic(t *testing.T, url string) {
	n := testNames(t, url)
	dlx, dlq := deadLetterQueue(t, url)
	l, logs := consumerLogger(t)
	col := &recorder{}
	reported := make(chan error, 10)
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithDeadLetterExchange(dlx),
		WithErrorHandler(func(err error) { reported <- err }),
		WithCallback(func(ctx context.Context, d Delivery) error {
			if string(d.Body) == "boom" {
				panic("callback exploded")
			}
			col.add(d)
			return nil
		}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "boom", "fine")
	waitUntil(t, 10*time.Second, "the message after the panic", func() bool { return col.len() == 1 })
	ins := backendChannel(t, url)
	waitUntil(t, 10*time.Second, "the panicking message to be dead-lettered", func() bool { return queueDepth(t, ins, dlq) == 1 })
	stopNow(t, r)
	out := logs.String()
	if !strings.Contains(out, "callback exploded") || !strings.Contains(out, "stack=") || !strings.Contains(out, "testConsumerPanic") {
		t.Fatalf("the panic was not logged with its stack:\n%s", out)
	}
	// The stack is a list of frames, not debug.Stack's text printed as one
	// line of escaped newlines and tabs; it starts at the frame that panicked.
	if strings.Contains(out, `\n`) || strings.Contains(out, `\t`) || !strings.Contains(out, `stack="[github.com/omqs-go/omqs.testConsumerPanic`) {
		t.Fatalf("the stack is not logged as a list of frames from the panic:\n%s", out)
	}
	select {
	case err := <-reported:
		if !strings.Contains(err.Error(), "callback exploded") {
			t.Fatalf("reported %q", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the panic was not reported to the error handler")
	}
}

func TestAsyncConsumerConcurrency(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testAsyncConsumerConcurrency)
}

func testAsyncConsumerConcurrency(t *testing.T, url string) {
	const N = 5
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	var active, maxActive, arrived atomic.Int32
	barrier := make(chan struct{})
	col := &recorder{}
	r := runConsumer(t, NewAsyncConsumer, namedOpts(url, l, n, WithConcurrency(N), WithPrefetch(1),
		WithCallback(func(ctx context.Context, d Delivery) error {
			cur := active.Add(1)
			defer active.Add(-1)
			for {
				m := maxActive.Load()
				if cur <= m || maxActive.CompareAndSwap(m, cur) {
					break
				}
			}
			if arrived.Add(1) == N {
				close(barrier)
			}
			// The first N callbacks can only pass once all N are in.
			select {
			case <-barrier:
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(10 * time.Second):
				return errors.New("fewer than N callbacks ran at once")
			}
			col.add(d)
			return nil
		}))...)
	var bodies []string
	for i := range 3 * N {
		bodies = append(bodies, fmt.Sprint("parallel ", i))
	}
	publishTo(t, url, n.Exchange, "topic", false, n.Key, bodies...)
	waitUntil(t, 20*time.Second, "all messages", func() bool { return col.len() == len(bodies) })
	stopNow(t, r)
	if got := maxActive.Load(); got != N {
		t.Fatalf("at most %d callbacks ran at once, want exactly %d", got, N)
	}
}

func TestSyncConsumerOneAtATime(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testSyncConsumerOneAtATime)
}

func testSyncConsumerOneAtATime(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	var active, maxActive atomic.Int32
	col := &recorder{}
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(func(ctx context.Context, d Delivery) error {
		if active.Add(1) > 1 {
			maxActive.Store(2)
		}
		defer active.Add(-1)
		col.add(d)
		return nil
	}))...)
	var bodies []string
	for i := range 50 {
		bodies = append(bodies, fmt.Sprint(i))
	}
	publishTo(t, url, n.Exchange, "topic", false, n.Key, bodies...)
	waitUntil(t, 10*time.Second, "all messages", func() bool { return col.len() == len(bodies) })
	stopNow(t, r)
	if maxActive.Load() > 1 {
		t.Fatal("a SyncConsumer ran two callbacks at once")
	}
}

// TestConsumerStopWaitsForCallback: Stop returns only after the callback in
// flight returned and its delivery was acknowledged; deliveries prefetched
// but not handled go back to the queue.
func TestConsumerStopWaitsForCallback(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerStopWaitsForCallback)
}

func testConsumerStopWaitsForCallback(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	var returned atomic.Bool
	var calls atomic.Int32
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(func(ctx context.Context, d Delivery) error {
		calls.Add(1)
		entered <- struct{}{}
		<-release
		returned.Store(true)
		return nil
	}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "slow", "waits 1", "waits 2")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	stopDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stopDone <- r.c.Stop(ctx)
	}()
	waitUntil(t, 5*time.Second, "Ready to turn false", func() bool { return !r.c.Ready() })
	select {
	case err := <-stopDone:
		t.Fatalf("Stop returned (%v) while the callback was running", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-stopDone:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if !returned.Load() {
			t.Fatal("Stop returned before the callback did")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not return after the callback did")
	}
	if err := r.wait(t, 5*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("%d callbacks ran; after Stop began no new delivery should be handled", got)
	}
	// The slow one was acknowledged; the two prefetched ones went back.
	wantDepth(t, url, n.Queue, 2)
}

// TestConsumerStopDeadline: when Stop's context ends first, the callback's
// context is cancelled, Stop says how many callbacks were running, and the
// delivery goes back to the queue.
func TestConsumerStopDeadline(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerStopDeadline)
}

func testConsumerStopDeadline(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	entered := make(chan struct{}, 1)
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(func(ctx context.Context, d Delivery) error {
		entered <- struct{}{}
		<-ctx.Done()
		return fmt.Errorf("gave up: %w", ctx.Err())
	}))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "never finished")
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := r.c.Stop(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 callback(s) still running") {
		t.Fatalf("Stop = %v, want a deadline error counting 1 callback", err)
	}
	if err := r.wait(t, 10*time.Second); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ins := backendChannel(t, url)
	waitUntil(t, 10*time.Second, "the message to be back in the queue", func() bool { return queueDepth(t, ins, n.Queue) == 1 })
}

func TestConsumerSetCallbackDuringRun(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerSetCallbackDuringRun)
}

func testConsumerSetCallbackDuringRun(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	a, b := &recorder{}, &recorder{}
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(a.callback))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "for a")
	waitUntil(t, 10*time.Second, "the first callback", func() bool { return a.len() == 1 })
	r.c.SetCallback(b.callback)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "for b")
	waitUntil(t, 10*time.Second, "the second callback", func() bool { return b.len() == 1 })
	if a.len() != 1 || string(b.all()[0].Body) != "for b" {
		t.Fatalf("a saw %d, b saw %q", a.len(), b.all()[0].Body)
	}
}

// TestConsumerReadyAndContext: Ready is false before Run and after it; Run
// returns nil when its context ends, and cannot run again.
func TestConsumerReadyAndContext(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerReadyAndContext)
}

func testConsumerReadyAndContext(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	c, err := NewAsyncConsumer(namedOpts(url, l, n, WithCallback((&recorder{}).callback))...)
	if err != nil {
		t.Fatal(err)
	}
	if c.Ready() {
		t.Fatal("Ready before Run")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitUntil(t, 10*time.Second, "Ready", c.Ready)
	if err := c.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after its context ended = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
	if c.Ready() {
		t.Fatal("Ready after Run returned")
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run after Run returned = %v, want ErrStopped", err)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after Run returned: %v", err)
	}
}

func TestConsumerRunAfterStop(t *testing.T) {
	c, err := NewSyncConsumer(WithConfig(DefaultConfig()), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.Stop(context.Background()); err != nil {
			t.Fatalf("Stop before Run: %v", err)
		}
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrStopped) {
		t.Fatalf("Run after Stop = %v, want ErrStopped", err)
	}
}

func TestConsumerServerNamedQueue(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerServerNamedQueue)
}

func testConsumerServerNamedQueue(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	col := &recorder{}
	runConsumer(t, logConsumerFor("#"), baseOpts(url, l, WithExchange(n.Exchange, "topic", false),
		WithQueue(""), WithCallback(col.callback))...)
	publishTo(t, url, n.Exchange, "topic", false, "anything.at.all", "to the private queue")
	waitUntil(t, 10*time.Second, "the message", func() bool { return col.len() == 1 })
}

func TestConsumerDeliveryFields(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerDeliveryFields)
}

func testConsumerDeliveryFields(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	col := &recorder{}
	runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(col.callback))...)

	p, err := NewSyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(l), WithAppID("fields-test"),
		WithExchange(n.Exchange, "topic", false), WithQueue(""), WithKeys(n.Key))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.PublishMessage(ctx, Message{Key: n.Key, Body: []byte("with fields"), ContentType: "text/plain", Headers: map[string]any{"trace": "abc"}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Nested tables arrive as plain maps. (The publishers refuse nested
	// maps, so this one goes out through the transport seam.)
	if err := backendChannel(t, url).PublishWithContext(ctx, n.Exchange, n.Key, false, false, amqp.Publishing{
		Headers: amqp.Table{"nested": amqp.Table{"n": int32(7)}, "list": []any{amqp.Table{"x": "y"}}},
		Body:    []byte("nested headers"),
	}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "both messages", func() bool { return col.len() == 2 })
	d, d2 := col.all()[0], col.all()[1]
	if d.Exchange != n.Exchange || d.RoutingKey != n.Key || string(d.Body) != "with fields" ||
		d.ContentType != "text/plain" || d.MessageID == "" || d.AppID != "fields-test" ||
		time.Since(d.Timestamp) > time.Minute || d.Headers["trace"] != "abc" || d.Redelivered {
		t.Fatalf("delivery fields: %+v", d)
	}
	nested, ok := d2.Headers["nested"].(map[string]any)
	if !ok || nested["n"] != int32(7) {
		t.Fatalf("nested header is %T %v, want map[string]any", d2.Headers["nested"], d2.Headers["nested"])
	}
	if list, ok := d2.Headers["list"].([]any); !ok || len(list) != 1 {
		t.Fatalf("list header: %#v", d2.Headers["list"])
	} else if _, ok := list[0].(map[string]any); !ok {
		t.Fatalf("table inside a list is %T, want map[string]any", list[0])
	}
}

// TestConsumerWrongPassword runs on RabbitMQ only: the in-process broker has
// no credentials to get wrong.
func TestConsumerWrongPassword(t *testing.T) {
	t.Parallel()
	const password = "not-the-password-7f3a"
	bad := urlWithPassword(t, brokertest.URL(t), password)
	l, logs := consumerLogger(t)
	c, err := NewSyncConsumer(baseOpts(bad, l, WithReconnect(time.Second, 3))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = c.Run(ctx)
	if err == nil || !errors.Is(err, ErrConnection) {
		t.Fatalf("Run = %v, want ErrConnection", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("Run took %v to fail on wrong credentials", took)
	}
	if strings.Contains(err.Error(), password) || strings.Contains(logs.String(), password) {
		t.Fatalf("the password shows in the error or the log: %v", err)
	}
	t.Logf("Run: %v", err)
}

func TestConsumerInequivalentQueue(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerInequivalentQueue)
}

func testConsumerInequivalentQueue(t *testing.T, url string) {
	n := testNames(t, url)
	if _, err := backendChannel(t, url).QueueDeclare(n.Queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	l, _ := consumerLogger(t)
	c, err := NewSyncConsumer(namedOpts(url, l, n, WithQueueDurable(false))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err = c.Run(ctx)
	var ae *amqp.Error
	if !errors.Is(err, ErrInvalidQueue) || !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
		t.Fatalf("Run = %v, want ErrInvalidQueue with PRECONDITION_FAILED", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Run took %v to report a refused declaration", took)
	}
}

func TestConsumerInvalidOptions(t *testing.T) {
	cfg := WithConfig(DefaultConfig())
	cases := []struct {
		name  string
		build func() error
		want  string
	}{
		{"nil callback", func() error { _, err := NewSyncConsumer(cfg, WithCallback(nil)); return err }, "nil Callback"},
		{"negative prefetch", func() error { _, err := NewAsyncConsumer(cfg, WithPrefetch(-1)); return err }, "negative"},
		{"zero concurrency", func() error { _, err := NewAsyncConsumer(cfg, WithConcurrency(0)); return err }, "at least 1"},
		{"sync concurrency", func() error { _, err := NewSyncConsumer(cfg, WithConcurrency(4)); return err }, "one callback at a time"},
		{"negative max redeliveries", func() error { _, err := NewSyncConsumer(cfg, WithMaxRedeliveries(-1)); return err }, "negative"},
		{"publisher option", func() error { _, err := NewSyncConsumer(cfg, WithMandatory(true)); return err }, "WithMandatory(true) does not apply to NewSyncConsumer"},
		{"publisher section", func() error { _, err := NewSyncConsumer(cfg, WithSection("AsyncPublisher")); return err }, `WithSection("AsyncPublisher"): NewSyncConsumer reads one of the sections LogConsumer, EventConsumer`},
		{"event queue not durable", func() error { _, err := NewEventMsgConsumer(cfg, WithQueueDurable(false)); return err }, "always durable"},
		{"keys twice", func() error { _, err := NewLogMsgConsumer([]string{"a"}, cfg, WithKeys("b")); return err }, "both"},
		{"key too long", func() error { _, err := NewLogMsgConsumer([]string{strings.Repeat("k", 256)}, cfg); return err }, "longer than 255"},
		{"quorum not durable", func() error { _, err := NewSyncConsumer(cfg, WithQueueType("quorum")); return err }, "must be durable"},
		{"server-named quorum", func() error {
			_, err := NewSyncConsumer(cfg, WithQueue(""), WithQueueType("quorum"), WithQueueDurable(true))
			return err
		}, "server-named"},
		{"bad URL", func() error { _, err := NewSyncConsumer(cfg, WithURL("http://x")); return err }, "scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.build()
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestConsumerSettings(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LogConsumer.Prefetch = 7
	cfg.LogConsumer.Keys = []string{"from.file"}
	cfg.LogConsumer.DeadLetterExchange = "dlx.from.file"
	cfg.EventConsumer.QueueDurable = false
	quiet := WithLogger(slog.New(slog.DiscardHandler))
	cases := []struct {
		name  string
		build func() (*consumer, error)
		check func(t *testing.T, c *consumer)
	}{
		{"log consumer reads its section", func() (*consumer, error) {
			c, err := NewLogMsgConsumer(nil, WithConfig(cfg), quiet)
			return unwrap(c, err)
		}, func(t *testing.T, c *consumer) {
			if c.prefetch != 7 || strings.Join(c.topo.keys, ",") != "from.file" || c.topo.deadLetter != "dlx.from.file" ||
				c.topo.queueDurable || c.topo.exchange != LogExchange || !c.topo.durable || c.concurrency != 1 {
				t.Fatalf("%+v", c)
			}
		}},
		{"options beat the file", func() (*consumer, error) {
			c, err := NewLogMsgConsumer([]string{"arg.key"}, WithConfig(cfg), quiet, WithPrefetch(3),
				WithDeadLetterExchange(""), WithQueueDurable(true), WithQueue("mine"))
			return unwrap(c, err)
		}, func(t *testing.T, c *consumer) {
			if c.prefetch != 3 || strings.Join(c.topo.keys, ",") != "arg.key" || c.topo.deadLetter != "" ||
				!c.topo.queueDurable || c.topo.queue != "mine" || c.topo.arguments() != nil {
				t.Fatalf("%+v", c)
			}
		}},
		{"event queue durable whatever the file says", func() (*consumer, error) {
			c, err := NewEventMsgConsumer(WithConfig(cfg), quiet)
			return unwrap(c, err)
		}, func(t *testing.T, c *consumer) {
			if !c.topo.queueDurable || strings.Join(c.topo.keys, ",") != DefaultEventKey {
				t.Fatalf("%+v", c)
			}
		}},
		{"async prefetch at least concurrency", func() (*consumer, error) {
			c, err := NewAsyncConsumer(WithConfig(cfg), quiet, WithConcurrency(50), WithPrefetch(10))
			return unwrap(c, err)
		}, func(t *testing.T, c *consumer) {
			if c.prefetch != 50 || c.concurrency != 50 {
				t.Fatalf("prefetch %d concurrency %d", c.prefetch, c.concurrency)
			}
		}},
		{"async defaults", func() (*consumer, error) {
			c, err := NewAsyncConsumer(WithConfig(cfg), quiet)
			return unwrap(c, err)
		}, func(t *testing.T, c *consumer) {
			if c.prefetch != DefaultPrefetch || c.concurrency != DefaultConcurrency || c.redeliv.max != DefaultMaxRedeliveries ||
				c.topo.exchange != DefaultExchange || c.topo.queue != DefaultQueue || c.topo.durable || c.topo.queueDurable {
				t.Fatalf("%+v", c)
			}
		}},
		{"section chosen by option", func() (*consumer, error) {
			c, err := NewSyncConsumer(WithConfig(cfg), quiet, WithSection("LogConsumer"))
			return unwrap(c, err)
		}, func(t *testing.T, c *consumer) {
			if c.topo.exchange != LogExchange || c.prefetch != 7 {
				t.Fatalf("%+v", c)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.build()
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func unwrap(c interface{ core() *consumer }, err error) (*consumer, error) {
	if err != nil {
		return nil, err
	}
	return c.core(), nil
}

// core is promoted to the four public consumer types, which embed *consumer.
func (c *consumer) core() *consumer { return c }

// TestConsumerTypesMethodSet: the four consumer types share *consumer by
// embedding it; the only methods it lends them are the public five, so no
// internal method becomes part of the API by promotion.
func TestConsumerTypesMethodSet(t *testing.T) {
	want := []string{"Health", "Ready", "Run", "SetCallback", "Stats", "Stop"}
	for _, typ := range []reflect.Type{
		reflect.TypeFor[*SyncConsumer](), reflect.TypeFor[*AsyncConsumer](),
		reflect.TypeFor[*LogMsgConsumer](), reflect.TypeFor[*EventMsgConsumer](),
	} {
		var got []string
		for i := range typ.NumMethod() {
			got = append(got, typ.Method(i).Name)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%v has the exported methods %v, want %v", typ, got, want)
		}
	}
}

// TestZeroConsumer: a consumer value no constructor made returns an error
// instead of panicking.
func TestZeroConsumer(t *testing.T) {
	var c SyncConsumer
	if err := c.Run(t.Context()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Run = %v, want ErrInvalidConfig", err)
	}
	if err := c.Stop(t.Context()); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Stop = %v, want ErrInvalidConfig", err)
	}
	if c.Ready() {
		t.Error("Ready is true")
	}
	c.SetCallback(func(context.Context, Delivery) error { return nil })
}

func TestRedeliveryTable(t *testing.T) {
	var r redeliveryTable
	r.init(2, 3)
	d := func(id string) *amqp.Delivery { return &amqp.Delivery{MessageId: id} }
	for i, want := range []bool{true, true, false} {
		if _, ok := r.requeue(d("a")); ok != want {
			t.Fatalf("requeue %d of a: ok=%v, want %v", i+1, ok, want)
		}
	}
	// Rejected: forgotten, so a new message with the id starts over.
	if n, ok := r.requeue(d("a")); !ok || n != 1 {
		t.Fatalf("after rejection: n=%d ok=%v", n, ok)
	}
	r.forget(d("a"))
	if r.used.Load() != 0 {
		t.Fatalf("table holds %d after forget", r.used.Load())
	}
	// Bounded: the oldest entry is evicted.
	for _, id := range []string{"a", "b", "c", "d"} {
		r.requeue(d(id))
	}
	if len(r.count) != 3 || r.count["id:a"] != nil {
		t.Fatalf("table %v, want b, c, d", r.count)
	}
	// The broker's count wins when it is higher.
	h := &amqp.Delivery{MessageId: "q", Headers: amqp.Table{"x-delivery-count": int64(2)}}
	if n, ok := r.requeue(h); ok || n != 3 {
		t.Fatalf("with x-delivery-count 2: n=%d ok=%v", n, ok)
	}
	// Without an id, the content identifies the message.
	b1 := &amqp.Delivery{RoutingKey: "k", Body: []byte("same")}
	b2 := &amqp.Delivery{RoutingKey: "k", Body: []byte("same")}
	r.requeue(b1)
	if n, _ := r.requeue(b2); n != 2 {
		t.Fatalf("same content counted %d", n)
	}
	// 0 means no limit.
	var unlimited redeliveryTable
	unlimited.init(0, 3)
	for range 100 {
		if _, ok := unlimited.requeue(d("x")); !ok {
			t.Fatal("limit 0 refused a requeue")
		}
	}
}

// TestConsumerQueueDeletedReconnects: when the queue is deleted under the
// consumer, the broker cancels the subscription; the consumer reports it,
// declares the queue again and goes on receiving.
func TestConsumerQueueDeletedReconnects(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerQueueDeletedReconnects)
}

func testConsumerQueueDeletedReconnects(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	rec := &recorder{}
	reported := make(chan error, 10)
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithCallback(rec.callback),
		WithErrorHandler(func(err error) { reported <- err }))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "before")
	waitUntil(t, 10*time.Second, "the first message", func() bool { return rec.len() == 1 })

	if _, err := backendChannel(t, url).QueueDelete(n.Queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reported:
		if !errors.Is(err, ErrInvalidQueue) {
			t.Fatalf("reported %v, want ErrInvalidQueue", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the cancelled subscription was not reported")
	}
	waitUntil(t, 10*time.Second, "the consumer to be ready again", r.c.Ready)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "after")
	waitUntil(t, 10*time.Second, "the message after the reconnect", func() bool { return rec.len() == 2 })
}
