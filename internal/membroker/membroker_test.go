package membroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// bubble runs f in a synctest bubble on a broker of its own, which is reset
// (closing every connection) when f returns.
func bubble(t *testing.T, f func(t *testing.T, b *Broker)) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		b := Get("unit-" + t.Name())
		defer b.Reset()
		f(t, b)
	})
}

func dial(t *testing.T, b *Broker) *Connection {
	t.Helper()
	c, err := b.Dial()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func open(t *testing.T, b *Broker) *Channel {
	t.Helper()
	ch, err := dial(t, b).Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func declare(t *testing.T, ch *Channel, name string, args amqp.Table) {
	t.Helper()
	if _, err := ch.QueueDeclare(name, false, false, false, false, args); err != nil {
		t.Fatal(err)
	}
}

// depth returns the number of ready messages in queue q.
func depth(t *testing.T, ch *Channel, q string) int {
	t.Helper()
	st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
	must(t, err)
	return st.Messages
}

func send(t *testing.T, ch *Channel, exchange, key, body string) {
	t.Helper()
	must(t, ch.PublishWithContext(context.Background(), exchange, key, false, false, amqp.Publishing{Body: []byte(body)}))
}

// take receives from c, failing if nothing is there once every goroutine of
// the bubble is blocked.
func take[T any](t *testing.T, c <-chan T) T {
	t.Helper()
	synctest.Wait()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatal("channel closed")
		}
		return v
	default:
		t.Fatal("nothing received")
	}
	var zero T
	return zero
}

// empty fails if c has something or is closed once the bubble is idle.
func empty[T any](t *testing.T, c <-chan T) {
	t.Helper()
	synctest.Wait()
	select {
	case v, ok := <-c:
		t.Fatalf("received %+v (open %v), want nothing", v, ok)
	default:
	}
}

// isClosed fails unless c is closed once the bubble is idle (values still
// buffered are discarded).
func isClosed[T any](t *testing.T, c <-chan T) {
	t.Helper()
	synctest.Wait()
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		default:
			t.Fatal("channel not closed")
		}
	}
}

func wantErr(t *testing.T, err error, code int, reason string) {
	t.Helper()
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != code || (reason != "" && ae.Reason != reason) {
		t.Fatalf("error %v, want %d %q", err, code, reason)
	}
}

func TestTopicExchangeRouting(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.ExchangeDeclare("logs", "topic", true, false, false, false, nil))
		patterns := map[string]string{"all": "#", "debug": "*.debug", "az": "a.#.z", "x": "#.x", "exact": "a.b"}
		for q, p := range patterns {
			declare(t, ch, q, nil)
			must(t, ch.QueueBind(q, p, "logs", false, nil))
		}
		for _, k := range []string{"a.b", "app.debug", "a.q.z", "q.x", "nothing.here"} {
			send(t, ch, "logs", k, k)
		}
		want := map[string]int{"all": 5, "debug": 1, "az": 1, "x": 1, "exact": 1}
		for q, n := range want {
			if got := depth(t, ch, q); got != n {
				t.Errorf("queue %s (%s) has %d, want %d", q, patterns[q], got, n)
			}
		}
		if s := b.Stats(); s.Published != 5 || s.Routed != 5 || s.Unroutable != 0 {
			t.Errorf("stats %+v", s)
		}
	})
}

func TestDefaultExchange(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "q", nil)
		send(t, ch, "", "q", "direct to q")
		send(t, ch, "", "missing", "vanishes")
		ds, err := ch.Consume("q", "", true, false, false, false, nil)
		must(t, err)
		if d := take(t, ds); string(d.Body) != "direct to q" || d.Exchange != "" || d.RoutingKey != "q" {
			t.Fatalf("delivery %+v", d)
		}
		if s := b.Stats(); s.Published != 2 || s.Routed != 1 || s.Unroutable != 1 || s.Returned != 0 {
			t.Fatalf("stats %+v", s)
		}
		wantErr(t, open(t, b).ExchangeDeclare("", "direct", true, false, false, false, nil), amqp.AccessRefused, "")
	})
}

