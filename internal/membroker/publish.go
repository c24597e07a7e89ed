package membroker

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// maxMessageSize is RabbitMQ 3.10's default max_message_size.
const maxMessageSize = 134217728

// checkPublishing returns amqp091's encoding error for a publish it cannot
// send: a short string over 255 bytes, in the order amqp091 writes them.
func checkPublishing(exchange, key string, msg *amqp.Publishing) error {
	if err := checkShort(exchange, key, msg.ContentType, msg.ContentEncoding); err != nil {
		return err
	}
	if err := checkTableKeys(msg.Headers); err != nil {
		return err
	}
	return checkShort(msg.CorrelationId, msg.ReplyTo, msg.Expiration, msg.MessageId, msg.Type, msg.UserId, msg.AppId)
}

// routeHeader returns the routing keys of a CC or BCC header.
func routeHeader(v any) []string {
	list, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		if s, ok := e.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// PublishWithContext publishes msg to exchange with routing key key. It
// copies msg.Body, so the caller may reuse it.
//
// As with amqp091 and RabbitMQ, broker-side failures are asynchronous: a
// missing exchange (404), an internal exchange (403) or a bad expiration
// (406) close the channel, and immediate=true (540) the connection, after
// PublishWithContext returned nil. A short string over 255 bytes is refused
// client-side with amqp091's error, which also closes the connection.
//
// In confirm mode the publish gets the next delivery tag and its
// Confirmation follows any Return. While the broker is blocked (see
// Broker.SetBlocked) the call waits, returning ctx.Err() if ctx ends first.
// It also waits while the channel has 4096 notifications (confirms and
// returns) queued for listeners that do not keep up.
func (ch *Channel) PublishWithContext(ctx context.Context, exchange, key string, mandatory, immediate bool, msg amqp.Publishing) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	if err := msg.Headers.Validate(); err != nil {
		return err
	}
	if ch.closed.Load() {
		return amqp.ErrClosed
	}
	if err := checkPublishing(exchange, key, &msg); err != nil {
		return ch.frameError(err)
	}
	if ch.b.blocked.Load() {
		ch.b.tellBlocked(ch.conn)
		if err := ch.b.waitUnblocked(ctx, ch.done); err != nil {
			return err
		}
	}
	if err := ch.n.waitRoom(ctx, ch.done); err != nil {
		return err
	}
	closed, aerr := ch.publish(exchange, key, mandatory, immediate, &msg)
	if closed {
		return amqp.ErrClosed
	}
	if aerr != nil {
		ch.fail(aerr)
	}
	return nil
}

// publish does the broker's side of a publish. It reports whether the
// channel was closed, or the error that closes it.
func (ch *Channel) publish(exchange, key string, mandatory, immediate bool, msg *amqp.Publishing) (bool, *amqp.Error) {
	ch.pubMu.Lock()
	defer ch.pubMu.Unlock()
	if ch.pubClosed {
		return true, nil
	}
	var tag uint64
	if ch.confirming {
		ch.published++
		tag = ch.published
	}
	if immediate {
		return false, serverError(amqp.NotImplemented, "immediate=true")
	}
	if len(msg.Body) > maxMessageSize {
		return false, serverError(amqp.PreconditionFailed, "message size %d is larger than configured max size %d", len(msg.Body), maxMessageSize)
	}

	headers := normalizeTable(msg.Headers)
	keys := append(ch.keyBuf[:0], key)
	var cc []string
	if headers != nil {
		cc = routeHeader(headers["CC"])
		keys = append(keys, cc...)
		if bcc, ok := headers["BCC"]; ok {
			keys = append(keys, routeHeader(bcc)...)
			delete(headers, "BCC")
			if len(headers) == 0 {
				headers = nil
			}
		}
	}

	b := ch.b
	targets := ch.routeBuf[:0]
	b.mu.RLock()
	if exchange == "" {
		for _, k := range keys {
			if q := b.queues[k]; q != nil {
				targets = addQueue(targets, q)
			}
		}
	} else {
		x := b.exchanges[exchange]
		if x == nil {
			b.mu.RUnlock()
			return false, errNoExchange(exchange)
		}
		if x.internal {
			b.mu.RUnlock()
			return false, serverError(amqp.AccessRefused, "cannot publish to internal %s", rs("exchange", exchange))
		}
		targets = x.route(keys, headers, targets)
		targets = b.alternate(x, keys, headers, targets)
	}
	b.mu.RUnlock()
	ch.keyBuf = keys[:0]
	ttl, aerr := parseExpiration(msg.Expiration)
	if aerr != nil {
		clear(targets)
		return false, aerr
	}
	b.stats.published.Add(1)

	m := &message{exchange: exchange, key: key, cc: cc, pub: *msg, ttl: ttl}
	m.pub.Headers = headers
	m.pub.Body = make([]byte, len(msg.Body))
	copy(m.pub.Body, msg.Body)
	if !m.pub.Timestamp.IsZero() {
		m.pub.Timestamp = time.Unix(m.pub.Timestamp.Unix(), 0)
	}

	ack := true
	if len(targets) == 0 {
		b.stats.unroutable.Add(1)
		if mandatory {
			b.stats.returned.Add(1)
			ch.n.emit(event{kind: evReturn, ret: returned(m)})
		}
	} else {
		b.stats.routed.Add(1)
		var dead []deadLetter
		for _, q := range targets {
			e := entry{m: m}
			if ttl >= 0 || q.ttl >= 0 {
				e.expires = expiry(q, m)
			}
			if !q.enqueue(e, &dead) {
				ack = false
			}
		}
		if len(dead) > 0 {
			b.deadLetter(dead)
		}
	}
	clear(targets)
	ch.routeBuf = targets[:0]
	if ch.confirming {
		ch.n.emit(event{kind: evConfirm, conf: amqp.Confirmation{DeliveryTag: tag, Ack: ack}})
	}
	return false, nil
}

// returned is the basic.return of an unroutable mandatory message.
func returned(m *message) *amqp.Return {
	p := &m.pub
	return &amqp.Return{
		ReplyCode:       amqp.NoRoute,
		ReplyText:       "NO_ROUTE",
		Exchange:        m.exchange,
		RoutingKey:      m.key,
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		Headers:         copyTable(p.Headers),
		DeliveryMode:    p.DeliveryMode,
		Priority:        p.Priority,
		CorrelationId:   p.CorrelationId,
		ReplyTo:         p.ReplyTo,
		Expiration:      p.Expiration,
		MessageId:       p.MessageId,
		Timestamp:       p.Timestamp,
		Type:            p.Type,
		UserId:          p.UserId,
		AppId:           p.AppId,
		Body:            append([]byte{}, p.Body...),
	}
}
