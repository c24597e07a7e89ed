package omqs

import (
	"fmt"
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
	queue        string
	queueDurable bool // as declared: an EventConsumer's named queue is always durable
	queueType    string
	deadLetter   string
}

func (c *Config) sharedSections() []sharedSection {
	w := func(name string, wc WorkerConfig) sharedSection {
		return sharedSection{name: name, exchange: wc.Exchange, kind: wc.ExchangeType, xDurable: wc.ExchangeDurable,
			queue: wc.Queue, queueDurable: wc.QueueDurable, queueType: wc.QueueType}
	}
	k := func(name string, cc ConsumerConfig, alwaysDurable bool) sharedSection {
		return sharedSection{name: name, consumer: true, exchange: cc.Exchange, kind: cc.ExchangeType, xDurable: cc.ExchangeDurable,
			queue: cc.Queue, queueDurable: cc.QueueDurable || alwaysDurable && cc.Queue != "",
			queueType: cc.QueueType, deadLetter: cc.DeadLetterExchange}
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

// checkSharedQueueTypes reports two sections that declare one queue with
// different QUEUE_TYPEs, such as [EventWorker] and [EventConsumer] on
// "omqs.queue.event": the Manager's Start or the consumer's Run would fail.
func (c *Config) checkSharedQueueTypes() error {
	ss := c.sharedSections()
	for i, a := range ss {
		for _, b := range ss[i+1:] {
			if a.queue == "" || a.queue != b.queue || queueTypeOf(a.queueType) == queueTypeOf(b.queueType) {
				continue
			}
			return fmt.Errorf("%w: [%s] QUEUE_TYPE is %s and [%s] QUEUE_TYPE is %s for the same queue %q: "+
				"the broker refuses whichever declares it second (406 PRECONDITION_FAILED); set both to the same type",
				ErrInvalidConfig, a.name, queueTypeOf(a.queueType), b.name, queueTypeOf(b.queueType), a.queue)
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
		durable, legacy := legacyQueues[s.queue]
		if !legacy {
			continue
		}
		var diffs []string
		if queueTypeOf(s.queueType) != "classic" {
			diffs = append(diffs, "QUEUE_TYPE="+queueTypeOf(s.queueType))
		}
		if s.deadLetter != "" {
			diffs = append(diffs, "DEAD_LETTER_EXCHANGE="+s.deadLetter)
		}
		if s.queueDurable != durable {
			diffs = append(diffs, fmt.Sprintf("durable=%v", s.queueDurable))
		}
		if len(diffs) > 0 {
			add("[%s] declares the queue %q with %s; the Python original declares it classic, durable=%v, without arguments, "+
				"so a Python service that uses it cannot start while it exists, nor this one after a Python service declared it",
				s.name, s.queue, strings.Join(diffs, ", "), durable)
		}
	}
	// Two sections of this file on one queue (QUEUE_TYPE is an error, see
	// checkSharedQueueTypes).
	for i, a := range ss {
		for _, b := range ss[i+1:] {
			if a.queue == "" || a.queue != b.queue {
				continue
			}
			if a.queueDurable != b.queueDurable {
				add("[%s] declares the queue %q durable=%v and [%s] durable=%v: whichever declares it second fails",
					a.name, a.queue, a.queueDurable, b.name, b.queueDurable)
			}
			if a.deadLetter != b.deadLetter {
				add("[%s] declares the queue %q with dead-letter exchange %q and [%s] with %q: whichever declares it second fails",
					a.name, a.queue, a.deadLetter, b.name, b.deadLetter)
			}
		}
	}
	return out
}
