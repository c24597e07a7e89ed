package omqs

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/transport"
)

// Delayed retry (RetryAfter), built as RabbitMQ users build it on a broker
// without plugins. For each delay it needs, a consumer declares a retry
// queue "<queue>.retry.<delay>" (such as "orders.retry.200ms") whose
// x-message-ttl is that delay and whose dead-letter exchange is the default
// exchange with the consumer's queue as dead-letter routing key: a message
// published there waits out the delay, expires, and is dead-lettered back
// onto the consumer's queue. The retry queue is durable when the consumer's
// queue is, exclusive to the connection when the consumer's queue is
// server-named. The delays are a fixed ladder, so that a queue holds
// messages of one TTL only (RabbitMQ expires messages at the head of a queue
// only) and a consumer declares a bounded number of queues.
//
// The consumer publishes a copy of the delivery to the retry queue on a
// channel in confirm mode, and acknowledges the delivery only once the
// broker confirmed the copy: a crash in between leaves both, so the callback
// may see the message twice (at least once, as everywhere else).

// Headers of a message on its way through a retry queue.
const (
	// RetriesHeader counts the requeues and retries of a message so far; a
	// delivery that came back from a retry queue has it.
	RetriesHeader       = "x-omqs-retries"
	retryExchangeHeader = "x-omqs-exchange"    // the exchange it was first published to
	retryKeyHeader      = "x-omqs-routing-key" // and its routing key
)

// retryBuckets are the delays of the retry queues, shortest first.
var retryBuckets = []time.Duration{
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
}

// retryDelay is the delay of the attempt-th retry (1 for the first) of a
// message whose callback asked for base: base, 2·base, 4·base..., rounded up
// to a bucket, at most the longest bucket.
func retryDelay(base time.Duration, attempt int) time.Duration {
	longest := retryBuckets[len(retryBuckets)-1]
	d := base
	for i := 1; i < attempt && d < longest; i++ {
		d *= 2
	}
	for _, b := range retryBuckets {
		if b >= d {
			return b
		}
	}
	return longest
}

// retryQueueName is the retry queue of queue for delay. A client may not
// declare a name that starts with "amq." (a server-named queue's), so such
// a name gets the prefix "omqs.".
func retryQueueName(queue string, delay time.Duration) string {
	name := queue + ".retry." + delay.String()
	if strings.HasPrefix(name, "amq.") {
		name = "omqs." + name
	}
	return name
}

// retriesOf reads RetriesHeader.
func retriesOf(h amqp.Table) int {
	switch v := h[RetriesHeader].(type) {
	case int:
		return v
	case int32:
		return int(v)
	case int64:
		return int(v)
	}
	return 0
}

// restoreRetried gives a delivery that came back from a retry queue (the
// default exchange, routed by the queue's name) the exchange and routing
// key it was first published with.
func restoreRetried(d *amqp.Delivery) {
	if _, ok := d.Headers[RetriesHeader]; !ok {
		return
	}
	if x, ok := d.Headers[retryExchangeHeader].(string); ok {
		d.Exchange = x
	}
	if k, ok := d.Headers[retryKeyHeader].(string); ok {
		d.RoutingKey = k
	}
}