func TestHeadersAndCCRouting(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		for _, q := range []string{"a", "b", "c"} {
			declare(t, ch, q, nil)
		}
		must(t, ch.ExchangeDeclare("d", "direct", false, false, false, false, nil))
		must(t, ch.QueueBind("a", "ka", "d", false, nil))
		must(t, ch.QueueBind("b", "kb", "d", false, nil))
		must(t, ch.QueueBind("c", "kc", "d", false, nil))
		must(t, ch.PublishWithContext(context.Background(), "d", "ka", false, false, amqp.Publishing{
			Headers: amqp.Table{"CC": []any{"kb"}, "BCC": []any{"kc"}},
		}))
		for _, q := range []string{"a", "b", "c"} {
			ds, err := ch.Consume(q, "", true, false, false, false, nil)
			must(t, err)
			d := take(t, ds)
			if _, has := d.Headers["BCC"]; has || d.RoutingKey != "ka" {
				t.Fatalf("queue %s delivery %+v", q, d)
			}
		}
	})
}

func TestAlternateExchange(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.ExchangeDeclare("ae", "fanout", false, false, false, false, nil))
		must(t, ch.ExchangeDeclare("main", "direct", false, false, false, false, amqp.Table{"alternate-exchange": "ae"}))
		declare(t, ch, "unrouted", nil)
		must(t, ch.QueueBind("unrouted", "", "ae", false, nil))
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		must(t, ch.PublishWithContext(context.Background(), "main", "nokey", true, false, amqp.Publishing{}))
		empty(t, returns)
		if n := depth(t, ch, "unrouted"); n != 1 {
			t.Fatalf("alternate exchange queue has %d", n)
		}
	})
}

func TestCloseAllConnections(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		c1, c2 := dial(t, b), dial(t, b)
		cn1 := c1.NotifyClose(make(chan *amqp.Error, 1))
		cn2 := c2.NotifyClose(make(chan *amqp.Error, 1))
		ch, err := c1.Channel()
		must(t, err)
		chn := ch.NotifyClose(make(chan *amqp.Error, 1))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
		declare(t, ch, "q", nil)
		ds, err := ch.Consume("q", "", false, false, false, false, nil)
		must(t, err)
		send(t, ch, "", "q", "unacked")
		take(t, ds)

		b.CloseAllConnections("closed via test")
		want := "CONNECTION_FORCED - closed via test"
		for i, n := range []chan *amqp.Error{cn1, cn2, chn} {
			e := take(t, n)
			if e.Code != amqp.ConnectionForced || e.Reason != want || !e.Server || e.Recover {
				t.Fatalf("listener %d got %+v", i, e)
			}
			isClosed(t, n)
		}
		isClosed(t, ds)
		isClosed(t, confirms)
		if !c1.IsClosed() || !ch.IsClosed() {
			t.Fatal("not closed")
		}
		if _, err := c1.Channel(); !errors.Is(err, amqp.ErrClosed) {
			t.Fatalf("Channel on closed connection: %v", err)
		}
		if err := c1.Close(); !errors.Is(err, amqp.ErrClosed) {
			t.Fatalf("Close of closed connection: %v", err)
		}
		// Registering on a closed connection closes the listener at once.
		isClosed(t, c1.NotifyClose(make(chan *amqp.Error)))
		isClosed(t, c1.NotifyBlocked(make(chan amqp.Blocking)))
		isClosed(t, ch.NotifyClose(make(chan *amqp.Error)))
		isClosed(t, ch.NotifyPublish(make(chan amqp.Confirmation)))
		isClosed(t, ch.NotifyReturn(make(chan amqp.Return)))
		// The unacknowledged message went back to its queue.
		ch2 := open(t, b)
		if n := depth(t, ch2, "q"); n != 1 {
			t.Fatalf("queue has %d messages", n)
		}
	})
}

func TestClientCloseClosesListenersWithoutError(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		c := dial(t, b)
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		bl := c.NotifyBlocked(make(chan amqp.Blocking, 1))
		ch, err := c.Channel()
		must(t, err)
		chn := ch.NotifyClose(make(chan *amqp.Error, 1))
		must(t, c.Close())
		for _, n := range []chan *amqp.Error{cn, chn} {
			if e, ok := <-n; ok {
				t.Fatalf("got %v on client close", e)
			}
		}
		isClosed(t, bl)
		if err := ch.Close(); err != nil {
			t.Fatalf("Close of a closed channel: %v", err)
		}
		if err := ch.PublishWithContext(context.Background(), "", "q", false, false, amqp.Publishing{}); !errors.Is(err, amqp.ErrClosed) {
			t.Fatalf("publish on closed channel: %v", err)
		}
	})
}

