package membroker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/membroker"
	"github.com/omqs-go/omqs/internal/transport"
)

// The conformance tests run the same scenario, through transport.Dial,
// against the in-process broker and, when one answers, against RabbitMQ, so
// that the expectations written here are checked against the real thing.

type env struct {
	t      *testing.T
	url    string
	memory bool
	broker *membroker.Broker
	exs    []string
	qs     []string
}

// conform runs f against the in-process broker and against RabbitMQ.
func conform(t *testing.T, f func(e *env)) {
	t.Helper()
	t.Run("memory", func(t *testing.T) {
		name := brokertest.Unique("conf")
		b := membroker.Get(name)
		t.Cleanup(b.Reset)
		f(&env{t: t, url: "memory://" + name, memory: true, broker: b})
	})
	t.Run("rabbitmq", func(t *testing.T) {
		u := brokertest.URL(t)
		e := &env{t: t, url: u}
		t.Cleanup(func() { brokertest.Delete(t, e.exs, e.qs) })
		f(e)
	})
}

func (e *env) conn() transport.Conn {
	e.t.Helper()
	eps, err := transport.ParseURLs(e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := transport.Dial(context.Background(), eps[0], transport.DialOptions{Timeout: 5 * time.Second})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.CloseDeadline(time.Now().Add(5 * time.Second)) })
	return c
}

func (e *env) channel(c transport.Conn) channel {
	e.t.Helper()
	ch, err := c.Channel()
	if err != nil {
		e.t.Fatal(err)
	}
	return ch.(channel)
}

// channel is the transport seam's Channel with the methods that OMQS does
// not use but these tests check too (passive declarations, unbind, purge,
// delete). Both implementations have them.
type channel interface {
	transport.Channel
	ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	ExchangeDelete(name string, ifUnused, noWait bool) error
	QueueDeclarePassive(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueUnbind(name, key, exchange string, args amqp.Table) error
	QueuePurge(name string, noWait bool) (int, error)
	QueueDelete(name string, ifUnused, ifEmpty, noWait bool) (int, error)
}

var (
	_ channel = (*amqp.Channel)(nil)
	_ channel = (*membroker.Channel)(nil)
)

// open returns a channel on a new connection.
func (e *env) open() channel {
	e.t.Helper()
	return e.channel(e.conn())
}

func (e *env) queue(prefix string) string {
	n := brokertest.Unique("omqs.conf." + prefix)
	e.qs = append(e.qs, n)
	return n
}

// declareQueue declares a unique non-durable queue with args on ch and
// returns its name.
func (e *env) declareQueue(ch channel, prefix string, args amqp.Table) string {
	e.t.Helper()
	q := e.queue(prefix)
	_, err := ch.QueueDeclare(q, false, false, false, false, args)
	ok(e.t, err)
	return q
}

func (e *env) exchange(prefix string) string {
	n := brokertest.Unique("omqs.conf." + prefix)
	e.exs = append(e.exs, n)
	return n
}

const wait = 5 * time.Second

// quiet is how long a test waits to see that nothing arrives.
const quiet = 300 * time.Millisecond

func recv[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-c:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-time.After(wait):
		t.Fatalf("%s: nothing within %s", what, wait)
	}
	var zero T
	return zero
}

func nothing[T any](t *testing.T, c <-chan T, what string) {
	t.Helper()
	select {
	case v, ok := <-c:
		if ok {
			t.Fatalf("%s: got %+v, want nothing", what, v)
		}
		t.Fatalf("%s: closed, want nothing", what)
	case <-time.After(quiet):
	}
}

func closed[T any](t *testing.T, c <-chan T, what string) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case _, ok := <-c:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("%s: not closed within %s", what, wait)
		}
	}
}

func mustErr(t *testing.T, err error, code int, reason string) *amqp.Error {
	t.Helper()
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		t.Fatalf("got error %v, want *amqp.Error %d %q", err, code, reason)
	}
	if ae.Code != code || (reason != "" && ae.Reason != reason) {
		t.Fatalf("got error %d %q, want %d %q", ae.Code, ae.Reason, code, reason)
	}
	return ae
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, ch channel, exchange, key string, body string) {
	t.Helper()
	ok(t, ch.PublishWithContext(context.Background(), exchange, key, false, false, amqp.Publishing{Body: []byte(body)}))
}

// waitCount waits until the passive declare of q reports n ready messages.
func waitCount(t *testing.T, e *env, q string, n int) {
	t.Helper()
	ch := e.open()
	deadline := time.After(wait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		ok(t, err)
		if st.Messages == n {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("queue %s has %d messages, want %d", q, st.Messages, n)
		}
	}
}

func TestConformExchangeInequivalent(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		c := e.conn()
		ch1, ch2 := e.channel(c), e.channel(c)
		x := e.exchange("x")
		ok(t, ch1.ExchangeDeclare(x, "topic", true, false, false, false, nil))
		ok(t, ch1.ExchangeDeclare(x, "topic", true, false, false, false, nil))
		notify := ch2.NotifyClose(make(chan *amqp.Error, 1))
		err := ch2.ExchangeDeclare(x, "fanout", true, false, false, false, nil)
		want := "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '" + x + "' in vhost '/': received 'fanout' but current is 'topic'"
		ae := mustErr(t, err, amqp.PreconditionFailed, want)
		if !ae.Server || !ae.Recover {
			t.Fatalf("Server=%v Recover=%v, want true true", ae.Server, ae.Recover)
		}
		got := recv(t, notify, "channel NotifyClose")
		mustErr(t, got, amqp.PreconditionFailed, want)
		closed(t, notify, "channel NotifyClose")
		if !ch2.IsClosed() {
			t.Fatal("channel not closed")
		}
		if err := ch2.ExchangeDeclare(x, "topic", true, false, false, false, nil); !errors.Is(err, amqp.ErrClosed) {
			t.Fatalf("call on closed channel: %v, want ErrClosed", err)
		}
		// The connection and the other channel go on.
		if c.IsClosed() || ch1.IsClosed() {
			t.Fatal("connection or other channel closed")
		}
		ok(t, ch1.ExchangeDeclare(x, "topic", true, false, false, false, nil))

		ch3 := e.channel(c)
		err = ch3.ExchangeDeclare(x, "topic", false, false, false, false, nil)
		mustErr(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '"+x+"' in vhost '/': received 'false' but current is 'true'")
		ch4 := e.channel(c)
		err = ch4.ExchangeDeclare(x, "topic", true, true, false, false, nil)
		mustErr(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange '"+x+"' in vhost '/': received 'true' but current is 'false'")
	})
}

