package omqs

import (
	"fmt"
	"reflect"
	"strings"
)

// Declarations that must agree: the broker refuses (406 PRECONDITION_FAILED)
// a second declaration of an exchange or queue with other settings, so two
// sections of one OMQS.cfg that name the same queue, or a section that names
// one of the Python original's queues with settings the original does not
// use, make whichever program declares it second fail to start.

// sharedSection is what one section of a Config declares.
type sharedSection struct {
	name         string // section name
	consumer     bool
	exchange     string
	kind         string
	xDurable     bool
	queue        QueueConfig
	queueDurable bool // as declared: an EventConsumer's named queue is always durable
}

func (c *Config) sharedSections() []sharedSection {
	w := func(name string, wc WorkerConfig) sharedSection {
		return sharedSection{name: name, exchange: wc.Exchange, kind: wc.ExchangeType, xDurable: wc.ExchangeDurable,
			queue: wc.QueueConfig(), queueDurable: wc.QueueDurable}
	}
	k := func(name string, cc ConsumerConfig, alwaysDurable bool) sharedSection {
		return sharedSection{name: name, consumer: true, exchange: cc.Exchange, kind: cc.ExchangeType, xDurable: cc.ExchangeDurable,
			queue: cc.QueueConfig(), queueDurable: cc.QueueDurable || alwaysDurable && cc.Queue != ""}
	}
	return []sharedSection{
		w("LogWorker", c.LogWorker),
		w("EventWorker", c.EventWorker),
		k("LogConsumer", c.LogConsumer, false),
		k("EventConsumer", c.EventConsumer, true),
	}
}

// queueTypeOf returns t in lower case, "" read as classic.
func queueTypeOf(t string) string {
	if t == "" {
		return "classic"
	}
	return strings.ToLower(t)
}

// queueSettings writes the queue settings of q that become arguments, as
// OMQS.cfg spells them: "QUEUE_TYPE=classic" and each of
// DEAD_LETTER_EXCHANGE, MESSAGE_TTL and MAX_LENGTH that is set.
func queueSettings(q QueueConfig) string {
	parts := []string{"QUEUE_TYPE=" + queueTypeOf(q.QueueType)}
	if q.DeadLetterExchange != "" {
		parts = append(parts, "DEAD_LETTER_EXCHANGE="+q.DeadLetterExchange)
	}
	if q.MessageTTL > 0 {
		parts = append(parts, "MESSAGE_TTL="+q.MessageTTL.String())
	}
	if q.MaxLength > 0 {
		parts = append(parts, fmt.Sprintf("MAX_LENGTH=%d", q.MaxLength))
	}
	return strings.Join(parts, ", ")
}

// checkSharedQueueTypes reports two sections that declare one queue with
// different arguments (QUEUE_TYPE, DEAD_LETTER_EXCHANGE, MESSAGE_TTL,
// MAX_LENGTH), such as [EventWorker] and [EventConsumer] on
// "omqs.queue.event": the Manager's Start or the consumer's Run would fail
// with 406 PRECONDITION_FAILED. The arguments compared are those
// QueueConfig.arguments gives, the ones both sides declare.
func (c *Config) checkSharedQueueTypes() error {
	ss := c.sharedSections()
	for i, a := range ss {
		for _, b := range ss[i+1:] {
			if a.queue.Queue == "" || a.queue.Queue != b.queue.Queue {
				continue
			}
			if queueTypeOf(a.queue.QueueType) != queueTypeOf(b.queue.QueueType) {
				return fmt.Errorf("%w: [%s] QUEUE_TYPE is %s and [%s] QUEUE_TYPE is %s for the same queue %q: "+
					"the broker refuses whichever declares it second (406 PRECONDITION_FAILED); set both to the same type",
					ErrInvalidConfig, a.name, queueTypeOf(a.queue.QueueType), b.name, queueTypeOf(b.queue.QueueType), a.queue.Queue)
			}
			if !reflect.DeepEqual(a.queue.arguments(), b.queue.arguments()) {
				return fmt.Errorf("%w: [%s] declares the queue %q with %s and [%s] with %s: "+
					"the broker refuses whichever declares it second (406 PRECONDITION_FAILED); give both the same settings",
					ErrInvalidConfig, a.name, a.queue.Queue, queueSettings(a.queue), b.name, queueSettings(b.queue))
			}
		}
	}
	return nil
}

// The Python original's declarations of its fixed names.
var (
	legacyExchanges = map[string]bool{LogExchange: true, EventExchange: true} // topic, durable
	// legacyQueues maps a queue to the durability the original declares it
	// with: omqs.queue.event durable (its EventMsgWorker and EventMsgConsumer),
	// omqs.queue.log not durable (its LogMsgConsumer's default). Both classic,
	// without arguments.
	legacyQueues = map[string]bool{EventQueue: true, LogQueue: false}
)

// compatWarnings lists settings that make a declaration fail with 406 beside
// another section of c or beside the Python original on its fixed names.
// LoadConfig adds them to Config.Warnings; they are not errors because a
// program may run alone, or beside no Python service.
func (c *Config) compatWarnings() []string {
	var out []string
	add := func(format string, args ...any) {
		out = append(out, fmt.Sprintf(format, args...)+" (406 PRECONDITION_FAILED)")
	}
	ss := c.sharedSections()
	for _, s := range ss {
		if legacyExchanges[s.exchange] && (strings.ToLower(s.kind) != "topic" || !s.xDurable) {
			add("[%s] declares the exchange %q as %s, durable=%v; the Python original declares it topic and durable, "+
				"so a Python service cannot start while it exists, nor this one after a Python service declared it",
				s.name, s.exchange, strings.ToLower(s.kind), s.xDurable)
		}
		durable, legacy := legacyQueues[s.queue.Queue]
		if !legacy {
			continue
		}
		var diffs []string
		if queueTypeOf(s.queue.QueueType) != "classic" {
			diffs = append(diffs, "QUEUE_TYPE="+queueTypeOf(s.queue.QueueType))
		}
		if q := s.queue; q.DeadLetterExchange != "" || q.MessageTTL > 0 || q.MaxLength > 0 {
			q.QueueType = ""
			diffs = append(diffs, strings.TrimPrefix(queueSettings(q), "QUEUE_TYPE=classic, "))
		}
		if s.queueDurable != durable {
			diffs = append(diffs, fmt.Sprintf("durable=%v", s.queueDurable))
		}
		if len(diffs) > 0 {
			add("[%s] declares the queue %q with %s; the Python original declares it classic, durable=%v, without arguments, "+
				"so a Python service that uses it cannot start while it exists, nor this one after a Python service declared it",
				s.name, s.queue.Queue, strings.Join(diffs, ", "), durable)
		}
	}
	// Two sections of this file on one queue (its arguments are an error,
	// see checkSharedQueueTypes).
	for i, a := range ss {
		for _, b := range ss[i+1:] {
			if a.queue.Queue == "" || a.queue.Queue != b.queue.Queue {
				continue
			}
			if a.queueDurable != b.queueDurable {
				add("[%s] declares the queue %q durable=%v and [%s] durable=%v: whichever declares it second fails",
					a.name, a.queue.Queue, a.queueDurable, b.name, b.queueDurable)
			}
		}
	}
	return out
}