func TestBlocked(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		c := dial(t, b)
		blocks := c.NotifyBlocked(make(chan amqp.Blocking, 2))
		ch, err := c.Channel()
		must(t, err)
		declare(t, ch, "q", nil)

		b.SetBlocked(true)
		if got := take(t, blocks); got != (amqp.Blocking{Active: true, Reason: "low on memory"}) {
			t.Fatalf("got %+v", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err = ch.PublishWithContext(ctx, "", "q", false, false, amqp.Publishing{})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("blocked publish returned %v after %s", err, time.Since(start))
		}

		done := make(chan error, 1)
		go func() { done <- ch.PublishWithContext(context.Background(), "", "q", false, false, amqp.Publishing{}) }()
		empty(t, done)
		b.SetBlocked(false)
		if got := take(t, blocks); got != (amqp.Blocking{Active: false}) {
			t.Fatalf("got %+v", got)
		}
		must(t, take(t, done))
		if n := depth(t, ch, "q"); n != 1 {
			t.Fatalf("queue has %d messages, want 1", n)
		}

		// A blocked publish returns when its channel closes.
		b.SetBlocked(true)
		go func() { done <- ch.PublishWithContext(context.Background(), "", "q", false, false, amqp.Publishing{}) }()
		empty(t, done)
		must(t, ch.Close())
		if err := take(t, done); !errors.Is(err, amqp.ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
		b.SetBlocked(false)
	})
}

// TestBlockedTellsLaterPublishers: a connection opened while an alarm is
// raised is told it is blocked when it publishes, once, and told when the
// alarm clears; a connection that does not publish is not told.
func TestBlockedTellsLaterPublishers(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		declare(t, open(t, b), "q", nil)
		b.SetBlocked(true)
		pub, idle := dial(t, b), dial(t, b)
		pubBlocks := pub.NotifyBlocked(make(chan amqp.Blocking, 4))
		idleBlocks := idle.NotifyBlocked(make(chan amqp.Blocking, 4))
		ch, err := pub.Channel()
		must(t, err)
		empty(t, pubBlocks)

		for range 2 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := ch.PublishWithContext(ctx, "", "q", false, false, amqp.Publishing{})
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("blocked publish returned %v", err)
			}
		}
		if got := take(t, pubBlocks); got != (amqp.Blocking{Active: true, Reason: "low on memory"}) {
			t.Fatalf("got %+v", got)
		}
		empty(t, pubBlocks) // told once
		empty(t, idleBlocks)

		b.SetBlocked(false)
		if got := take(t, pubBlocks); got != (amqp.Blocking{Active: false}) {
			t.Fatalf("got %+v", got)
		}
		empty(t, idleBlocks)
		send(t, ch, "", "q", "after the alarm")

		// The next alarm is told again, to every open connection.
		b.SetBlocked(true)
		if got := take(t, pubBlocks); !got.Active {
			t.Fatalf("got %+v", got)
		}
		if got := take(t, idleBlocks); !got.Active {
			t.Fatalf("got %+v", got)
		}
		b.SetBlocked(false)
	})
}

