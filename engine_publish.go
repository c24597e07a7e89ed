package omqs

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// newMsg validates and builds a message for Publish, copying body.
func (e *engine) newMsg(key string, body []byte) (*outMsg, error) {
	return e.buildMsg(key, body, true, "", time.Time{})
}

// buildMsg validates key and body and builds a message with id and ts, or a
// new id and the current time when they are empty. With copyBody the message
// gets a copy of body; otherwise the engine keeps body.
func (e *engine) buildMsg(key string, body []byte, copyBody bool, id string, ts time.Time) (*outMsg, error) {
	if key == "" {
		key = e.defaultKey
	}
	if err := checkKey(key); err != nil {
		return nil, errorOf(e.who, err)
	}
	if len(body) > MaxBodySize {
		return nil, errorOf(e.who, fmt.Errorf("%w: body is %d bytes, larger than the broker's maximum of %d", ErrInvalidMessage, len(body), MaxBodySize))
	}
	if copyBody {
		body = append([]byte(nil), body...)
	}
	if id == "" {
		id = newMessageID()
	}
	if ts.IsZero() {
		ts = time.Now()
	}
	return &outMsg{exchange: e.topo.exchange, key: key, body: body, id: id, ts: ts}, nil
}

// fromMessage builds a message from msg, keeping its id, timestamp,
// content type and headers; with owned, msg.Body is not copied.
func (e *engine) fromMessage(msg Message, owned bool) (*outMsg, error) {
	if err := checkShortstr("message id", msg.MessageID); err != nil {
		return nil, errorOf(e.who, err)
	}
	if err := checkShortstr("content type", msg.ContentType); err != nil {
		return nil, errorOf(e.who, err)
	}
	m, err := e.buildMsg(msg.Key, msg.Body, !owned, msg.MessageID, msg.Timestamp)
	if err != nil {
		return nil, err
	}
	m.jseq = msg.jseq
	m.ct = msg.ContentType
	if len(msg.Headers) > 0 {
		h, err := headerTable(msg.Headers)
		if err != nil {
			return nil, errorOf(e.who, err)
		}
		m.headers = h
	}
	return m, nil
}

// write publishes m on sess and records it as outstanding. e.pubMu is held.
//
// When ctx ends before the transport takes m (the in-process broker makes a
// publish wait during an alarm; amqp091 only checks ctx before writing),
// write returns ctx's error and m is neither published nor recorded; the
// caller still counts it in flight. Any other failure means the channel or
// connection is going away: m is held for the next connection and write
// returns nil.
func (e *engine) write(ctx context.Context, sess *session, m *outMsg) error {
	tag := sess.ch.GetNextPublishSeqNo()
	e.mu.Lock()
	e.outstanding[tag] = m
	e.mu.Unlock()
	return e.send(ctx, sess, tag, m)
}

// send publishes m, already recorded as outstanding under tag; see write.
// e.pubMu is held.
func (e *engine) send(ctx context.Context, sess *session, tag uint64, m *outMsg) error {
	pub := amqp.Publishing{
		ContentType:  m.ct,
		DeliveryMode: amqp.Persistent,
		MessageId:    m.id,
		Timestamp:    m.ts,
		AppId:        e.appID,
		Headers:      m.headers,
		Body:         m.body,
	}
	wasOut := m.wasOut
	m.wasOut = true
	if e.obs != nil {
		m.sent = time.Now()
	}
	if err := sess.ch.PublishWithContext(ctx, m.exchange, m.key, e.mandatoryFor(m), false, pub); err != nil {
		e.mu.Lock()
		defer e.mu.Unlock()
		mine := e.outstanding[tag] == m
		if mine {
			delete(e.outstanding, tag)
		}
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			m.wasOut = wasOut
			return cerr
		}
		// The channel or connection is going away. amqp091 gives the tag
		// to the next publish, so m moves from outstanding to held and is
		// published on the next connection.
		if mine {
			e.held = append(e.held, m)
		}
		return nil
	}
	e.st.published.Add(1)
	return nil
}