func TestConformExchangeErrors(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		x := e.exchange("missing")
		mustErr(t, e.open().ExchangeDeclarePassive(x, "topic", true, false, false, false, nil),
			amqp.NotFound, "NOT_FOUND - no exchange '"+x+"' in vhost '/'")
		mustErr(t, e.open().ExchangeDeclare("", "direct", true, false, false, false, nil),
			amqp.AccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
		mustErr(t, e.open().ExchangeDelete("", false, false),
			amqp.AccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
		mustErr(t, e.open().ExchangeDelete("amq.direct", false, false),
			amqp.AccessRefused, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed")
		mustErr(t, e.open().ExchangeDeclare("amq.custom"+brokertest.Unique(""), "direct", true, false, false, false, nil),
			amqp.AccessRefused, "")
		ok(t, e.open().ExchangeDeclare("amq.topic", "topic", true, false, false, false, nil))
		ok(t, e.open().ExchangeDelete(x, false, false))

		// An unknown type is a connection error.
		c := e.conn()
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		err := e.channel(c).ExchangeDeclare(e.exchange("bad"), "nosuchtype", true, false, false, false, nil)
		mustErr(t, err, amqp.CommandInvalid, "COMMAND_INVALID - unknown exchange type 'nosuchtype'")
		mustErr(t, recv(t, cn, "connection NotifyClose"), amqp.CommandInvalid, "")
		if !c.IsClosed() {
			t.Fatal("connection open")
		}

		// Delete ifUnused.
		ch := e.open()
		x2 := e.exchange("used")
		ok(t, ch.ExchangeDeclare(x2, "direct", false, false, false, false, nil))
		q := e.declareQueue(ch, "q", nil)
		ok(t, ch.QueueBind(q, "k", x2, false, nil))
		mustErr(t, ch.ExchangeDelete(x2, true, false), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - exchange '"+x2+"' in vhost '/' in use")
		ch = e.open()
		ok(t, ch.ExchangeDelete(x2, false, false))
		mustErr(t, ch.ExchangeDeclarePassive(x2, "direct", false, false, false, false, nil), amqp.NotFound, "")
	})
}

func TestConformPublishMissingExchange(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		c := e.conn()
		ch := e.channel(c)
		other := e.channel(c)
		notify := ch.NotifyClose(make(chan *amqp.Error, 1))
		x := e.exchange("none")
		ok(t, ch.PublishWithContext(context.Background(), x, "k", false, false, amqp.Publishing{Body: []byte("a")}))
		mustErr(t, recv(t, notify, "NotifyClose"), amqp.NotFound, "NOT_FOUND - no exchange '"+x+"' in vhost '/'")
		if c.IsClosed() || other.IsClosed() {
			t.Fatal("connection or other channel closed")
		}
	})
}

func TestConformImmediate(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		c := e.conn()
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		ch := e.channel(c)
		ok(t, ch.PublishWithContext(context.Background(), "", "k", false, true, amqp.Publishing{}))
		mustErr(t, recv(t, cn, "connection NotifyClose"), amqp.NotImplemented, "NOT_IMPLEMENTED - immediate=true")
	})
}

