package omqs

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/topic"
	"github.com/omqs-go/omqs/internal/transport"
)

// topology is what a publisher or consumer declares.
type topology struct {
	exchange      string
	kind          string
	durable       bool
	queue         string
	queueDurable  bool
	queueType     string
	deadLetter    string        // fanout exchange declared and set as the queue's DLX
	messageTTL    time.Duration // x-message-ttl, 0 for none
	maxLength     int           // x-max-length, 0 for none
	deliveryLimit int           // x-delivery-limit (quorum), 0 for none
	expires       time.Duration // x-expires (a consumer's named, non-durable queue), 0 for none
	keys          []string
}

// setQueue sets t's queue from q.
func (t *topology) setQueue(q QueueConfig) {
	t.queue, t.queueDurable, t.queueType = q.Queue, q.QueueDurable, q.QueueType
	t.deadLetter, t.messageTTL, t.maxLength = q.DeadLetterExchange, q.MessageTTL, q.MaxLength
	t.deliveryLimit = q.DeliveryLimit
}

// arguments returns the arguments t's queue is declared with.
func (t topology) arguments() amqp.Table {
	args := QueueConfig{QueueType: t.queueType, DeadLetterExchange: t.deadLetter, MessageTTL: t.messageTTL,
		MaxLength: t.maxLength, DeliveryLimit: t.deliveryLimit}.arguments()
	if t.expires > 0 {
		if args == nil {
			args = amqp.Table{}
		}
		args["x-expires"] = int64(t.expires / time.Millisecond)
	}
	return args
}

// Arguments returns the arguments the workers, publishers and consumers of
// this package declare a queue described by q with: x-queue-type for a
// quorum queue, x-dead-letter-exchange, x-message-ttl in milliseconds (an
// int64), x-max-length and x-delivery-limit (int64s); nil for none. Config's checks compare
// the sections that name one queue with it. A program that declares the
// queue by other means must pass the same arguments (and declare the
// dead-letter exchange as a durable fanout exchange) or the broker refuses
// one of the two declarations.
func (q QueueConfig) Arguments() map[string]any {
	return q.arguments()
}

func (q QueueConfig) arguments() amqp.Table {
	args := amqp.Table{}
	if queueTypeOf(q.QueueType) == "quorum" {
		args["x-queue-type"] = "quorum"
	}
	if q.DeadLetterExchange != "" {
		args["x-dead-letter-exchange"] = q.DeadLetterExchange
	}
	if q.MessageTTL > 0 {
		args["x-message-ttl"] = int64(q.MessageTTL / time.Millisecond)
	}
	if q.MaxLength > 0 {
		args["x-max-length"] = int64(q.MaxLength)
	}
	if q.DeliveryLimit > 0 {
		args["x-delivery-limit"] = int64(q.DeliveryLimit)
	}
	if len(args) == 0 {
		return nil
	}
	return args
}

// declare declares the dead-letter exchange, the exchange, the queue and its
// bindings on ch.
func (t topology) declare(ch transport.Channel) error {
	if err := t.declareDeadLetter(ch); err != nil {
		return err
	}
	if t.exchange != "" {
		if err := ch.ExchangeDeclare(t.exchange, t.kind, t.durable, false, false, false, nil); err != nil {
			return fmt.Errorf("%w: declare exchange %q (%s, durable=%v): %w", ErrInvalidChannel, t.exchange, t.kind, t.durable, err)
		}
	}
	if t.queue == "" {
		return nil
	}
	args := t.arguments()
	if _, err := ch.QueueDeclare(t.queue, t.queueDurable, false, false, false, args); err != nil {
		hint := ""
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			hint = "; the queue exists with other settings (declared by another program or section): " +
				"give every section and program that declares it the same QUEUE_DURABLE, QUEUE_TYPE, DEAD_LETTER_EXCHANGE, MESSAGE_TTL and MAX_LENGTH"
		}
		return fmt.Errorf("%w: declare queue %q (durable=%v, arguments %s)%s: %w", ErrInvalidQueue, t.queue, t.queueDurable, formatArgs(args), hint, err)
	}
	return t.bind(ch, t.queue)
}