// retryPublishing is the copy of d that goes to a retry queue, counting n
// retries.
func retryPublishing(d *amqp.Delivery, n int) amqp.Publishing {
	h := amqp.Table{}
	for k, v := range d.Headers {
		h[k] = v
	}
	h[RetriesHeader] = int64(n)
	h[retryExchangeHeader] = d.Exchange
	h[retryKeyHeader] = d.RoutingKey
	return amqp.Publishing{
		Headers:         h,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    d.DeliveryMode,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
}

// retrier publishes a session's retries: one channel in confirm mode on the
// session's connection, opened at the first retry, one publish at a time.
// Its methods are safe for concurrent use.
type retrier struct {
	conn      transport.Conn
	queue     string // the consumer's queue
	durable   bool   // retry queues are durable
	exclusive bool   // retry queues are exclusive (the queue is server-named)

	mu       sync.Mutex
	ch       transport.Channel // nil until the first retry, or after a failure
	confirms chan amqp.Confirmation
	declared map[string]bool
}

// publish sends msg to the retry queue for delay, declaring it first if
// this channel has not, and returns once the broker confirmed it. Any
// failure closes the channel; the next call opens another.
func (r *retrier) publish(ctx context.Context, delay time.Duration, msg amqp.Publishing) (string, error) {
	name := retryQueueName(r.queue, delay)
	if len(name) > MaxKeyLen {
		return name, fmt.Errorf("%w: retry queue name %q is longer than %d bytes", ErrInvalidQueue, name, MaxKeyLen)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.publishLocked(ctx, name, delay, msg); err != nil {
		if r.ch != nil {
			_ = r.ch.Close()
		}
		r.ch = nil
		return name, err
	}
	return name, nil
}

func (r *retrier) publishLocked(ctx context.Context, name string, delay time.Duration, msg amqp.Publishing) error {
	if r.ch == nil {
		ch, err := r.conn.Channel()
		if err != nil {
			return fmt.Errorf("%w: open the retry channel: %w", ErrInvalidChannel, err)
		}
		r.ch = ch
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("%w: confirm mode on the retry channel: %w", ErrInvalidChannel, err)
		}
		r.confirms = ch.NotifyPublish(make(chan amqp.Confirmation, 1))
		r.declared = map[string]bool{}
	}
	if !r.declared[name] {
		args := amqp.Table{
			"x-message-ttl":             int64(delay / time.Millisecond),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": r.queue,
		}
		if _, err := r.ch.QueueDeclare(name, r.durable, false, r.exclusive, false, args); err != nil {
			return fmt.Errorf("%w: declare retry queue %q (arguments %s): %w", ErrInvalidQueue, name, formatArgs(args), err)
		}
		r.declared[name] = true
	}
	seq := r.ch.GetNextPublishSeqNo()
	if err := r.ch.PublishWithContext(ctx, "", name, false, false, msg); err != nil {
		return fmt.Errorf("%w: publish to retry queue %q: %w", ErrInvalidChannel, name, err)
	}
	select {
	case c, ok := <-r.confirms:
		switch {
		case !ok:
			return fmt.Errorf("%w: the retry channel closed before the broker confirmed", ErrInvalidChannel)
		case c.DeliveryTag != seq:
			return fmt.Errorf("%w: confirm %d for publish %d on the retry channel", ErrInvalidChannel, c.DeliveryTag, seq)
		case !c.Ack:
			return fmt.Errorf("%w: retry queue %q", ErrNacked, name)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for the broker to confirm a retry: %w", ErrInvalidChannel, ctx.Err())
	}
}

// retryConfirmTimeout bounds the wait for the broker's confirm of a retry.
const retryConfirmTimeout = 30 * time.Second

// retry settles d, whose callback returned re: it publishes a copy to a
// retry queue and acknowledges d once the copy is confirmed; past
// MAX_REDELIVERIES it rejects d instead. If the copy cannot be published, d
// is requeued at once (no delay, but not lost). It returns what became of d.
func (c *consumer) retry(ctx context.Context, sess *consumerSession, d *amqp.Delivery, re *retryError) Outcome {
	n := retriesOf(d.Headers) + c.redeliv.requeues(d) + 1
	if max := c.redeliv.max; max != 0 && n > max {
		c.redeliv.forget(d)
		c.rep.report(errorOf(c.who, fmt.Errorf("message %q (key %q) was retried %d times, more than MAX_REDELIVERIES (%d); rejected: %w",
			d.MessageId, d.RoutingKey, n-1, max, re)))
		c.st.rejects.Add(1)
		c.reject(sess, d)
		return OutcomeReject
	}
	delay := retryDelay(re.delay, n)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), retryConfirmTimeout)
	defer cancel()
	name, err := sess.retry.publish(pctx, delay, retryPublishing(d, n))
	if err != nil {
		c.log.Warn("omqs: could not publish a retry; the delivery is requeued at once instead", "consumer", c.name,
			"key", d.RoutingKey, "id", d.MessageId, "retry_queue", name, "error", err.Error())
		if _, ok := c.redeliv.requeue(d); !ok {
			c.st.rejects.Add(1)
			c.reject(sess, d)
			return OutcomeReject
		}
		c.st.requeues.Add(1)
		c.requeue(sess, d)
		return OutcomeRequeue
	}
	c.redeliv.forget(d)
	c.st.retries.Add(1)
	c.st.acks.Add(1)
	c.log.Debug("omqs: delivery retried later", "consumer", c.name, "key", d.RoutingKey, "id", d.MessageId,
		"retry", n, "delay", delay, "retry_queue", name, "error", re.Error())
	sess.acks.ack(d.DeliveryTag)
	return OutcomeRetry
}