func TestConformQueueDeclare(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.queue("q")
		st, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		ok(t, err)
		if st.Name != q || st.Messages != 0 || st.Consumers != 0 {
			t.Fatalf("declare: %+v", st)
		}
		mustErr(t, e.declare(q, true, false, false, false, nil), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '"+q+"' in vhost '/': received none but current is the value 'quorum' of type 'longstr'")
		mustErr(t, e.declare(q, true, false, false, false, amqp.Table{"x-queue-type": "classic"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '"+q+"' in vhost '/': received 'classic' but current is 'quorum'")
		mustErr(t, e.declare(q, false, false, false, false, amqp.Table{"x-queue-type": "quorum"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '"+q+"' in vhost '/': received 'false' but current is 'true'")

		c2 := e.open()
		q2 := e.declareQueue(c2, "len", amqp.Table{"x-max-length": 10})
		mustErr(t, e.declare(q2, false, false, false, false, amqp.Table{"x-max-length": int64(20)}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '"+q2+"' in vhost '/': received '20' but current is '10'")
		_, err = e.open().QueueDeclare(q2, false, false, false, false, amqp.Table{"x-max-length": int64(10)})
		ok(t, err)
		mustErr(t, e.declare(q2, false, true, false, false, amqp.Table{"x-max-length": 10}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '"+q2+"' in vhost '/': received 'true' but current is 'false'")

		// Quorum queues must be durable, and neither exclusive nor auto-delete.
		q3 := e.queue("qq")
		mustErr(t, e.declare(q3, false, false, false, false, amqp.Table{"x-queue-type": "quorum"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid property 'non-durable' for queue '"+q3+"' in vhost '/'")
		mustErr(t, e.declare(q3, true, true, false, false, amqp.Table{"x-queue-type": "quorum"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid property 'auto-delete' for queue '"+q3+"' in vhost '/'")
		mustErr(t, e.declare(q3, true, false, true, false, amqp.Table{"x-queue-type": "quorum"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue '"+q3+"' in vhost '/'")

		// Argument validation.
		q4 := e.queue("args")
		mustErr(t, e.declare(q4, false, false, false, false, amqp.Table{"x-max-length": -1}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '"+q4+"' in vhost '/': {value_negative,-1}")
		mustErr(t, e.declare(q4, false, false, false, false, amqp.Table{"x-max-length": "ten"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid arg 'x-max-length' for queue '"+q4+"' in vhost '/': \"expected integer, got longstr\"")
		mustErr(t, e.declare(q4, false, false, false, false, amqp.Table{"x-overflow": "nope"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '"+q4+"' in vhost '/': invalid_overflow")
		mustErr(t, e.declare(q4, false, false, false, false, amqp.Table{"x-dead-letter-routing-key": "k"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue '"+q4+"' in vhost '/': routing_key_but_no_dlx_defined")

		// Passive.
		q5 := e.queue("none")
		_, err = e.open().QueueDeclarePassive(q5, false, false, false, false, nil)
		mustErr(t, err, amqp.NotFound, "NOT_FOUND - no queue '"+q5+"' in vhost '/'")

		// Server-named queues.
		st, err = ch.QueueDeclare("", false, true, true, false, nil)
		ok(t, err)
		if !strings.HasPrefix(st.Name, "amq.gen-") || len(st.Name) != len("amq.gen-")+22 {
			t.Fatalf("server-named queue %q", st.Name)
		}
		_, err = ch.QueueDeclare(st.Name, false, true, true, false, nil)
		mustErr(t, err, amqp.AccessRefused, "ACCESS_REFUSED - queue name '"+st.Name+"' contains reserved prefix 'amq.*'")
	})
}

// declare declares a queue on a new channel and returns the error.
func (e *env) declare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) error {
	_, err := e.open().QueueDeclare(name, durable, autoDelete, exclusive, noWait, args)
	return err
}

func TestConformExclusiveQueue(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		owner := e.conn()
		ch := e.channel(owner)
		q := e.queue("excl")
		_, err := ch.QueueDeclare(q, false, false, true, false, nil)
		ok(t, err)
		_, err = ch.QueueDeclare(q, false, false, true, false, nil)
		ok(t, err)
		locked := "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '" + q + "' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."
		_, err = e.open().QueueDeclare(q, false, false, true, false, nil)
		mustErr(t, err, amqp.ResourceLocked, locked)
		_, err = e.open().QueueDeclarePassive(q, false, false, true, false, nil)
		mustErr(t, err, amqp.ResourceLocked, locked)
		_, err = e.open().Consume(q, "", false, false, false, false, nil)
		mustErr(t, err, amqp.ResourceLocked, locked)
		_, err = e.channel(owner).QueueDeclare(q, false, false, false, false, nil)
		mustErr(t, err, amqp.ResourceLocked, locked)
		ok(t, owner.CloseDeadline(time.Now().Add(wait)))
		// Deleted with its connection.
		_, err = e.open().QueueDeclarePassive(q, false, false, false, false, nil)
		mustErr(t, err, amqp.NotFound, "")
	})
}

func TestConformRouting(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		topic, direct, fanout := e.exchange("topic"), e.exchange("direct"), e.exchange("fanout")
		ok(t, ch.ExchangeDeclare(topic, "topic", false, false, false, false, nil))
		ok(t, ch.ExchangeDeclare(direct, "direct", false, false, false, false, nil))
		ok(t, ch.ExchangeDeclare(fanout, "fanout", false, false, false, false, nil))
		qa, qb := e.declareQueue(ch, "a", nil), e.declareQueue(ch, "b", nil)
		for _, q := range []string{qa, qb} {
			ok(t, ch.QueueBind(q, "", fanout, false, nil))
		}
		ok(t, ch.QueueBind(qa, "*.debug", topic, false, nil))
		ok(t, ch.QueueBind(qb, "a.#.z", topic, false, nil))
		ok(t, ch.QueueBind(qb, "#.z", topic, false, nil)) // same queue twice: one copy
		ok(t, ch.QueueBind(qa, "red", direct, false, nil))
		ok(t, ch.QueueBind(qb, "red", direct, false, nil))
		ok(t, ch.QueueBind(qb, "blue", direct, false, nil))

		publish(t, ch, topic, "x.debug", "t1")   // a
		publish(t, ch, topic, "a.z", "t2")       // b
		publish(t, ch, topic, "a.b.c.z", "t3")   // b
		publish(t, ch, topic, "x.y.debug", "t4") // none
		publish(t, ch, direct, "red", "d1")      // a, b
		publish(t, ch, direct, "blue", "d2")     // b
		publish(t, ch, fanout, "any", "f1")      // a, b
		publish(t, ch, "", qa, "default")        // a

		got := func(q string, n int) []string {
			t.Helper()
			waitCount(t, e, q, n)
			c := e.open()
			ds, err := c.Consume(q, "", true, false, false, false, nil)
			ok(t, err)
			var out []string
			for i := 0; i < n; i++ {
				d := recv(t, ds, "delivery")
				out = append(out, string(d.Body))
			}
			return out
		}
		if a := strings.Join(got(qa, 4), " "); a != "t1 d1 f1 default" {
			t.Fatalf("queue a got %q", a)
		}
		if b := strings.Join(got(qb, 5), " "); b != "t2 t3 d1 d2 f1" {
			t.Fatalf("queue b got %q", b)
		}
	})
}

func TestConformMandatoryReturnBeforeConfirm(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		ok(t, ch.Confirm(false))
		if n := ch.GetNextPublishSeqNo(); n != 1 {
			t.Fatalf("GetNextPublishSeqNo = %d, want 1", n)
		}
		// Unbuffered listeners: the order in which they are served shows.
		events := make(chan string, 10)
		returns := ch.NotifyReturn(make(chan amqp.Return))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation))
		x := e.exchange("x")
		ok(t, ch.ExchangeDeclare(x, "direct", false, false, false, false, nil))
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 2; i++ {
				select {
				case r := <-returns:
					events <- "return " + r.ReplyText + " " + string(r.Body)
				case c := <-confirms:
					if c.Ack {
						events <- "ack"
					} else {
						events <- "nack"
					}
				}
			}
		}()
		ok(t, ch.PublishWithContext(context.Background(), x, "nowhere", true, false, amqp.Publishing{Body: []byte("lost")}))
		<-done
		close(events)
		var seq []string
		for s := range events {
			seq = append(seq, s)
		}
		if strings.Join(seq, ",") != "return NO_ROUTE lost,ack" {
			t.Fatalf("got %q", seq)
		}
		if n := ch.GetNextPublishSeqNo(); n != 2 {
			t.Fatalf("GetNextPublishSeqNo = %d, want 2", n)
		}
	})
}

func TestConformReturnContent(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		ts := time.Date(2024, 5, 6, 7, 8, 9, 500, time.UTC)
		q := e.queue("nowhere")
		ok(t, ch.PublishWithContext(context.Background(), "", q, true, false, amqp.Publishing{
			Body: []byte("lost"), MessageId: "m1", ContentType: "text/plain", Timestamp: ts,
			Headers: amqp.Table{"n": 1, "s": "x"},
		}))
		r := recv(t, returns, "return")
		if r.ReplyCode != 312 || r.ReplyText != "NO_ROUTE" || r.Exchange != "" || r.RoutingKey != q ||
			r.MessageId != "m1" || r.ContentType != "text/plain" || !r.Timestamp.Equal(ts.Truncate(time.Second)) ||
			r.Headers["n"] != int32(1) || r.Headers["s"] != "x" || string(r.Body) != "lost" {
			t.Fatalf("return %+v", r)
		}
	})
}

func TestConformConfirmsAndOverflow(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "rp", amqp.Table{"x-max-length": 2, "x-overflow": "reject-publish"})
		ok(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 10))
		for i := 0; i < 4; i++ {
			publish(t, ch, "", q, "m")
		}
		want := []amqp.Confirmation{{DeliveryTag: 1, Ack: true}, {DeliveryTag: 2, Ack: true}, {DeliveryTag: 3, Ack: false}, {DeliveryTag: 4, Ack: false}}
		for _, w := range want {
			if c := recv(t, confirms, "confirm"); c != w {
				t.Fatalf("confirm %+v, want %+v", c, w)
			}
		}

		// drop-head, the default overflow, drops the oldest and acks.
		q2 := e.declareQueue(ch, "dh", amqp.Table{"x-max-length": 2})
		for _, b := range []string{"1", "2", "3"} {
			publish(t, ch, "", q2, b)
		}
		for i := 5; i <= 7; i++ {
			if c := recv(t, confirms, "confirm"); c != (amqp.Confirmation{DeliveryTag: uint64(i), Ack: true}) {
				t.Fatalf("confirm %+v", c)
			}
		}
		waitCount(t, e, q2, 2)
		ds, err := e.open().Consume(q2, "", true, false, false, false, nil)
		ok(t, err)
		if a, b := recv(t, ds, "d"), recv(t, ds, "d"); string(a.Body) != "2" || string(b.Body) != "3" {
			t.Fatalf("got %s %s, want 2 3", a.Body, b.Body)
		}
		if ch.GetNextPublishSeqNo() != 8 {
			t.Fatalf("GetNextPublishSeqNo = %d", ch.GetNextPublishSeqNo())
		}
	})
}

func TestConformPrefetchAndRoundRobin(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		pub := e.open()
		q := e.declareQueue(pub, "rr", nil)
		c1 := e.open()
		ok(t, c1.Qos(2, 0, false))
		d1, err := c1.Consume(q, "c1", false, false, false, false, nil)
		ok(t, err)
		c2 := e.open()
		ok(t, c2.Qos(2, 0, false))
		d2, err := c2.Consume(q, "c2", false, false, false, false, nil)
		ok(t, err)
		for i := 0; i < 6; i++ {
			publish(t, pub, "", q, string(rune('a'+i)))
		}
		a1, a2 := recv(t, d1, "c1"), recv(t, d1, "c1")
		b1, b2 := recv(t, d2, "c2"), recv(t, d2, "c2")
		if string(a1.Body)+string(a2.Body) != "ac" || string(b1.Body)+string(b2.Body) != "bd" {
			t.Fatalf("got c1 %s%s c2 %s%s, want ac bd", a1.Body, a2.Body, b1.Body, b2.Body)
		}
		if a1.DeliveryTag != 1 || a2.DeliveryTag != 2 || a1.ConsumerTag != "c1" || b1.ConsumerTag != "c2" {
			t.Fatalf("tags %d %d %s %s", a1.DeliveryTag, a2.DeliveryTag, a1.ConsumerTag, b1.ConsumerTag)
		}
		nothing(t, d1, "c1 at its prefetch limit")
		ok(t, a1.Ack(false))
		if d := recv(t, d1, "c1 after ack"); string(d.Body) != "e" {
			t.Fatalf("got %s, want e", d.Body)
		}
		ok(t, b2.Ack(true)) // multiple: acks b1 and b2
		if d := recv(t, d2, "c2 after ack"); string(d.Body) != "f" {
			t.Fatalf("got %s, want f", d.Body)
		}
	})
}

func TestConformGlobalPrefetch(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		pub := e.open()
		qa, qb := e.declareQueue(pub, "ga", nil), e.declareQueue(pub, "gb", nil)
		for _, q := range []string{qa, qb} {
			for i := 0; i < 3; i++ {
				publish(t, pub, "", q, q)
			}
		}
		waitCount(t, e, qb, 3)
		c := e.open()
		ok(t, c.Qos(3, 0, true))
		da, err := c.Consume(qa, "", false, false, false, false, nil)
		ok(t, err)
		recv(t, da, "a")
		recv(t, da, "a")
		first := recv(t, da, "a")
		db, err := c.Consume(qb, "", false, false, false, false, nil)
		ok(t, err)
		nothing(t, db, "b while the channel is at its limit")
		ok(t, c.Ack(first.DeliveryTag, false))
		recv(t, db, "b after an ack")
	})
}

func TestConformRequeueAndCloseRequeue(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		pub := e.open()
		q := e.declareQueue(pub, "rq", nil)
		publish(t, pub, "", q, "1")
		publish(t, pub, "", q, "2")
		c := e.open()
		ds, err := c.Consume(q, "", false, false, false, false, nil)
		ok(t, err)
		d1, d2 := recv(t, ds, "d1"), recv(t, ds, "d2")
		if d1.Redelivered || d2.Redelivered {
			t.Fatal("first delivery marked redelivered")
		}
		ok(t, d1.Nack(false, true))
		d3 := recv(t, ds, "requeued")
		if string(d3.Body) != "1" || !d3.Redelivered || d3.DeliveryTag != 3 {
			t.Fatalf("requeued %s redelivered=%v tag=%d", d3.Body, d3.Redelivered, d3.DeliveryTag)
		}
		// Closing the channel requeues what it had not acknowledged.
		ok(t, d2.Ack(false))
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		ok(t, c.Close())
		closed(t, cn, "NotifyClose on client close")
		closed(t, ds, "deliveries")
		if err := d3.Ack(false); !errors.Is(err, amqp.ErrClosed) {
			t.Fatalf("ack on closed channel: %v", err)
		}
		c2 := e.open()
		ds2, err := c2.Consume(q, "", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds2, "after close")
		if string(d.Body) != "1" || !d.Redelivered {
			t.Fatalf("got %s redelivered=%v", d.Body, d.Redelivered)
		}
	})
}

func TestConformUnknownDeliveryTag(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		pub := e.open()
		q := e.declareQueue(pub, "tag", nil)
		publish(t, pub, "", q, "x")
		c := e.open()
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		ds, err := c.Consume(q, "", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "delivery")
		ok(t, d.Ack(false))
		ok(t, d.Ack(false)) // asynchronous: the channel then closes
		mustErr(t, recv(t, cn, "NotifyClose"), amqp.PreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 1")

		// With multiple, the tag itself must be outstanding.
		publish(t, pub, "", q, "y")
		c = e.open()
		cn = c.NotifyClose(make(chan *amqp.Error, 1))
		ds, err = c.Consume(q, "", false, false, false, false, nil)
		ok(t, err)
		d = recv(t, ds, "delivery")
		ok(t, c.Ack(d.DeliveryTag+5, true))
		mustErr(t, recv(t, cn, "NotifyClose"), amqp.PreconditionFailed, "PRECONDITION_FAILED - unknown delivery tag 6")
	})
}

func TestConformDeadLetter(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		dlx := e.exchange("dlx")
		ok(t, ch.ExchangeDeclare(dlx, "topic", false, false, false, false, nil))
		dead := e.declareQueue(ch, "dead", nil)
		ok(t, ch.QueueBind(dead, "#", dlx, false, nil))
		work := e.declareQueue(ch, "work", amqp.Table{"x-dead-letter-exchange": dlx})
		x := e.exchange("src")
		ok(t, ch.ExchangeDeclare(x, "direct", false, false, false, false, nil))
		ok(t, ch.QueueBind(work, "orig", x, false, nil))
		ok(t, ch.PublishWithContext(context.Background(), x, "orig", false, false, amqp.Publishing{Body: []byte("bad"), Headers: amqp.Table{"keep": "me"}}))

		c := e.open()
		ds, err := c.Consume(work, "", false, false, false, false, nil)
		ok(t, err)
		ok(t, recv(t, ds, "work").Reject(false))
		dd, err := c.Consume(dead, "", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, dd, "dead")
		if string(d.Body) != "bad" || d.Exchange != dlx || d.RoutingKey != "orig" || d.Headers["keep"] != "me" {
			t.Fatalf("dead-lettered %+v", d)
		}
		deaths, _ := d.Headers["x-death"].([]any)
		if len(deaths) != 1 {
			t.Fatalf("x-death %#v", d.Headers["x-death"])
		}
		xd := deaths[0].(amqp.Table)
		if xd["queue"] != work || xd["reason"] != "rejected" || xd["count"] != int64(1) || xd["exchange"] != x {
			t.Fatalf("x-death %#v", xd)
		}
		if rk, _ := xd["routing-keys"].([]any); len(rk) != 1 || rk[0] != "orig" {
			t.Fatalf("routing-keys %#v", xd["routing-keys"])
		}
		if _, isTime := xd["time"].(time.Time); !isTime {
			t.Fatalf("time %#v", xd["time"])
		}
		if d.Headers["x-first-death-reason"] != "rejected" || d.Headers["x-first-death-queue"] != work || d.Headers["x-first-death-exchange"] != x {
			t.Fatalf("x-first-death %#v", d.Headers)
		}
		// Rejected again through the same queue: the count grows.
		ok(t, c.PublishWithContext(context.Background(), "", work, false, false, amqp.Publishing{Body: d.Body, Headers: d.Headers}))
		ok(t, d.Ack(false))
		ok(t, recv(t, ds, "work again").Nack(false, false))
		d2 := recv(t, dd, "dead again")
		xd2 := d2.Headers["x-death"].([]any)[0].(amqp.Table)
		if xd2["count"] != int64(2) || d2.RoutingKey != work {
			t.Fatalf("second death %#v key %s", xd2, d2.RoutingKey)
		}

		// x-dead-letter-routing-key replaces the key.
		work2 := e.declareQueue(ch, "work2", amqp.Table{"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dl.key"})
		publish(t, ch, "", work2, "x")
		ds2, err := c.Consume(work2, "", false, false, false, false, nil)
		ok(t, err)
		ok(t, recv(t, ds2, "work2").Nack(false, false))
		if d := recv(t, dd, "dead 3"); d.RoutingKey != "dl.key" {
			t.Fatalf("key %s", d.RoutingKey)
		}
	})
}

func TestConformDeliveryProperties(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "props", nil)
		ts := time.Date(2024, 1, 2, 3, 4, 5, 600, time.UTC)
		body := []byte("body")
		pub := amqp.Publishing{
			ContentType: "application/json", ContentEncoding: "gzip", DeliveryMode: 2, Priority: 3,
			CorrelationId: "corr", ReplyTo: "reply", Expiration: "60000", MessageId: "mid", Timestamp: ts,
			Type: "type", UserId: "guest", AppId: "app",
			Headers: amqp.Table{"int": 7, "i64": int64(8), "str": "s", "bool": true, "f": 1.5, "nested": amqp.Table{"a": 1}, "list": []any{1, "x"}},
			Body:    body,
		}
		ok(t, ch.PublishWithContext(context.Background(), "", q, false, false, pub))
		copy(body, "XXXX") // the publisher may reuse its buffer
		ds, err := ch.Consume(q, "ctag", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "delivery")
		if d.ContentType != "application/json" || d.ContentEncoding != "gzip" || d.DeliveryMode != 2 || d.Priority != 3 ||
			d.CorrelationId != "corr" || d.ReplyTo != "reply" || d.Expiration != "60000" || d.MessageId != "mid" ||
			!d.Timestamp.Equal(ts.Truncate(time.Second)) || d.Type != "type" || d.UserId != "guest" || d.AppId != "app" ||
			string(d.Body) != "body" || d.ConsumerTag != "ctag" || d.DeliveryTag != 1 || d.Redelivered || d.Exchange != "" || d.RoutingKey != q {
			t.Fatalf("delivery %+v", d)
		}
		h := d.Headers
		if h["int"] != int32(7) || h["i64"] != int64(8) || h["str"] != "s" || h["bool"] != true || h["f"] != 1.5 ||
			h["nested"].(amqp.Table)["a"] != int32(1) || h["list"].([]any)[0] != int32(1) {
			t.Fatalf("headers %#v", h)
		}
		if d.Acknowledger == nil {
			t.Fatal("no Acknowledger")
		}
		ok(t, d.Ack(false))
	})
}