// mandatoryFor reports whether m is published mandatory: always with
// WithMandatory(true), never without mandatory, and otherwise unless the
// publisher's own binding routes it (see engine.mandatory). e.pubMu is held.
func (e *engine) mandatoryFor(m *outMsg) bool {
	if !e.mandatory || e.mandatoryAll || m.exchange != e.topo.exchange {
		return e.mandatory
	}
	if m.key != e.lastKey || e.lastKey == "" {
		e.lastKey, e.lastOwn = m.key, e.topo.routesOwn(m.key)
	}
	return !e.lastOwn
}

// publish accepts m: it writes it, holds it for the next connection, or
// spools it, depending on the state. It waits while MAX_IN_FLIGHT messages
// are unresolved or the broker blocks the connection, until ctx ends.
func (e *engine) publish(ctx context.Context, m *outMsg) error {
	e.mu.Lock()
	st := e.state
	e.mu.Unlock()
	switch st {
	case stateNew:
		return errorOf(e.who, ErrNotStarted)
	case stateStopping, stateStopped:
		return errorOf(e.who, ErrStopped)
	}
	e.inject(ctx, m)
	e.pubMu.Lock()
	for {
		// e.sess changes only under e.pubMu, which is held: the tag of the
		// next publish on it can be read before taking e.mu.
		var tag uint64
		if sess := e.sess; sess != nil {
			tag = sess.ch.GetNextPublishSeqNo()
		}
		e.mu.Lock()
		st, blocked, changed, sess := e.state, e.blocked, e.changed, e.sess
		full := e.inflight >= e.window || e.overBytes(m)
		switch {
		case st == stateStopped || (st == stateStopping && m.replay != nil):
			e.mu.Unlock()
			e.pubMu.Unlock()
			if m.replay != nil || e.sp == nil {
				return errorOf(e.who, ErrStopped)
			}
			// Taken while Stop ran: keep it in the spool.
			e.accept(m)
			e.spoolOne(m, errorOf(e.who, ErrStopped))
			return nil
		case st == stateSpooling:
			e.mu.Unlock()
			e.pubMu.Unlock()
			e.accept(m)
			e.spoolOne(m, nil)
			return nil
		case st == stateDown && e.draining:
			// The Manager is stopping and no connection is up: spool
			// rather than wait for one (see stopSoon).
			e.spoolWhileDownLocked(m)
			return nil
		case full:
			// Wait for confirms (or the spool) to make room.
		case st == stateDown || sess == nil || e.probing:
			// While probing, the messages in flight when the broker
			// refused one go one at a time, and new ones wait after them.
			e.held = append(e.held, m)
			e.addInflight(m)
			e.counted(m)
			e.mu.Unlock()
			e.pubMu.Unlock()
			e.accept(m)
			return nil
		case !blocked:
			e.addInflight(m)
			e.counted(m)
			e.outstanding[tag] = m
			e.mu.Unlock()
			err := e.send(ctx, sess, tag, m)
			e.pubMu.Unlock()
			if err != nil {
				// ctx ended before the broker took m: not accepted.
				e.mu.Lock()
				e.inflightLen -= int64(len(m.body))
				e.doneInflight(1)
				e.mu.Unlock()
				return err
			}
			e.accept(m)
			return nil
		}
		// Full or blocked: wait for a change without holding the locks.
		e.mu.Unlock()
		e.pubMu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
		e.pubMu.Lock()
	}
}

// accept counts m as taken in (messages read back from the spool were
// counted when first accepted).
func (e *engine) accept(m *outMsg) {
	if m.replay == nil {
		e.st.accepted.Add(1)
	}
}

// addInflight counts m as unresolved. e.mu is held.
func (e *engine) addInflight(m *outMsg) {
	if e.inflight == 0 {
		e.idle = make(chan struct{})
	}
	e.inflight++
	e.inflightLen += int64(len(m.body))
}

// overBytes reports whether m must wait for MAX_IN_FLIGHT_BYTES: its body
// does not fit beside the bodies in flight. A message alone always goes, so
// that a body larger than the bound is published too. When it reports true
// the next resolved message wakes the publishes waiting. e.mu is held.
func (e *engine) overBytes(m *outMsg) bool {
	if e.windowBytes <= 0 || e.inflight == 0 || e.inflightLen+int64(len(m.body)) <= e.windowBytes {
		return false
	}
	e.byteWait = true
	return true
}

