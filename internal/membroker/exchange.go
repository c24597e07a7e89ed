package membroker

import (
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/topic"
)

// Exchange types.
const (
	kindDirect  = "direct"
	kindFanout  = "fanout"
	kindTopic   = "topic"
	kindHeaders = "headers"
)

// exchange is guarded by Broker.mu.
type exchange struct {
	name       string
	kind       string
	durable    bool
	autoDelete bool
	internal   bool
	args       amqp.Table

	bindings []*binding            // in bind order
	direct   map[string][]*binding // direct exchanges: bindings by key
}

// binding binds a queue to an exchange; guarded by Broker.mu.
type binding struct {
	ex     *exchange
	q      *queue
	key    string
	args   amqp.Table
	words  []string // topic: the key split on "."
	xmatch string   // headers: all, any, all-with-x or any-with-x
}

// exchangeArgKeys are the exchange arguments RabbitMQ compares on redeclare.
var exchangeArgKeys = []string{"alternate-exchange"}

func validKind(kind string) bool {
	switch kind {
	case kindDirect, kindFanout, kindTopic, kindHeaders:
		return true
	}
	return false
}

// headersMatch applies a headers-exchange binding to a message's headers.
func headersMatch(b *binding, h amqp.Table) bool {
	all := b.xmatch == "all" || b.xmatch == "all-with-x"
	withX := strings.HasSuffix(b.xmatch, "-with-x")
	for k, pv := range b.args {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		dv, ok := h[k]
		switch {
		case !ok:
			if all {
				return false
			}
		case pv == nil || headerValueEqual(pv, dv):
			if !all {
				return true
			}
		default:
			if all {
				return false
			}
		}
	}
	return all
}

// headerValueEqual compares as Erlang's == does: numbers by value, other
// values structurally.
func headerValueEqual(a, b any) bool {
	fa, aNum := number(a)
	fb, bNum := number(b)
	if aNum || bNum {
		return aNum && bNum && fa == fb
	}
	return valuesEqual(a, b)
}

func number(v any) (float64, bool) {
	if n, ok := asInt(v); ok {
		return float64(n), true
	}
	return asFloat(v)
}

// validateBinding checks a headers binding's x-match as RabbitMQ does.
func validateBinding(kind string, args amqp.Table) (string, *amqp.Error) {
	if kind != kindHeaders {
		return "", nil
	}
	v, ok := args["x-match"]
	if !ok {
		return "all", nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", serverError(amqp.PreconditionFailed, "Invalid x-match field type %s (value %v); expected longstr", typeName(v), v)
	}
	switch s {
	case "all", "any", "all-with-x", "any-with-x":
		return s, nil
	}
	return "", serverError(amqp.PreconditionFailed, "Invalid x-match field value <<%q>>; expected all, any, all-with-x, or any-with-x", s)
}

func (x *exchange) addBinding(b *binding) {
	x.bindings = append(x.bindings, b)
	if x.kind == kindDirect {
		if x.direct == nil {
			x.direct = make(map[string][]*binding)
		}
		x.direct[b.key] = append(x.direct[b.key], b)
	}
}

func (x *exchange) findBinding(q *queue, key string, args amqp.Table) *binding {
	for _, b := range x.bindings {
		if b.q == q && b.key == key && tablesEqual(b.args, args) {
			return b
		}
	}
	return nil
}

func removeBinding(list []*binding, b *binding) []*binding {
	for i, e := range list {
		if e == b {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}

func (x *exchange) removeBinding(b *binding) {
	x.bindings = removeBinding(x.bindings, b)
	if x.kind == kindDirect {
		l := removeBinding(x.direct[b.key], b)
		if len(l) == 0 {
			delete(x.direct, b.key)
		} else {
			x.direct[b.key] = l
		}
	}
}

// addQueue appends q to dst unless it is there already.
func addQueue(dst []*queue, q *queue) []*queue {
	for _, e := range dst {
		if e == q {
			return dst
		}
	}
	return append(dst, q)
}

// route appends the queues x routes a message with routing keys keys and
// headers h to. Broker.mu is held for reading.
func (x *exchange) route(keys []string, h amqp.Table, dst []*queue) []*queue {
	switch x.kind {
	case kindDirect:
		for _, k := range keys {
			for _, b := range x.direct[k] {
				dst = addQueue(dst, b.q)
			}
		}
	case kindFanout:
		for _, b := range x.bindings {
			dst = addQueue(dst, b.q)
		}
	case kindTopic:
		var buf [32]string
		for _, k := range keys {
			words := topic.Words(k, buf[:0])
			for _, b := range x.bindings {
				if topic.Match(b.words, words) {
					dst = addQueue(dst, b.q)
				}
			}
		}
	case kindHeaders:
		for _, b := range x.bindings {
			if headersMatch(b, h) {
				dst = addQueue(dst, b.q)
			}
		}
	}
	return dst
}
