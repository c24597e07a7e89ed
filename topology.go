package omqs

import (
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/transport"
)

// topology is what a publisher or consumer declares.
type topology struct {
	exchange     string
	kind         string
	durable      bool
	queue        string
	queueDurable bool
	queueType    string
	keys         []string
	queueArgs    amqp.Table
}

// declare declares the exchange, the queue and its bindings on ch.
func (t topology) declare(ch transport.Channel) error {
	if t.exchange != "" {
		if err := ch.ExchangeDeclare(t.exchange, t.kind, t.durable, false, false, false, nil); err != nil {
			return fmt.Errorf("%w: declare exchange %q (%s, durable=%v): %w", ErrInvalidChannel, t.exchange, t.kind, t.durable, err)
		}
	}
	if t.queue == "" {
		return nil
	}
	args := amqp.Table{}
	for k, v := range t.queueArgs {
		args[k] = v
	}
	if t.queueType == "quorum" {
		args["x-queue-type"] = "quorum"
	}
	if len(args) == 0 {
		args = nil
	}
	if _, err := ch.QueueDeclare(t.queue, t.queueDurable, false, false, false, args); err != nil {
		return fmt.Errorf("%w: declare queue %q (durable=%v): %w", ErrInvalidQueue, t.queue, t.queueDurable, err)
	}
	return t.bind(ch, t.queue)
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
	if s.keysSet {
		t.keys = s.keys
	}
}

func workerTopology(w WorkerConfig) topology {
	return topology{
		exchange: w.Exchange, kind: w.ExchangeType, durable: w.ExchangeDurable,
		queue: w.Queue, queueDurable: w.QueueDurable, queueType: w.QueueType, keys: w.Keys,
	}
}