func TestConformConsumerErrors(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "cons", nil)
		_, err := e.open().Consume(e.queue("none"), "", false, false, false, false, nil)
		mustErr(t, err, amqp.NotFound, "")

		_, err = ch.Consume(q, "excl", false, true, false, false, nil)
		ok(t, err)
		_, err = e.open().Consume(q, "", false, false, false, false, nil)
		mustErr(t, err, amqp.AccessRefused, "ACCESS_REFUSED - queue '"+q+"' in vhost '/' in exclusive use")
		ok(t, ch.Cancel("excl", false))
		_, err = ch.Consume(q, "shared", false, false, false, false, nil)
		ok(t, err)
		_, err = e.open().Consume(q, "", false, true, false, false, nil)
		mustErr(t, err, amqp.AccessRefused, "ACCESS_REFUSED - queue '"+q+"' in vhost '/' in exclusive use")

		// A consumer tag used twice on one channel closes the connection.
		c := e.conn()
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		ch2 := e.channel(c)
		_, err = ch2.Consume(q, "dup", false, false, false, false, nil)
		ok(t, err)
		_, err = ch2.Consume(q, "dup", false, false, false, false, nil)
		mustErr(t, err, amqp.NotAllowed, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'")
		mustErr(t, recv(t, cn, "connection NotifyClose"), amqp.NotAllowed, "")
	})
}