func TestImplicitLengthLimit(t *testing.T) {
	b := Get("unit-" + t.Name())
	defer b.Reset()
	ch := open(t, b)
	declare(t, ch, "q", nil)
	for i := 0; i < DefaultMaxQueueLength; i++ {
		send(t, ch, "", "q", "m")
	}
	// Without confirms the message is dropped and counted.
	send(t, ch, "", "q", "over")
	if s := b.Stats(); s.Dropped != 1 {
		t.Fatalf("stats %+v", s)
	}
	// In confirm mode it is nacked.
	must(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	send(t, ch, "", "q", "over")
	if c := <-confirms; c.Ack || c.DeliveryTag != 1 {
		t.Fatalf("confirm %+v, want nack", c)
	}
	if n := depth(t, ch, "q"); n != DefaultMaxQueueLength {
		t.Fatalf("queue has %d", n)
	}
	// An explicit x-max-length lifts the implicit limit.
	declare(t, ch, "big", amqp.Table{"x-max-length": DefaultMaxQueueLength + 1, "x-overflow": "reject-publish"})
	for i := 0; i <= DefaultMaxQueueLength; i++ {
		send(t, ch, "", "big", "m")
		if c := <-confirms; !c.Ack {
			t.Fatalf("message %d nacked", i)
		}
	}
}

func TestPrefetchAppliesToLaterConsumers(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "early", nil)
		declare(t, ch, "late", nil)
		for i := 0; i < 5; i++ {
			send(t, ch, "", "early", "e")
			send(t, ch, "", "late", "l")
		}
		c := open(t, b)
		early, err := c.Consume("early", "", false, false, false, false, nil)
		must(t, err)
		must(t, c.Qos(1, 0, false))
		late, err := c.Consume("late", "", false, false, false, false, nil)
		must(t, err)
		for i := 0; i < 5; i++ {
			take(t, early) // no limit: all five
		}
		d := take(t, late)
		empty(t, late)
		must(t, d.Ack(false))
		take(t, late)
	})
}

func TestAutoAck(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "q", nil)
		send(t, ch, "", "q", "1")
		c := open(t, b)
		must(t, c.Qos(1, 0, false)) // ignored with autoAck
		ds, err := c.Consume("q", "", true, false, false, false, nil)
		must(t, err)
		send(t, ch, "", "q", "2")
		d1, d2 := take(t, ds), take(t, ds)
		if string(d1.Body) != "1" || string(d2.Body) != "2" || d2.DeliveryTag != 2 {
			t.Fatalf("got %+v %+v", d1, d2)
		}
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		must(t, d1.Ack(false)) // not acknowledgeable: unknown delivery tag
		wantErr(t, take(t, cn), amqp.PreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 1")
		if n := depth(t, ch, "q"); n != 0 {
			t.Fatalf("autoAck messages came back: %d", n)
		}
	})
}

func TestSlowConsumerDoesNotBlockBroker(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		pub := open(t, b)
		declare(t, pub, "slow", nil)
		declare(t, pub, "fast", nil)
		c := open(t, b)
		slow, err := c.Consume("slow", "", false, false, false, false, nil)
		must(t, err)
		fast, err := open(t, b).Consume("fast", "", true, false, false, false, nil)
		must(t, err)
		must(t, pub.Confirm(false))
		confirms := pub.NotifyPublish(make(chan amqp.Confirmation)) // never read until the end
		// More messages than the slow consumer takes ahead, fewer confirms
		// than make the publisher wait for the listener.
		const n = 4000
		for i := 0; i < n; i++ {
			send(t, pub, "", "slow", "s")
		}
		send(t, pub, "", "fast", "f")
		if d := take(t, fast); string(d.Body) != "f" {
			t.Fatalf("fast got %s", d.Body)
		}
		first := take(t, slow)
		must(t, first.Ack(false))
		for i := 1; i <= n+1; i++ {
			if cf := take(t, confirms); cf.DeliveryTag != uint64(i) || !cf.Ack {
				t.Fatalf("confirm %+v, want %d", cf, i)
			}
		}
	})
}

func TestNackMultipleRequeueKeepsOrder(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "q", nil)
		for _, s := range []string{"1", "2", "3", "4"} {
			send(t, ch, "", "q", s)
		}
		c := open(t, b)
		must(t, c.Qos(3, 0, false))
		ds, err := c.Consume("q", "", false, false, false, false, nil)
		must(t, err)
		take(t, ds)
		take(t, ds)
		d3 := take(t, ds)
		must(t, c.Nack(d3.DeliveryTag, true, true))
		var got []string
		for i := 0; i < 3; i++ {
			d := take(t, ds)
			got = append(got, fmt.Sprintf("%s:%v", d.Body, d.Redelivered))
		}
		if strings.Join(got, " ") != "1:true 2:true 3:true" {
			t.Fatalf("got %v", got)
		}
		// Ack(0, multiple) settles everything outstanding.
		must(t, c.Ack(0, true))
		d4 := take(t, ds)
		if string(d4.Body) != "4" {
			t.Fatalf("got %s", d4.Body)
		}
	})
}

