package omqs

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestConsumerMaxBodySize publishes, with a raw channel, a body one byte
// over the consumer's MAX_BODY_SIZE and one exactly at it: the first is
// rejected without requeue (here dead-lettered) and reported, and never
// reaches the callback; the second does.
func TestConsumerMaxBodySize(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testConsumerMaxBodySize)
}

func testConsumerMaxBodySize(t *testing.T, url string) {
	const limit = 1 << 20
	n := testNames(t, url)
	dlx, dlq := deadLetterQueue(t, url)
	l, _ := consumerLogger(t)
	rec := &recorder{}
	reports := make(chan error, 8)
	r := runConsumer(t, NewSyncConsumer, namedOpts(url, l, n, WithDeadLetterExchange(dlx), WithMaxBodySize(limit),
		WithCallback(rec.callback), WithErrorHandler(func(err error) {
			select {
			case reports <- err:
			default:
			}
		}))...)
	ch := backendChannel(t, url)
	for _, size := range []int{limit + 1, limit} {
		err := ch.PublishWithContext(testCtx(t, 10*time.Second), n.Exchange, n.Key, false, false,
			amqp.Publishing{MessageId: strconv.Itoa(size), Body: make([]byte, size)})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "the delivery at the limit", func() bool { return rec.len() == 1 })
	if got := rec.all()[0]; len(got.Body) != limit {
		t.Fatalf("callback got a body of %d bytes, want %d", len(got.Body), limit)
	}
	ins := backendChannel(t, url)
	waitUntil(t, 10*time.Second, "the oversized delivery dead-lettered", func() bool { return queueDepth(t, ins, dlq) == 1 })
	select {
	case err := <-reports:
		if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "MAX_BODY_SIZE") ||
			!strings.Contains(err.Error(), strconv.Itoa(limit+1)) {
			t.Fatalf("report %v, want ErrInvalidMessage naming MAX_BODY_SIZE and the size", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the oversized delivery was not reported")
	}
	stopNow(t, r)
	if got := r.c.(*SyncConsumer).consumer.tooBig.Load(); got != 1 {
		t.Fatalf("%d deliveries counted too big, want 1", got)
	}
	wantDepth(t, url, n.Queue, 0)
}
