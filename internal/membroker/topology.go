package membroker

import (
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/topic"
)

// queueArgKeys are the queue arguments RabbitMQ 3.10 compares on redeclare.
var queueArgKeys = []string{
	"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-max-length", "x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes",
	"x-max-priority", "x-overflow", "x-queue-mode", "x-queue-version",
	"x-single-active-consumer", "x-queue-type", "x-quorum-initial-group-size",
	"x-delivery-limit", "x-dead-letter-strategy",
}

// quorumUnsupported and classicUnsupported are arguments a queue of that
// type refuses.
var (
	quorumUnsupported = []string{
		"x-max-priority", "x-queue-mode", "x-queue-master-locator", "x-queue-version",
		"x-max-age", "x-stream-max-segment-size-bytes", "x-initial-cluster-size",
	}
	classicUnsupported = []string{
		"x-delivery-limit", "x-quorum-initial-group-size", "x-dead-letter-strategy",
		"x-max-in-memory-length", "x-max-in-memory-bytes",
		"x-max-age", "x-stream-max-segment-size-bytes", "x-initial-cluster-size", "x-queue-leader-locator",
	}
)

func argError(key, name, term string) *amqp.Error {
	return serverError(amqp.PreconditionFailed, "invalid arg '%s' for %s: %s", key, rs("queue", name), term)
}

// intArg checks an integer argument as RabbitMQ's check_int_arg does.
func intArg(args amqp.Table, key, name string, nonNeg bool) (int64, bool, *amqp.Error) {
	v, ok := args[key]
	if !ok {
		return 0, false, nil
	}
	n, isInt := asInt(v)
	if !isInt {
		return 0, true, argError(key, name, fmt.Sprintf("\"expected integer, got %s\"", typeName(v)))
	}
	if nonNeg && n < 0 {
		return 0, true, argError(key, name, fmt.Sprintf("{value_negative,%d}", n))
	}
	return n, true, nil
}

func strArg(args amqp.Table, key, name string) (string, bool, *amqp.Error) {
	v, ok := args[key]
	if !ok {
		return "", false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", true, argError(key, name, "{unacceptable_type,"+typeName(v)+"}")
	}
	return s, true, nil
}

