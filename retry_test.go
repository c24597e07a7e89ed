package omqs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRetryDelay(t *testing.T) {
	tests := []struct {
		base    time.Duration
		attempt int
		want    time.Duration
	}{
		{0, 1, 10 * time.Millisecond},
		{-time.Second, 1, 10 * time.Millisecond},
		{200 * time.Millisecond, 1, 200 * time.Millisecond},
		{200 * time.Millisecond, 2, 500 * time.Millisecond},
		{200 * time.Millisecond, 3, time.Second},
		{200 * time.Millisecond, 4, 2 * time.Second},
		{3 * time.Second, 1, 5 * time.Second},
		{time.Hour, 100, 24 * time.Hour},
		{48 * time.Hour, 1, 24 * time.Hour},
	}
	for _, tt := range tests {
		if got := retryDelay(tt.base, tt.attempt); got != tt.want {
			t.Errorf("retryDelay(%v, %d) = %v, want %v", tt.base, tt.attempt, got, tt.want)
		}
	}
	if got := retryQueueName("orders", 200*time.Millisecond); got != "orders.retry.200ms" {
		t.Errorf("retry queue %q", got)
	}
	if got := retryQueueName("amq.gen-abc", time.Minute); got != "omqs.amq.gen-abc.retry.1m0s" {
		t.Errorf("retry queue of a server-named queue %q", got)
	}
	err := RetryAfter(errors.New("busy"), time.Second)
	if err.Error() != "omqs: retry after 1s: busy" || IsRequeue(err) || retryOf(fmt.Errorf("wrapped: %w", err)) == nil {
		t.Errorf("RetryAfter: %v", err)
	}
}

// TestConsumerRetryAfter: a callback that returns RetryAfter(err, 200ms)
// sees the message again no sooner than 200 ms later, then no sooner than
// the doubled delay (rounded up to 500 ms), with its exchange, routing key
// and RetriesHeader counting; past MAX_REDELIVERIES the message is rejected
// to the dead-letter exchange. Both brokers, through retry queues with a TTL
// that dead-letter back.
func TestConsumerRetryAfter(t *testing.T) {
	const base = 200 * time.Millisecond
	for _, server := range []bool{false, true} {
		t.Run(map[bool]string{false: "named", true: "server-named"}[server], func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, url string) {
				n := testNames(t, url)
				dlx := n.Exchange + ".dlx"
				cleanupOn(t, url, []string{dlx}, []string{retryQueueName(n.Queue, 200*time.Millisecond), retryQueueName(n.Queue, 500*time.Millisecond)})

				type call struct {
					at         time.Time
					key, x     string
					retries    any
					body       string
					redelivers bool
				}
				var mu sync.Mutex
				var calls []call
				cb := func(_ context.Context, d Delivery) error {
					mu.Lock()
					calls = append(calls, call{time.Now(), d.RoutingKey, d.Exchange, d.Headers[RetriesHeader], string(d.Body), d.Redelivered})
					mu.Unlock()
					return RetryAfter(errors.New("busy"), base)
				}
				l, _ := consumerLogger(t)
				opts := namedOpts(url, l, n, WithDeadLetterExchange(dlx), WithMaxRedeliveries(2), WithCallback(cb))
				if server {
					opts = append(opts, WithQueue(""))
				}
				runConsumer(t, NewSyncConsumer, opts...)

				ch := backendChannel(t, url)
				dead, err := ch.QueueDeclare("", false, true, true, false, nil)
				if err != nil {
					t.Fatal(err)
				}
				if err := ch.QueueBind(dead.Name, "", dlx, false, nil); err != nil {
					t.Fatal(err)
				}
				dl := consumeQueue(t, ch, dead.Name)

				publishTo(t, url, n.Exchange, "topic", false, n.Key, "job")
				dl.waitCount(t, 1, 20*time.Second)

				mu.Lock()
				got := append([]call(nil), calls...)
				mu.Unlock()
				if len(got) != 3 {
					t.Fatalf("the callback ran %d times before the message was dead-lettered, want 3 (1 + MAX_REDELIVERIES 2): %+v", len(got), got)
				}
				wantRetries := []any{nil, int64(1), int64(2)}
				for i, c := range got {
					if c.key != n.Key || c.x != n.Exchange || c.body != "job" || fmt.Sprint(c.retries) != fmt.Sprint(wantRetries[i]) {
						t.Errorf("call %d: key %q exchange %q body %q retries %v; want %q, %q, job, %v",
							i, c.key, c.x, c.body, c.retries, n.Key, n.Exchange, wantRetries[i])
					}
				}
				if gap := got[1].at.Sub(got[0].at); gap < base {
					t.Errorf("first retry after %v, want at least %v", gap, base)
				}
				if gap := got[2].at.Sub(got[1].at); gap < 2*base {
					t.Errorf("second retry after %v, want at least %v", gap, 2*base)
				}
				d := dl.all()[0]
				if string(d.Body) != "job" || fmt.Sprint(d.Headers[RetriesHeader]) != "2" {
					t.Errorf("dead-lettered %q with %s=%v", d.Body, RetriesHeader, d.Headers[RetriesHeader])
				}
				if r, _ := d.Headers["x-first-death-reason"].(string); r != "expired" && r != "rejected" {
					t.Errorf("dead-lettered with x-first-death-reason %q", r)
				}
				if xd := fmt.Sprint(d.Headers["x-death"]); !strings.Contains(xd, "rejected") {
					t.Errorf("dead-lettered without a rejection in x-death: %s", xd)
				}
			})
		})
	}
}

// TestConsumerRetryFallsBackToRequeue: when the copy cannot go to a retry
// queue (here its name would be too long), the delivery is requeued at once
// rather than lost, and still counts against MAX_REDELIVERIES.
func TestConsumerRetryFallsBackToRequeue(t *testing.T) {
	url := memoryURL(t)
	n := testNames(t, url)
	n.Queue = strings.Repeat("q", MaxKeyLen-5)
	dlx := n.Exchange + ".dlx"
	var mu sync.Mutex
	calls := 0
	l, logs := consumerLogger(t)
	runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithDeadLetterExchange(dlx), WithMaxRedeliveries(1),
		WithCallback(func(context.Context, Delivery) error {
			mu.Lock()
			calls++
			mu.Unlock()
			return RetryAfter(errors.New("busy"), time.Hour)
		}))...)
	ch := backendChannel(t, url)
	dead, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(dead.Name, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	dl := consumeQueue(t, ch, dead.Name)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "job")
	dl.waitCount(t, 1, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if calls != 2 {
		t.Errorf("the callback ran %d times, want 2 (once requeued, then past MAX_REDELIVERIES 1)", calls)
	}
	if !strings.Contains(logs.String(), "could not publish a retry; the delivery is requeued at once instead") {
		t.Errorf("no warning about the failed retry:\n%s", logs.String())
	}
}