// declareDeadLetter declares t's dead-letter exchange, if it has one.
func (t topology) declareDeadLetter(ch transport.Channel) error {
	if t.deadLetter == "" {
		return nil
	}
	if err := ch.ExchangeDeclare(t.deadLetter, "fanout", true, false, false, false, nil); err != nil {
		return fmt.Errorf("%w: declare dead-letter exchange %q (fanout, durable): %w", ErrInvalidChannel, t.deadLetter, err)
	}
	return nil
}

// routesOwn reports whether a message published to t's exchange with key
// reaches t's own queue through a binding t declares: the queue is durable
// and does not expire, and one of t's keys routes key the way the exchange's
// kind does (direct: the same key; topic: a pattern that matches; fanout:
// any key; a headers exchange routes by headers, so never). A publisher
// declares the exchange, the queue and the bindings on every connection
// before it publishes on it, so such a message is not unroutable unless
// something else deletes the queue or the binding meanwhile.
func (t topology) routesOwn(key string) bool {
	if t.exchange == "" || t.queue == "" || !t.queueDurable || t.expires > 0 {
		return false
	}
	switch t.kind {
	case "fanout":
		return true
	case "direct":
		return slices.Contains(t.keys, key)
	case "topic":
		for _, p := range t.keys {
			if topic.Matches(p, key) {
				return true
			}
		}
	}
	return false
}

// formatArgs writes queue arguments in a stable order, "none" for none.
func formatArgs(args amqp.Table) string {
	if len(args) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(args))
	for k := range args {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%v", k, args[k])
	}
	return b.String()
}

// bind binds queue to the exchange with each key (with "" for a fanout or
// headers exchange given no keys). It does nothing without an exchange.
func (t topology) bind(ch transport.Channel, queue string) error {
	if t.exchange == "" {
		return nil
	}
	keys := t.keys
	if len(keys) == 0 && (t.kind == "fanout" || t.kind == "headers") {
		keys = []string{""}
	}
	for _, k := range keys {
		if err := ch.QueueBind(queue, k, t.exchange, false, nil); err != nil {
			return fmt.Errorf("%w: bind queue %q to %q with key %q: %w", ErrInvalidQueue, queue, t.exchange, k, err)
		}
	}
	return nil
}

// publisherTopology reads the publisher's section (s.section, which
// buildSettings set and checked) and applies the overrides.
func publisherTopology(s *settings) (topology, error) {
	var pc PublisherConfig
	switch s.section {
	case "AsyncPublisher":
		pc = s.cfg.AsyncPublisher
	case "SyncPublisher":
		pc = s.cfg.SyncPublisher
	case "AsyncBroadcaster":
		pc = s.cfg.AsyncBroadcaster
	case "SyncBroadcaster":
		pc = s.cfg.SyncBroadcaster
	case "AsyncRouter":
		pc = s.cfg.AsyncRouter
	case "SyncRouter":
		pc = s.cfg.SyncRouter
	default:
		return topology{}, fmt.Errorf("%w: [%s] is not a publisher section", ErrInvalidConfig, s.section)
	}
	t := topology{
		exchange: pc.Exchange, kind: pc.ExchangeType, durable: pc.ExchangeDurable,
		queue: pc.Queue, queueDurable: pc.QueueDurable, queueType: "classic",
		keys: pc.RoutingKeys,
	}
	s.overrideTopology(&t)
	return t, nil
}

func (s *settings) overrideTopology(t *topology) {
	if s.exchange != nil {
		t.exchange, t.kind, t.durable = *s.exchange, *s.exchangeType, *s.exchangeDurable
	}
	if s.queue != nil {
		t.queue = *s.queue
	}
	if s.queueDurable != nil {
		t.queueDurable = *s.queueDurable
	}
	if s.queueType != nil {
		t.queueType = *s.queueType
	}
	if s.deadLetter != nil {
		t.deadLetter = *s.deadLetter
	}
	if s.messageTTL != nil {
		t.messageTTL = *s.messageTTL
	}
	if s.maxLength != nil {
		t.maxLength = *s.maxLength
	}
	if s.deliveryLimit != nil {
		t.deliveryLimit = *s.deliveryLimit
	}
	if s.keysSet {
		t.keys = s.keys
	}
}

func workerTopology(w WorkerConfig) topology {
	t := topology{exchange: w.Exchange, kind: w.ExchangeType, durable: w.ExchangeDurable, keys: w.Keys}
	t.setQueue(w.QueueConfig())
	return t
}