// newQueue validates the arguments of a queue being declared and builds it.
func (b *Broker) newQueue(name string, durable, autoDelete, exclusive bool, owner *Connection, args amqp.Table) (*queue, *amqp.Error) {
	q := &queue{
		b: b, name: name, durable: durable, autoDelete: autoDelete,
		args: args, maxLen: DefaultMaxQueueLength, ttl: -1, deliveryLimit: -1,
	}
	if exclusive {
		q.owner = owner
	}
	if v, ok := args["x-dead-letter-exchange"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return nil, serverError(amqp.PreconditionFailed, "invalid type '%s' for arg 'x-dead-letter-exchange' in %s", typeName(v), rs("queue", name))
		}
		q.dlx, q.hasDLX = s, true
	}
	if n, ok, err := intArg(args, "x-expires", name, true); err != nil {
		return nil, err
	} else if ok && n == 0 {
		return nil, argError("x-expires", name, "{value_zero,0}")
	}
	if n, ok, err := intArg(args, "x-message-ttl", name, true); err != nil {
		return nil, err
	} else if ok {
		q.ttl = time.Duration(min(n, maxExpiry)) * time.Millisecond
	}
	if s, ok, err := strArg(args, "x-dead-letter-routing-key", name); err != nil {
		return nil, err
	} else if ok {
		if !q.hasDLX {
			return nil, argError("x-dead-letter-routing-key", name, "routing_key_but_no_dlx_defined")
		}
		q.dlrk, q.hasDLRK = s, true
	}
	if n, ok, err := intArg(args, "x-max-length", name, true); err != nil {
		return nil, err
	} else if ok {
		q.explicitMax = true
		q.maxLen = int(min(n, int64(^uint(0)>>2)))
	}
	for _, k := range []string{"x-max-length-bytes", "x-max-in-memory-length", "x-max-in-memory-bytes"} {
		if _, _, err := intArg(args, k, name, true); err != nil {
			return nil, err
		}
	}
	if n, ok, err := intArg(args, "x-max-priority", name, true); err != nil {
		return nil, err
	} else if ok && n > 255 {
		return nil, argError("x-max-priority", name, fmt.Sprintf("{max_value_exceeded,%d}", n))
	}
	if s, ok, err := strArg(args, "x-queue-mode", name); err != nil {
		return nil, err
	} else if ok && s != "default" && s != "lazy" {
		return nil, argError("x-queue-mode", name, fmt.Sprintf("\"unsupported queue mode '%s'\"", s))
	}
	if s, ok, err := strArg(args, "x-overflow", name); err != nil {
		return nil, err
	} else if ok {
		switch s {
		case "drop-head":
			q.overflow = overflowDropHead
		case "reject-publish":
			q.overflow = overflowRejectPublish
		case "reject-publish-dlx":
			q.overflow = overflowRejectPublishDLX
		default:
			return nil, argError("x-overflow", name, "invalid_overflow")
		}
	}
	if v, ok := args["x-single-active-consumer"]; ok {
		sac, isBool := v.(bool)
		if !isBool {
			return nil, argError("x-single-active-consumer", name, "{unacceptable_type,"+typeName(v)+"}")
		}
		q.sac = sac
	}
	if s, ok, err := strArg(args, "x-queue-type", name); err != nil {
		return nil, err
	} else if ok {
		switch s {
		case "classic":
		case "quorum":
			q.quorum = true
		case "stream":
			return nil, serverError(amqp.PreconditionFailed, "invalid arg 'x-queue-type' for %s: stream queues are not supported by the in-process broker", rs("queue", name))
		default:
			return nil, argError("x-queue-type", name, fmt.Sprintf("\"unsupported queue type '%s'\"", s))
		}
	}
	unsupported, qtype := classicUnsupported, "rabbit_classic_queue"
	if q.quorum {
		unsupported, qtype = quorumUnsupported, "rabbit_quorum_queue"
		// RabbitMQ 3.10 takes any x-delivery-limit; only an integer limits.
		if n, isInt := asInt(args["x-delivery-limit"]); isInt && n >= 0 {
			q.deliveryLimit = n
		}
	}
	for _, k := range unsupported {
		if _, ok := args[k]; ok {
			return nil, serverError(amqp.PreconditionFailed, "invalid arg '%s' for %s of queue type %s", k, rs("queue", name), qtype)
		}
	}
	if q.quorum {
		switch {
		case autoDelete:
			return nil, serverError(amqp.PreconditionFailed, "invalid property 'auto-delete' for %s", rs("queue", name))
		case exclusive:
			return nil, serverError(amqp.PreconditionFailed, "invalid property 'exclusive-owner' for %s", rs("queue", name))
		case !durable:
			return nil, serverError(amqp.PreconditionFailed, "invalid property 'non-durable' for %s", rs("queue", name))
		}
	}
	return q, nil
}