func TestConformCancel(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "cancel", nil)
		publish(t, ch, "", q, "1")
		publish(t, ch, "", q, "2")
		waitCount(t, e, q, 2)
		ds, err := ch.Consume(q, "c", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "first")
		ok(t, ch.Cancel("c", false))
		// The delivery in flight still arrives, then the channel closes.
		d2 := recv(t, ds, "in flight")
		closed(t, ds, "deliveries after cancel")
		// Unacknowledged deliveries stay unacknowledged until settled.
		st, err := e.open().QueueDeclarePassive(q, false, false, false, false, nil)
		ok(t, err)
		if st.Messages != 0 || st.Consumers != 0 {
			t.Fatalf("after cancel %+v", st)
		}
		ok(t, d.Ack(false))
		ok(t, d2.Nack(false, true))
		waitCount(t, e, q, 1)
		ok(t, ch.Cancel("no-such-tag", false))
	})
}

func TestConformAutoDeleteQueue(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.queue("ad")
		_, err := ch.QueueDeclare(q, false, true, false, false, nil)
		ok(t, err)
		_, err = ch.Consume(q, "c1", false, false, false, false, nil)
		ok(t, err)
		_, err = ch.Consume(q, "c2", false, false, false, false, nil)
		ok(t, err)
		ok(t, ch.Cancel("c1", false))
		_, err = e.open().QueueDeclarePassive(q, false, false, false, false, nil)
		ok(t, err)
		ok(t, ch.Cancel("c2", false))
		deadline := time.After(wait)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			_, err = e.open().QueueDeclarePassive(q, false, false, false, false, nil)
			if err != nil {
				mustErr(t, err, amqp.NotFound, "")
				break
			}
			select {
			case <-tick.C:
			case <-deadline:
				t.Fatal("auto-delete queue still there")
			}
		}
	})
}