func TestQuorumDeliveryLimit(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "dead", nil)
		_, err := ch.QueueDeclare("qq", true, false, false, false, amqp.Table{
			"x-queue-type": "quorum", "x-delivery-limit": 1,
			"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead",
		})
		must(t, err)
		send(t, ch, "", "qq", "poison")
		ds, err := ch.Consume("qq", "", false, false, false, false, nil)
		must(t, err)
		must(t, take(t, ds).Nack(false, true))
		d := take(t, ds)
		if d.Headers["x-delivery-count"] != int64(1) {
			t.Fatalf("headers %v", d.Headers)
		}
		must(t, d.Nack(false, true)) // count 2 > limit 1: dead-lettered
		empty(t, ds)
		dd, err := ch.Consume("dead", "", true, false, false, false, nil)
		must(t, err)
		got := take(t, dd)
		if xd := got.Headers["x-death"].([]any)[0].(amqp.Table); xd["reason"] != "delivery_limit" {
			t.Fatalf("x-death %v", xd)
		}
	})
}

func TestSingleActiveConsumer(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "sac", amqp.Table{"x-single-active-consumer": true})
		c1, err := ch.Consume("sac", "c1", false, false, false, false, nil)
		must(t, err)
		c2, err := ch.Consume("sac", "c2", false, false, false, false, nil)
		must(t, err)
		send(t, ch, "", "sac", "1")
		send(t, ch, "", "sac", "2")
		take(t, c1)
		take(t, c1)
		empty(t, c2)
		must(t, ch.Cancel("c1", false))
		isClosed(t, c1)
		send(t, ch, "", "sac", "3")
		if d := take(t, c2); string(d.Body) != "3" {
			t.Fatalf("got %s", d.Body)
		}
	})
}

func TestPerMessageTTL(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "q", nil)
		must(t, ch.PublishWithContext(context.Background(), "", "q", false, false, amqp.Publishing{Body: []byte("short"), Expiration: "1000"}))
		send(t, ch, "", "q", "forever")
		<-time.After(1500 * time.Millisecond) // fake time in the bubble
		ds, err := ch.Consume("q", "", true, false, false, false, nil)
		must(t, err)
		if d := take(t, ds); string(d.Body) != "forever" {
			t.Fatalf("got %s", d.Body)
		}

		// TTL 0: delivered only to a consumer that can take it at once.
		declare(t, ch, "zero", nil)
		must(t, ch.PublishWithContext(context.Background(), "", "zero", false, false, amqp.Publishing{Expiration: "0"}))
		if n := depth(t, ch, "zero"); n != 0 {
			t.Fatalf("TTL 0 message kept: %d", n)
		}
	})
}

func TestFrameErrorClosesConnection(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		c := dial(t, b)
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		ch, err := c.Channel()
		must(t, err)
		long := strings.Repeat("k", 256)
		err = ch.PublishWithContext(context.Background(), "", long, false, false, amqp.Publishing{})
		if err == nil || err.Error() != fmt.Sprintf("amqp: shortstr %q exceeds 255 bytes", long) {
			t.Fatalf("got %v", err)
		}
		e := take(t, cn)
		if e.Code != amqp.FrameError || e.Server {
			t.Fatalf("close error %+v", e)
		}
		if s := b.Stats(); s.Published != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestQosErrors(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		if err := ch.Qos(-1, 0, false); err == nil {
			t.Fatal("negative prefetch accepted")
		}
		wantErr(t, ch.Qos(1, 10, false), amqp.NotImplemented, "NOT_IMPLEMENTED - prefetch_size!=0 (10)")
		if !ch.conn.IsClosed() {
			t.Fatal("connection open")
		}
	})
}

func TestQueueDeleteCancelsConsumers(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "q", nil)
		send(t, ch, "", "q", "m")
		c := open(t, b)
		ds, err := c.Consume("q", "tag", false, false, false, false, nil)
		must(t, err)
		d := take(t, ds)
		n, err := ch.QueueDelete("q", false, false, false)
		must(t, err)
		if n != 0 {
			t.Fatalf("deleted with %d ready", n)
		}
		isClosed(t, ds)
		must(t, d.Ack(false)) // the queue is gone; the ack is accepted
		// The tag can be used again.
		declare(t, ch, "q", nil)
		_, err = c.Consume("q", "tag", false, false, false, false, nil)
		must(t, err)
		if c.IsClosed() {
			t.Fatal("channel closed")
		}
	})
}