// counted tells the Manager's lane that m, which it handed over, is now
// counted in flight here. e.mu is held.
func (e *engine) counted(m *outMsg) {
	if e.laneBusy != nil && m.replay == nil {
		e.laneBusy.Store(false)
	}
	if m.replay != nil && !m.spoolRead {
		// Read back from a replay file: from now on it counts in flight,
		// not among the file's lines Pending counts (see readSpooled).
		m.spoolRead = true
		e.readSpooledLocked(m.replay.path)
	}
}

// doneInflight counts n messages resolved; the caller has taken their
// bodies off inflightLen, unless it resolved them all. e.mu is held.
func (e *engine) doneInflight(n int) {
	wasFull := e.inflight >= e.window
	e.inflight -= n
	if e.inflight == 0 {
		e.inflightLen = 0
		close(e.idle)
	}
	if (wasFull && e.inflight < e.window) || e.byteWait {
		e.byteWait = false
		e.signal() // room for a waiting publish
	}
}

func (e *engine) confirm(c amqp.Confirmation) { e.confirmAll([]amqp.Confirmation{c}) }

// confirmAll settles a batch of confirms under one lock.
func (e *engine) confirmAll(cs []amqp.Confirmation) {
	msgs := e.settled[:0]
	e.mu.Lock()
	for _, c := range cs {
		if m, ok := e.outstanding[c.DeliveryTag]; ok {
			delete(e.outstanding, c.DeliveryTag)
			e.inflightLen -= int64(len(m.body))
			msgs = append(msgs, settled{m, c.Ack})
		}
	}
	e.mu.Unlock()
	// Settled (counted, spooled when nacked) before they leave the in-flight
	// count: Flush and Stop, woken when it reaches 0, then see them in Stats.
	for _, s := range msgs {
		e.settle(s.m, s.ack)
	}
	if len(msgs) > 0 {
		e.mu.Lock()
		e.doneInflight(len(msgs))
		e.mu.Unlock()
	}
	clear(msgs)
	e.settled = msgs
}

type settled struct {
	m   *outMsg
	ack bool
}

// settle finishes one confirmed (ack) or refused message.
func (e *engine) settle(m *outMsg, ack bool) {
	e.observeSettle(m, ack)
	if ack {
		if m.replay != nil {
			e.st.replayed.Add(1)
			m.replay.resolve()
		} else {
			e.st.confirmed.Add(1)
			e.freeLane(m)
		}
		if m.done != nil {
			m.done <- nil
		}
		return
	}
	e.st.nacked.Add(1)
	e.log.Warn("omqs: broker nacked a message", "publisher", e.name, "key", m.key, "id", m.id)
	e.spoolOne(m, ErrNacked)
	e.maybeReplay(e.interval)
}

func (e *engine) returned(r amqp.Return) {
	e.st.returned.Add(1)
	ret := Returned{
		Exchange: r.Exchange, Key: r.RoutingKey, MessageID: r.MessageId,
		Body: r.Body, ReplyCode: int(r.ReplyCode), ReplyText: r.ReplyText, ReceivedAt: time.Now(),
	}
	e.log.Warn("omqs: message returned as unroutable", "publisher", e.name,
		"exchange", r.Exchange, "key", r.RoutingKey, "id", r.MessageId, "reply", r.ReplyText)
	if f := e.onReturn; f != nil {
		if !e.rep.call(func() { f(ret) }) {
			e.log.Warn("omqs: return handler queue full; return not passed on", "id", r.MessageId)
		}
	}
}

// release tells m's waiter the result (m no longer counts in flight).
func (e *engine) release(m *outMsg, result error) {
	if m.replay != nil {
		m.replay.resolve()
	} else {
		e.freeLane(m)
	}
	if m.done != nil {
		m.done <- result
	}
}

// freeLane gives the bytes of m, a message a Manager's lane handed over, back
// to the lane's budget (BUFFER_BYTES) once m is resolved.
func (e *engine) freeLane(m *outMsg) {
	if e.laneFree != nil {
		e.laneFree(len(m.body))
	}
	if m.jseq != 0 && e.laneDone != nil {
		e.laneDone(m.jseq)
	}
}