func TestConformQueueDeletePurge(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "del", nil)
		publish(t, ch, "", q, "1")
		publish(t, ch, "", q, "2")
		waitCount(t, e, q, 2)
		_, err := e.open().QueueDelete(q, false, true, false)
		mustErr(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - queue '"+q+"' in vhost '/' not empty")
		n, err := ch.QueuePurge(q, false)
		ok(t, err)
		if n != 2 {
			t.Fatalf("purged %d", n)
		}
		publish(t, ch, "", q, "3")
		_, err = ch.Consume(q, "c", false, false, false, false, nil)
		ok(t, err)
		_, err = e.open().QueueDelete(q, true, false, false)
		mustErr(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - queue '"+q+"' in vhost '/' in use")
		n, err = e.open().QueueDelete(q, false, false, false)
		ok(t, err)
		if n != 0 {
			t.Fatalf("deleted with %d ready", n)
		}
		n, err = e.open().QueueDelete(q, false, false, false)
		ok(t, err)
		if n != 0 {
			t.Fatalf("delete of a missing queue: %d", n)
		}
		_, err = e.open().QueuePurge(q, false)
		mustErr(t, err, amqp.NotFound, "")
	})
}

func TestConformBindErrors(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		q, x := e.queue("bq"), e.exchange("bx")
		mustErr(t, e.open().QueueBind(q, "k", x, false, nil), amqp.NotFound, "NOT_FOUND - no exchange '"+x+"' in vhost '/'")
		ch := e.open()
		ok(t, ch.ExchangeDeclare(x, "direct", false, false, false, false, nil))
		mustErr(t, ch.QueueBind(q, "k", x, false, nil), amqp.NotFound, "NOT_FOUND - no queue '"+q+"' in vhost '/'")
		ch = e.open()
		_, err := ch.QueueDeclare(q, false, false, false, false, nil)
		ok(t, err)
		mustErr(t, ch.QueueBind(q, "k", "", false, nil), amqp.AccessRefused, "ACCESS_REFUSED - operation not permitted on the default exchange")
		ch = e.open()
		ok(t, ch.QueueBind(q, "k", x, false, nil))
		ok(t, ch.QueueBind(q, "k", x, false, nil))
		ok(t, ch.QueueUnbind(q, "k", x, nil))
		ok(t, ch.QueueUnbind(q, "k", x, nil))
		publish(t, ch, x, "k", "unbound")
		st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		ok(t, err)
		if st.Messages != 0 {
			t.Fatalf("unbound queue got %d", st.Messages)
		}
	})
}