func TestExchangeAutoDelete(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.ExchangeDeclare("ax", "fanout", false, true, false, false, nil))
		declare(t, ch, "q", nil)
		must(t, ch.QueueBind("q", "", "ax", false, nil))
		must(t, ch.QueueUnbind("q", "", "ax", nil))
		wantErr(t, ch.ExchangeDeclarePassive("ax", "fanout", false, true, false, false, nil), amqp.NotFound, "")
	})
}

func TestInternalExchange(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.ExchangeDeclare("ix", "fanout", false, false, true, false, nil))
		cn := ch.NotifyClose(make(chan *amqp.Error, 1))
		send(t, ch, "ix", "", "m")
		wantErr(t, take(t, cn), amqp.AccessRefused, "ACCESS_REFUSED - cannot publish to internal exchange 'ix' in vhost '/'")
	})
}

func TestNoWaitErrorsCloseTheChannel(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		cn := ch.NotifyClose(make(chan *amqp.Error, 1))
		q, err := ch.QueueDeclarePassive("missing", false, false, false, true, nil)
		if err != nil || q.Name != "missing" {
			t.Fatalf("noWait passive declare: %+v %v", q, err)
		}
		wantErr(t, take(t, cn), amqp.NotFound, "NOT_FOUND - no queue 'missing' in vhost '/'")
		ch = open(t, b)
		ds, err := ch.Consume("missing", "", false, false, false, true, nil)
		must(t, err)
		isClosed(t, ds)
		if !ch.IsClosed() {
			t.Fatal("channel open")
		}
	})
}

func TestGetNextPublishSeqNo(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		send(t, ch, "", "q", "before confirm mode")
		if n := ch.GetNextPublishSeqNo(); n != 1 {
			t.Fatalf("got %d", n)
		}
		must(t, ch.Confirm(false))
		send(t, ch, "", "q", "1")
		send(t, ch, "", "q", "2")
		if n := ch.GetNextPublishSeqNo(); n != 3 {
			t.Fatalf("got %d", n)
		}
	})
}

func TestReset(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		c := dial(t, b)
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		ch, err := c.Channel()
		must(t, err)
		must(t, ch.ExchangeDeclare("x", "topic", true, false, false, false, nil))
		declare(t, ch, "q", nil)
		send(t, ch, "", "q", "m")
		b.Reset()
		wantErr(t, take(t, cn), amqp.ConnectionForced, "CONNECTION_FORCED - broker reset")
		ch = open(t, b)
		wantErr(t, ch.ExchangeDeclarePassive("x", "topic", true, false, false, false, nil), amqp.NotFound, "")
		ch = open(t, b)
		must(t, ch.ExchangeDeclarePassive("amq.topic", "topic", true, false, false, false, nil))
		_, err = ch.QueueDeclarePassive("q", false, false, false, false, nil)
		wantErr(t, err, amqp.NotFound, "")
		if s := b.Stats(); s != (Stats{}) {
			t.Fatalf("stats %+v", s)
		}
	})
}

func TestDialSharesBrokerByName(t *testing.T) {
	name := "unit-" + t.Name()
	defer Get(name).Reset()
	c1, err := Dial(name)
	must(t, err)
	c2, err := Dial(name)
	must(t, err)
	ch1, err := c1.Channel()
	must(t, err)
	ch2, err := c2.Channel()
	must(t, err)
	declare(t, ch1, "shared", nil)
	if _, err := ch2.QueueDeclarePassive("shared", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	other, err := Dial(name + "-other")
	must(t, err)
	defer other.Close()
	och, err := other.Channel()
	must(t, err)
	_, err = och.QueueDeclarePassive("shared", false, false, false, false, nil)
	wantErr(t, err, amqp.NotFound, "")
	must(t, c1.Close())
	must(t, c2.Close())
}

func TestConnectionsCount(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		if n := b.Connections(); n != 0 {
			t.Fatalf("new broker: %d connections", n)
		}
		c1, c2 := dial(t, b), dial(t, b)
		if n := b.Connections(); n != 2 {
			t.Fatalf("after two dials: %d connections", n)
		}
		must(t, c1.Close())
		if n := b.Connections(); n != 1 {
			t.Fatalf("after one close: %d connections", n)
		}
		b.CloseAllConnections("test")
		if n := b.Connections(); n != 0 || !c2.IsClosed() {
			t.Fatalf("after closing all: %d connections", n)
		}
	})
}