// declareQueue declares a queue for connection conn.
func (b *Broker) declareQueue(conn *Connection, name string, durable, autoDelete, exclusive bool, args amqp.Table) (amqp.Queue, *amqp.Error) {
	if name == "" {
		name = serverQueueName()
	} else if strings.HasPrefix(name, "amq.") {
		return amqp.Queue{}, serverError(amqp.AccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if exclusive && conn.closed.Load() {
		// conn closed after the caller checked its channel: connectionClosed
		// may already have deleted conn's exclusive queues, so a queue added
		// now would outlive its owner. shutdown sets closed before
		// connectionClosed takes b.mu, so seeing it unset here means the
		// queue will be deleted with the others.
		return amqp.Queue{}, amqp.ErrClosed
	}
	if q := b.queues[name]; q != nil {
		var want *Connection
		if exclusive {
			want = conn
		}
		if q.owner != want {
			return amqp.Queue{}, errLocked(name)
		}
		if q.durable != durable {
			return amqp.Queue{}, inequivalent("queue", name, "durable", q.durable, durable, true, true)
		}
		if q.autoDelete != autoDelete {
			return amqp.Queue{}, inequivalent("queue", name, "auto_delete", q.autoDelete, autoDelete, true, true)
		}
		if err := assertArgs("queue", name, q.args, args, queueArgKeys); err != nil {
			return amqp.Queue{}, err
		}
		m, c := q.counts()
		return amqp.Queue{Name: name, Messages: m, Consumers: c}, nil
	}
	q, err := b.newQueue(name, durable, autoDelete, exclusive, conn, args)
	if err != nil {
		return amqp.Queue{}, err
	}
	b.queues[name] = q
	return amqp.Queue{Name: name}, nil
}

// QueueDeclare declares a queue, or checks that the existing one is
// equivalent (406 PRECONDITION_FAILED if durable, auto-delete or an argument
// differs, 405 RESOURCE_LOCKED if exclusivity does). The empty name asks for
// a server-named queue "amq.gen-...". See the package documentation for the
// arguments understood.
func (ch *Channel) QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error) {
	if err := ch.precheck(args, name); err != nil {
		return amqp.Queue{}, err
	}
	q, aerr := ch.b.declareQueue(ch.conn, name, durable, autoDelete, exclusive, normalizeTable(args))
	if aerr != nil {
		if err := ch.result(aerr, noWait); err != nil {
			return amqp.Queue{}, err
		}
		return amqp.Queue{Name: name}, nil
	}
	ch.setLastQueue(q.Name)
	if noWait {
		return amqp.Queue{Name: name}, nil
	}
	return q, nil
}

// QueueDeclarePassive returns the counts of an existing queue: 404 NOT_FOUND
// if there is none, 405 RESOURCE_LOCKED if another connection owns it.
func (ch *Channel) QueueDeclarePassive(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error) {
	if err := ch.precheck(args, name); err != nil {
		return amqp.Queue{}, err
	}
	q, aerr := ch.queueFor(name)
	if aerr != nil {
		if err := ch.result(aerr, noWait); err != nil {
			return amqp.Queue{}, err
		}
		return amqp.Queue{Name: name}, nil
	}
	ch.setLastQueue(q.name)
	if noWait {
		return amqp.Queue{Name: name}, nil
	}
	m, c := q.counts()
	return amqp.Queue{Name: q.name, Messages: m, Consumers: c}, nil
}

// queueFor returns the queue an operation of this channel names, checking
// that it exists and that this connection may use it.
func (ch *Channel) queueFor(name string) (*queue, *amqp.Error) {
	name, err := ch.resolveQueue(name)
	if err != nil {
		return nil, err
	}
	q := ch.b.queueNamed(name)
	if q == nil {
		return nil, errNoQueue(name)
	}
	if q.owner != nil && q.owner != ch.conn {
		return nil, errLocked(name)
	}
	return q, nil
}

// QueueBind binds a queue to an exchange with a routing key (a pattern for
// topic exchanges, ignored by fanout exchanges) and arguments (x-match and
// header values for headers exchanges). Binding twice is not an error.
func (ch *Channel) QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error {
	if err := ch.precheck(args, name, key, exchange); err != nil {
		return err
	}
	return ch.result(ch.bind(name, key, exchange, normalizeTable(args), true), noWait)
}

// QueueUnbind removes a binding. Removing a binding that does not exist is
// not an error.
func (ch *Channel) QueueUnbind(name, key, exchange string, args amqp.Table) error {
	if err := ch.precheck(args, name, key, exchange); err != nil {
		return err
	}
	return ch.result(ch.bind(name, key, exchange, normalizeTable(args), false), false)
}

func (ch *Channel) bind(name, key, exchange string, args amqp.Table, add bool) *amqp.Error {
	if name == "" && key == "" {
		n, err := ch.resolveQueue("")
		if err != nil {
			return err
		}
		name, key = n, n
	}
	name, err := ch.resolveQueue(name)
	if err != nil {
		return err
	}
	if exchange == "" {
		return errDefaultExchange()
	}
	b := ch.b
	b.mu.Lock()
	defer b.mu.Unlock()
	x := b.exchanges[exchange]
	if x == nil {
		return errNoExchange(exchange)
	}
	q := b.queues[name]
	if q == nil {
		return errNoQueue(name)
	}
	if q.owner != nil && q.owner != ch.conn {
		return errLocked(name)
	}
	existing := x.findBinding(q, key, args)
	if !add {
		if existing != nil {
			b.unbindLocked(existing, true)
		}
		return nil
	}
	xmatch, err := validateBinding(x.kind, args)
	if err != nil {
		return err
	}
	if existing != nil {
		return nil
	}
	bd := &binding{ex: x, q: q, key: key, args: args, xmatch: xmatch}
	if x.kind == kindTopic {
		bd.words = topic.Words(key, nil)
	}
	x.addBinding(bd)
	q.bindings = append(q.bindings, bd)
	return nil
}

// QueuePurge removes the ready messages of a queue and returns how many
// there were; unacknowledged deliveries stay.
func (ch *Channel) QueuePurge(name string, noWait bool) (int, error) {
	if ch.closed.Load() {
		return 0, amqp.ErrClosed
	}
	if err := checkShort(name); err != nil {
		return 0, ch.frameError(err)
	}
	q, aerr := ch.queueFor(name)
	if aerr != nil {
		return 0, ch.result(aerr, noWait)
	}
	q.mu.Lock()
	n := q.msgs.len()
	q.msgs = deque[entry]{}
	q.mu.Unlock()
	return n, nil
}

// QueueDelete deletes a queue with its bindings, cancels its consumers and
// returns the number of ready messages it held. ifEmpty and ifUnused refuse
// (406) to delete a queue with ready messages or with consumers. Deleting a
// queue that does not exist is not an error.
func (ch *Channel) QueueDelete(name string, ifUnused, ifEmpty, noWait bool) (int, error) {
	if ch.closed.Load() {
		return 0, amqp.ErrClosed
	}
	if err := checkShort(name); err != nil {
		return 0, ch.frameError(err)
	}
	q, aerr := ch.queueFor(name)
	if aerr != nil {
		if aerr.Code == amqp.NotFound && name != "" {
			return 0, nil
		}
		return 0, ch.result(aerr, noWait)
	}
	m, c := q.counts()
	if ifEmpty && m > 0 {
		return 0, ch.result(serverError(amqp.PreconditionFailed, "%s not empty", rs("queue", q.name)), noWait)
	}
	if ifUnused && c > 0 {
		return 0, ch.result(serverError(amqp.PreconditionFailed, "%s in use", rs("queue", q.name)), noWait)
	}
	return ch.b.deleteQueue(q), nil
}

// ExchangeDeclare declares an exchange of kind direct, fanout, topic or
// headers, or checks that the existing one is equivalent (406
// PRECONDITION_FAILED otherwise). An unknown kind closes the connection with
// 503 COMMAND_INVALID, as RabbitMQ does.
func (ch *Channel) ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	if err := ch.precheck(args, name, kind); err != nil {
		return err
	}
	return ch.result(ch.b.declareExchange(name, kind, durable, autoDelete, internal, normalizeTable(args)), noWait)
}