func TestConformHeadersExchange(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		x := e.exchange("hx")
		ok(t, ch.ExchangeDeclare(x, "headers", false, false, false, false, nil))
		qall, qany := e.declareQueue(ch, "all", nil), e.declareQueue(ch, "any", nil)
		ok(t, ch.QueueBind(qall, "", x, false, amqp.Table{"x-match": "all", "a": "1", "b": 2}))
		ok(t, ch.QueueBind(qany, "", x, false, amqp.Table{"x-match": "any", "a": "1", "b": 2}))
		pub := func(h amqp.Table) {
			ok(t, ch.PublishWithContext(context.Background(), x, "ignored", false, false, amqp.Publishing{Headers: h}))
		}
		pub(amqp.Table{"a": "1", "b": int64(2)}) // both
		pub(amqp.Table{"a": "1"})                // any
		pub(amqp.Table{"b": 3})                  // none
		waitCount(t, e, qany, 2)
		waitCount(t, e, qall, 1)
		mustErr(t, ch.QueueBind(qall, "", x, false, amqp.Table{"x-match": "some"}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; expected all, any, all-with-x, or any-with-x")
		mustErr(t, e.open().QueueBind(qall, "", x, false, amqp.Table{"x-match": 1}), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - Invalid x-match field type signedint (value 1); expected longstr")
	})
}

func TestConformQuorumDeliveryCount(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.queue("qq")
		_, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		ok(t, err)
		publish(t, ch, "", q, "m")
		c := e.open()
		ds, err := c.Consume(q, "", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "first")
		if _, has := d.Headers["x-delivery-count"]; has {
			t.Fatalf("first delivery headers %#v", d.Headers)
		}
		ok(t, d.Nack(false, true))
		d = recv(t, ds, "second")
		if d.Headers["x-delivery-count"] != int64(1) || !d.Redelivered {
			t.Fatalf("second delivery headers %#v", d.Headers)
		}
		// Returned by a closing channel: counted too.
		ok(t, c.Close())
		ds, err = e.open().Consume(q, "", false, false, false, false, nil)
		ok(t, err)
		d = recv(t, ds, "third")
		if d.Headers["x-delivery-count"] != int64(2) || !d.Redelivered {
			t.Fatalf("third delivery headers %#v", d.Headers)
		}
		ok(t, d.Ack(false))

		// Quorum queues refuse consumers on a channel with a global prefetch;
		// the connection closes.
		conn := e.conn()
		cn := conn.NotifyClose(make(chan *amqp.Error, 1))
		g := e.channel(conn)
		ok(t, g.Qos(5, 0, true))
		_, err = g.Consume(q, "", false, false, false, false, nil)
		want := "NOT_IMPLEMENTED - queue '" + q + "' in vhost '/' does not support global qos"
		mustErr(t, err, amqp.NotImplemented, want)
		mustErr(t, recv(t, cn, "connection NotifyClose"), amqp.NotImplemented, want)
	})
}

func TestConformMessageTTL(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		dead := e.declareQueue(ch, "expired", nil)
		q := e.declareQueue(ch, "ttl", amqp.Table{
			"x-message-ttl": 50, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead,
		})
		publish(t, ch, "", q, "old")
		ds, err := ch.Consume(dead, "", true, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "expired message")
		xd := d.Headers["x-death"].([]any)[0].(amqp.Table)
		if string(d.Body) != "old" || xd["reason"] != "expired" || xd["queue"] != q {
			t.Fatalf("expired %s %#v", d.Body, xd)
		}
		bad := e.open()
		cn := bad.NotifyClose(make(chan *amqp.Error, 1))
		ok(t, bad.PublishWithContext(context.Background(), "", q, false, false, amqp.Publishing{Expiration: "soon"}))
		mustErr(t, recv(t, cn, "NotifyClose"), amqp.PreconditionFailed, "PRECONDITION_FAILED - invalid expiration 'soon': no_integer")
	})
}

func TestConformOverflowDeadLetter(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		dead := e.declareQueue(ch, "dead", nil)
		dh := e.declareQueue(ch, "dh", amqp.Table{
			"x-max-length": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead,
		})
		rp := e.declareQueue(ch, "rpdlx", amqp.Table{
			"x-max-length": 1, "x-overflow": "reject-publish-dlx", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead,
		})
		ok(t, ch.Confirm(false))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 4))
		publish(t, ch, "", dh, "dh1")
		publish(t, ch, "", dh, "dh2") // dh1 dropped from the head
		publish(t, ch, "", rp, "rp1")
		publish(t, ch, "", rp, "rp2") // rejected and dead-lettered
		var acks []bool
		for i := 0; i < 4; i++ {
			acks = append(acks, recv(t, confirms, "confirm").Ack)
		}
		if acks[0] != true || acks[1] != true || acks[2] != true || acks[3] != false {
			t.Fatalf("acks %v", acks)
		}
		ds, err := e.open().Consume(dead, "", true, false, false, false, nil)
		ok(t, err)
		got := map[string]string{}
		for i := 0; i < 2; i++ {
			d := recv(t, ds, "dead")
			got[string(d.Body)] = d.Headers["x-death"].([]any)[0].(amqp.Table)["reason"].(string)
		}
		if got["dh1"] != "maxlen" || got["rp2"] != "maxlen" {
			t.Fatalf("dead-lettered %v", got)
		}
	})
}

func TestConformMessageExpiration(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		dead := e.declareQueue(ch, "dead", nil)
		q := e.declareQueue(ch, "exp", amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead})
		ok(t, ch.PublishWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: []byte("e"), Expiration: "20"}))
		ds, err := ch.Consume(dead, "", true, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "expired")
		xd := d.Headers["x-death"].([]any)[0].(amqp.Table)
		if xd["reason"] != "expired" || xd["original-expiration"] != "20" || d.Expiration != "" {
			t.Fatalf("expired %+v %#v", d, xd)
		}
	})
}

func TestConformShortcutsAndDefaults(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		_, err := e.open().Consume("", "", false, false, false, false, nil)
		mustErr(t, err, amqp.NotFound, "NOT_FOUND - no previously declared queue")
		ch := e.open()
		q := e.declareQueue(ch, "short", nil)
		ok(t, ch.QueueBind("", "", "amq.direct", false, nil)) // the last queue, keyed by its name
		publish(t, ch, "amq.direct", q, "via amq.direct")
		waitCount(t, e, q, 1)
		n, err := ch.QueuePurge("", false)
		ok(t, err)
		if n != 1 {
			t.Fatalf("purged %d", n)
		}
		// A mandatory message to the default exchange with no such queue
		// comes back.
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		missing := e.queue("missing")
		ok(t, ch.PublishWithContext(context.Background(), "", missing, true, false, amqp.Publishing{}))
		if r := recv(t, returns, "return"); r.RoutingKey != missing || r.ReplyCode != amqp.NoRoute {
			t.Fatalf("return %+v", r)
		}
		// An absent queue type is equivalent to classic, not to quorum.
		ok(t, e.declare(q, false, false, false, false, amqp.Table{"x-queue-type": "classic"}))
		err = e.declare(q, false, false, false, false, amqp.Table{"x-queue-type": "quorum"})
		mustErr(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '"+q+"' in vhost '/': received the value 'quorum' of type 'longstr' but current is none")
		err = e.declare(q, false, false, false, false, amqp.Table{"x-max-length": 5})
		mustErr(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue '"+q+"' in vhost '/': received the value '5' of type 'signedint' but current is none")
		// Alternate exchange equivalence.
		x := e.exchange("ae")
		ok(t, e.open().ExchangeDeclare(x, "fanout", false, false, false, false, amqp.Table{"alternate-exchange": "amq.fanout"}))
		mustErr(t, e.open().ExchangeDeclare(x, "fanout", false, false, false, false, nil), amqp.PreconditionFailed,
			"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '"+x+"' in vhost '/': received none but current is the value 'amq.fanout' of type 'longstr'")
		// prefetch_size is not implemented: a connection error.
		c := e.conn()
		cn := c.NotifyClose(make(chan *amqp.Error, 1))
		mustErr(t, e.channel(c).Qos(1, 4096, false), amqp.NotImplemented, "NOT_IMPLEMENTED - prefetch_size!=0 (4096)")
		recv(t, cn, "connection NotifyClose")
	})
}