// TestConcurrentPublishConsume moves messages from several publishers to
// competing consumers that ack, nack with requeue or reject at random, and
// checks that every message is acknowledged exactly once.
func TestConcurrentPublishConsume(t *testing.T) {
	b := Get("unit-" + t.Name())
	defer b.Reset()
	setup := open(t, b)
	must(t, setup.ExchangeDeclare("x", "topic", false, false, false, false, nil))
	declare(t, setup, "work", nil)
	must(t, setup.QueueBind("work", "job.#", "x", false, nil))

	const publishers, perPublisher, consumers = 4, 2000, 3
	total := publishers * perPublisher
	var (
		mu   sync.Mutex
		seen = make(map[string]int)
	)
	acked := make(chan struct{}, total)
	var wg sync.WaitGroup
	for i := 0; i < consumers; i++ {
		ch := open(t, b)
		must(t, ch.Qos(10, 0, i == 0))
		ds, err := ch.Consume("work", "", false, false, false, false, nil)
		must(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for d := range ds {
				n++
				if n%7 == 0 {
					_ = d.Nack(false, true)
					continue
				}
				mu.Lock()
				seen[string(d.Body)]++
				mu.Unlock()
				_ = d.Ack(false)
				acked <- struct{}{}
			}
		}()
	}
	var pwg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		ch := open(t, b)
		must(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, perPublisher))
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := 0; i < perPublisher; i++ {
				body := fmt.Sprintf("%d-%d", p, i)
				if err := ch.PublishWithContext(context.Background(), "x", "job.a", false, false, amqp.Publishing{Body: []byte(body)}); err != nil {
					t.Error(err)
					return
				}
			}
			for i := 1; i <= perPublisher; i++ {
				if c := <-confirms; c.DeliveryTag != uint64(i) || !c.Ack {
					t.Errorf("confirm %+v, want %d", c, i)
					return
				}
			}
		}()
	}
	pwg.Wait()
	timeout := time.After(30 * time.Second)
	for i := 0; i < total; i++ {
		select {
		case <-acked:
		case <-timeout:
			t.Fatalf("only %d of %d acked", i, total)
		}
	}
	b.CloseAllConnections("done")
	wg.Wait()
	if len(seen) != total {
		t.Fatalf("%d distinct messages acked, want %d", len(seen), total)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s acked %d times", k, n)
		}
	}
}

func TestConfirmsDeliveredBeforeClose(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
		got := make(chan []uint64)
		go func() {
			var tags []uint64
			for c := range confirms {
				<-time.After(time.Second) // a slow listener
				tags = append(tags, c.DeliveryTag)
			}
			got <- tags
		}()
		for i := 0; i < 3; i++ {
			send(t, ch, "", "nowhere", "m")
		}
		must(t, ch.Close())
		if tags := <-got; fmt.Sprint(tags) != "[1 2 3]" {
			t.Fatalf("confirms before close: %v", tags)
		}
	})
}

func TestUnreadListenerDoesNotBlock(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation)) // never read
		start := time.Now()
		send(t, ch, "", "nowhere", "1")
		send(t, ch, "", "nowhere", "2")
		if time.Since(start) != 0 {
			t.Fatalf("publishing waited %s for the listener", time.Since(start))
		}
		// Each confirm waits notifyTimeout for the listener, then is dropped.
		<-time.After(2*notifyTimeout + time.Second)
		empty(t, confirms)
		must(t, ch.Close())
		isClosed(t, confirms)
	})
}

// TestExclusiveQueueOfClosingConnection declares an exclusive queue for a
// connection that closed after its channel was checked: the queue must not
// be created, as connectionClosed has already deleted the connection's
// exclusive queues.
func TestExclusiveQueueOfClosingConnection(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		c := dial(t, b)
		must(t, c.Close())
		if _, err := b.declareQueue(c, "excl", false, false, true, nil); err != amqp.ErrClosed {
			t.Fatalf("declare on a closed connection: %v, want amqp.ErrClosed", err)
		}
		if b.queueNamed("excl") != nil {
			t.Fatal("exclusive queue of a closed connection was created")
		}
	})
}