func (b *Broker) declareExchange(name, kind string, durable, autoDelete, internal bool, args amqp.Table) *amqp.Error {
	if !validKind(kind) {
		return serverError(amqp.CommandInvalid, "unknown exchange type '%s'", kind)
	}
	if name == "" {
		return errDefaultExchange()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	x := b.exchanges[name]
	if x == nil {
		if strings.HasPrefix(name, "amq.") {
			return serverError(amqp.AccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", name)
		}
		b.exchanges[name] = &exchange{name: name, kind: kind, durable: durable, autoDelete: autoDelete, internal: internal, args: args}
		return nil
	}
	switch {
	case x.kind != kind:
		return inequivalent("exchange", name, "type", x.kind, kind, true, true)
	case x.durable != durable:
		return inequivalent("exchange", name, "durable", x.durable, durable, true, true)
	case x.autoDelete != autoDelete:
		return inequivalent("exchange", name, "auto_delete", x.autoDelete, autoDelete, true, true)
	case x.internal != internal:
		return inequivalent("exchange", name, "internal", x.internal, internal, true, true)
	}
	return assertArgs("exchange", name, x.args, args, exchangeArgKeys)
}

// ExchangeDeclarePassive checks that an exchange exists (404 NOT_FOUND
// otherwise).
func (ch *Channel) ExchangeDeclarePassive(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error {
	if err := ch.precheck(args, name, kind); err != nil {
		return err
	}
	if name == "" {
		return ch.result(errDefaultExchange(), noWait)
	}
	ch.b.mu.RLock()
	x := ch.b.exchanges[name]
	ch.b.mu.RUnlock()
	if x == nil {
		return ch.result(errNoExchange(name), noWait)
	}
	return nil
}

// ExchangeDelete deletes an exchange and its bindings. ifUnused refuses
// (406) to delete an exchange that has bindings. Deleting an exchange that
// does not exist is not an error; the default and amq.* exchanges cannot be
// deleted (403 ACCESS_REFUSED).
func (ch *Channel) ExchangeDelete(name string, ifUnused, noWait bool) error {
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	if err := checkShort(name); err != nil {
		return ch.frameError(err)
	}
	return ch.result(ch.b.deleteExchange(name, ifUnused), noWait)
}

func (b *Broker) deleteExchange(name string, ifUnused bool) *amqp.Error {
	if name == "" {
		return errDefaultExchange()
	}
	if strings.HasPrefix(name, "amq.") {
		return serverError(amqp.AccessRefused, "deletion of system %s not allowed", rs("exchange", name))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	x := b.exchanges[name]
	if x == nil {
		return nil
	}
	if ifUnused && len(x.bindings) > 0 {
		return serverError(amqp.PreconditionFailed, "%s in use", rs("exchange", name))
	}
	b.deleteExchangeLocked(x)
	return nil
}