func TestConformInternalAndAlternate(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		ix := e.exchange("internal")
		ok(t, ch.ExchangeDeclare(ix, "fanout", false, false, true, false, nil))
		cn := ch.NotifyClose(make(chan *amqp.Error, 1))
		publish(t, ch, ix, "", "m")
		mustErr(t, recv(t, cn, "NotifyClose"), amqp.AccessRefused, "ACCESS_REFUSED - cannot publish to internal exchange '"+ix+"' in vhost '/'")

		ch = e.open()
		ae, main := e.exchange("ae"), e.exchange("main")
		ok(t, ch.ExchangeDeclare(ae, "fanout", false, false, false, false, nil))
		ok(t, ch.ExchangeDeclare(main, "direct", false, false, false, false, amqp.Table{"alternate-exchange": ae}))
		q := e.declareQueue(ch, "unrouted", nil)
		ok(t, ch.QueueBind(q, "", ae, false, nil))
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		ok(t, ch.PublishWithContext(context.Background(), main, "nokey", true, false, amqp.Publishing{Body: []byte("alt")}))
		waitCount(t, e, q, 1)
		nothing(t, returns, "return")
	})
}

func TestConformCCAndBCC(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		x := e.exchange("cc")
		ok(t, ch.ExchangeDeclare(x, "direct", false, false, false, false, nil))
		qs := []string{e.declareQueue(ch, "a", nil), e.declareQueue(ch, "b", nil), e.declareQueue(ch, "c", nil)}
		for i, q := range qs {
			ok(t, ch.QueueBind(q, string(rune('a'+i)), x, false, nil))
		}
		ok(t, ch.PublishWithContext(context.Background(), x, "a", false, false, amqp.Publishing{
			Headers: amqp.Table{"CC": []any{"b"}, "BCC": []any{"c"}, "other": "kept"},
		}))
		for _, q := range qs {
			ds, err := ch.Consume(q, "", true, false, false, false, nil)
			ok(t, err)
			d := recv(t, ds, q)
			if _, has := d.Headers["BCC"]; has || d.RoutingKey != "a" || d.Headers["other"] != "kept" {
				t.Fatalf("%s got %+v", q, d)
			}
			if cc, _ := d.Headers["CC"].([]any); len(cc) != 1 || cc[0] != "b" {
				t.Fatalf("%s CC %#v", q, d.Headers["CC"])
			}
		}
	})
}

func TestConformSingleActiveConsumer(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "sac", amqp.Table{"x-single-active-consumer": true})
		c1, err := ch.Consume(q, "c1", false, false, false, false, nil)
		ok(t, err)
		c2, err := ch.Consume(q, "c2", false, false, false, false, nil)
		ok(t, err)
		publish(t, ch, "", q, "1")
		publish(t, ch, "", q, "2")
		recv(t, c1, "c1")
		recv(t, c1, "c1")
		nothing(t, c2, "c2")
		ok(t, ch.Cancel("c1", false))
		closed(t, c1, "c1")
		publish(t, ch, "", q, "3")
		if d := recv(t, c2, "c2"); string(d.Body) != "3" {
			t.Fatalf("got %s", d.Body)
		}
	})
}

func TestConformQueueDeleteCancelsConsumers(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		ch := e.open()
		q := e.declareQueue(ch, "del", nil)
		publish(t, ch, "", q, "m")
		c := e.open()
		ds, err := c.Consume(q, "tag", false, false, false, false, nil)
		ok(t, err)
		d := recv(t, ds, "delivery")
		_, err = ch.QueueDelete(q, false, false, false)
		ok(t, err)
		closed(t, ds, "deliveries of a deleted queue")
		ok(t, d.Ack(false))
		_, err = ch.QueueDeclare(q, false, false, false, false, nil)
		ok(t, err)
		_, err = c.Consume(q, "tag", false, false, false, false, nil)
		ok(t, err)
	})
}

func TestConformQosForLaterConsumers(t *testing.T) {
	conform(t, func(e *env) {
		t := e.t
		pub := e.open()
		early, late := e.declareQueue(pub, "early", nil), e.declareQueue(pub, "late", nil)
		for _, q := range []string{early, late} {
			for i := 0; i < 3; i++ {
				publish(t, pub, "", q, "m")
			}
		}
		waitCount(t, e, late, 3)
		c := e.open()
		de, err := c.Consume(early, "", false, false, false, false, nil)
		ok(t, err)
		ok(t, c.Qos(1, 0, false))
		dl, err := c.Consume(late, "", false, false, false, false, nil)
		ok(t, err)
		for i := 0; i < 3; i++ {
			recv(t, de, "early consumer, no limit")
		}
		d := recv(t, dl, "late consumer")
		nothing(t, dl, "late consumer at its limit")
		ok(t, d.Ack(false))
		recv(t, dl, "late consumer after ack")

		// autoAck consumers ignore the prefetch limit.
		q := e.declareQueue(pub, "auto", nil)
		for i := 0; i < 3; i++ {
			publish(t, pub, "", q, "a")
		}
		waitCount(t, e, q, 3)
		da, err := c.Consume(q, "", true, false, false, false, nil)
		ok(t, err)
		for i := 0; i < 3; i++ {
			recv(t, da, "autoAck consumer")
		}
	})
}
