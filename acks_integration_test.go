package omqs

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// One callback that does not end must not hold the acknowledgements of the
// others: with a prefetch of 8 (acks go in twos) and 4 callbacks at once,
// the broker stops delivering once 8 deliveries are unacknowledged, so the
// other 39 messages get through only if their acknowledgements are sent
// while the slow one runs.
func TestSlowCallbackDoesNotHoldAcks(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testSlowCallbackDoesNotHoldAcks)
}

func testSlowCallbackDoesNotHoldAcks(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	release := make(chan struct{})
	var others atomic.Int32
	c, err := NewAsyncConsumer(namedOpts(url, l, n, WithConcurrency(4), WithPrefetch(8),
		WithCallback(func(ctx context.Context, d Delivery) error {
			if string(d.Body) == "slow" {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
				return nil
			}
			others.Add(1)
			return nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, c)
	bodies := []string{"slow"}
	for i := range 39 {
		bodies = append(bodies, fmt.Sprint("quick ", i))
	}
	publishTo(t, url, n.Exchange, "topic", false, n.Key, bodies...)
	waitUntil(t, 20*time.Second, "the 39 quick messages while the slow one runs", func() bool { return others.Load() == 39 })
	close(release)
	waitUntil(t, 10*time.Second, "every acknowledgement", func() bool { return c.Stats().Acks == 40 })
	stopNow(t, r)
	wantDepth(t, url, n.Queue, 0)
}

// Acknowledgements sent together leave nothing unacknowledged: after a run
// of deliveries and a graceful stop, the queue holds nothing, and a new
// consumer receives nothing again.
func TestBatchedAcksSettleEverything(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testBatchedAcksSettleEverything)
}

func testBatchedAcksSettleEverything(t *testing.T, url string) {
	n := testNames(t, url)
	l, _ := consumerLogger(t)
	const N = 1001 // not a multiple of the batch: the last ones go by the timer or at Stop
	var got atomic.Int32
	c, err := NewSyncConsumer(namedOpts(url, l, n, WithPrefetch(256),
		WithCallback(func(context.Context, Delivery) error { got.Add(1); return nil }))...)
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, c)
	bodies := make([]string, N)
	for i := range bodies {
		bodies[i] = fmt.Sprint("m", i)
	}
	publishTo(t, url, n.Exchange, "topic", false, n.Key, bodies...)
	waitUntil(t, 30*time.Second, "every delivery", func() bool { return got.Load() == N })
	stopNow(t, r)
	if st := c.Stats(); st.Acks != N || st.Deliveries != N {
		t.Fatalf("stats %+v, want %d deliveries and acks", st, N)
	}
	wantDepth(t, url, n.Queue, 0)

	var again atomic.Int32
	r = runConsumer(t, NewSyncConsumer, namedOpts(url, l, n,
		WithCallback(func(context.Context, Delivery) error { again.Add(1); return nil }))...)
	publishTo(t, url, n.Exchange, "topic", false, n.Key, "marker")
	waitUntil(t, 10*time.Second, "the marker", func() bool { return again.Load() >= 1 })
	stopNow(t, r)
	if g := again.Load(); g != 1 {
		t.Fatalf("a new consumer got %d deliveries, want only the marker", g)
	}
}