// TestUnreadListenerHoldsUpPublisher checks that notifications for a
// listener that stops reading do not pile up without limit: the publisher
// waits once maxPendingEvents are queued.
func TestUnreadListenerHoldsUpPublisher(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		must(t, ch.Confirm(false))
		ch.NotifyPublish(make(chan amqp.Confirmation))     // never read
		returns := ch.NotifyReturn(make(chan amqp.Return)) // never read
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		var err error
		n := 0
		for ; n < 2*maxPendingEvents; n++ {
			err = ch.PublishWithContext(ctx, "", "nowhere", true, false, amqp.Publishing{Body: []byte("m")})
			if err != nil {
				break
			}
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("after %d publishes: %v, want the publisher held up", n, err)
		}
		ch.n.mu.Lock()
		pending := ch.n.pending.len()
		ch.n.mu.Unlock()
		if pending > maxPendingEvents+1 {
			t.Fatalf("%d notifications queued, want at most %d", pending, maxPendingEvents+1)
		}
		must(t, ch.Close())
		isClosed(t, returns)
	})
}

// TestResetCancelsIdleConsumer checks that deleting every queue, as Reset
// does after closing the connections, finishes a consumer of a connection
// opened meanwhile: its delivery channel is closed and its tag is free.
func TestResetCancelsIdleConsumer(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		declare(t, ch, "q", nil)
		d, err := ch.Consume("q", "tag", false, false, false, false, nil)
		must(t, err)
		synctest.Wait() // the consumer goroutine parks, idle
		b.deleteAll()
		isClosed(t, d)
		_, err = ch.Consume("q", "tag", false, false, false, false, nil)
		wantErr(t, err, amqp.NotFound, "")
	})
}

// TestDeadLetterStats checks that Stats counts a dead-lettered message that
// reaches a queue as DeadLettered, and one lost to a missing dead-letter
// exchange or a dead-letter cycle as Dropped.
func TestDeadLetterStats(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		ch := open(t, b)
		expireTo := func(name, dlx, dlrk string) {
			t.Helper()
			declare(t, ch, name, amqp.Table{"x-message-ttl": 0, "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": dlrk})
		}
		declare(t, ch, "target", nil)
		expireTo("to-target", "", "target")
		expireTo("to-missing", "missing", "target")
		expireTo("to-self", "", "to-self")

		send(t, ch, "", "to-target", "1")
		synctest.Wait()
		if s := b.Stats(); s.DeadLettered != 1 || s.Dropped != 0 {
			t.Fatalf("dead-lettered to a queue: %+v", s)
		}
		if n := depth(t, ch, "target"); n != 1 {
			t.Fatalf("target holds %d messages, want 1", n)
		}
		send(t, ch, "", "to-missing", "2")
		send(t, ch, "", "to-self", "3")
		synctest.Wait()
		if s := b.Stats(); s.DeadLettered != 1 || s.Dropped != 2 {
			t.Fatalf("after a missing exchange and a cycle: %+v, want 1 dead-lettered and 2 dropped", s)
		}
	})
}

// TestPassiveDeclareChecksTableKeys checks that passive declares refuse an
// argument key amqp091 cannot encode, as the other methods with arguments do.
func TestPassiveDeclareChecksTableKeys(t *testing.T) {
	bubble(t, func(t *testing.T, b *Broker) {
		args := amqp.Table{strings.Repeat("k", 256): "v"}
		for name, call := range map[string]func(*Channel) error{
			"queue": func(ch *Channel) error {
				_, err := ch.QueueDeclarePassive("q", false, false, false, false, args)
				return err
			},
			"exchange": func(ch *Channel) error {
				return ch.ExchangeDeclarePassive("amq.direct", "direct", true, false, false, false, args)
			},
		} {
			c := dial(t, b)
			cn := c.NotifyClose(make(chan *amqp.Error, 1))
			ch, err := c.Channel()
			must(t, err)
			if err := call(ch); err == nil || !strings.Contains(err.Error(), "exceeds 255 bytes") {
				t.Fatalf("%s: got %v, want an encoding error", name, err)
			}
			if e := take(t, cn); e.Code != amqp.FrameError {
				t.Fatalf("%s: close error %+v", name, e)
			}
		}
	})
}
