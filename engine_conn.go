package omqs

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/reconnect"
	"github.com/omqs-go/omqs/internal/transport"
)

// session is one connection with its channel and notification channels.
type session struct {
	conn      transport.Conn
	ch        transport.Channel
	confirms  chan amqp.Confirmation
	returns   chan amqp.Return
	chClose   chan *amqp.Error
	connClose chan *amqp.Error
	blocked   chan amqp.Blocking
}

// connect dials and prepares a session: topology, confirm mode, the
// notification channels.
func (e *engine) connect(ctx context.Context, failFast bool) (*session, error) {
	var sess *session
	err := connectChannel(ctx, e.dialer, failFast, func(c transport.Conn, ch transport.Channel) error {
		if err := e.topo.declare(ch); err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return fmt.Errorf("%w: confirm mode: %w", ErrInvalidChannel, err)
		}
		n := e.window + 16
		s := &session{
			conn:      c,
			ch:        ch,
			confirms:  ch.NotifyPublish(make(chan amqp.Confirmation, n)),
			returns:   ch.NotifyReturn(make(chan amqp.Return, min(n, 256))),
			chClose:   ch.NotifyClose(make(chan *amqp.Error, 1)),
			connClose: c.NotifyClose(make(chan *amqp.Error, 1)),
			blocked:   c.NotifyBlocked(make(chan amqp.Blocking, 8)),
		}
		sess = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sess, nil
}

// run owns the connection: it reads confirms, returns, blocked notices and
// close notices, and reconnects.
func (e *engine) run(sess *session) {
	defer e.wg.Done()
	for {
		if sess == nil {
			sess = e.reconnectLoop()
			if sess == nil {
				return // stopping
			}
		}
		began := time.Now()
		cause := e.serve(sess)
		setAside := e.refused(cause)
		e.teardown(sess)
		sess = nil
		select {
		case <-e.done:
			return
		default:
		}
		if e.runCtx.Err() != nil {
			return // aborted: Stop spools what is left
		}
		if cause != nil {
			e.log.Warn("omqs: connection lost, reconnecting", "publisher", e.name, "kind", e.kind, "error", cause.Error())
		}
		// A session that died young is followed by a wait, longer after
		// each in a row, unless it ended by finding a message to set
		// aside: that is progress, and the next one waits the interval.
		wait, streak := e.backoff.Ended(time.Since(began), !setAside)
		if streak == reconnect.Streak {
			e.rep.report(errorOf(e.who, fmt.Errorf("%w: the connection closed %d times in a row within %v of opening (last: %v); reconnects now back off up to %v",
				ErrConnection, streak, reconnect.Young, cause, max(reconnect.MaxBackoff, e.interval))))
		}
		if wait > 0 && !e.pauseFor(wait) {
			return
		}
	}
}

// publishRefused reports whether err closed the channel because the broker
// refused a publish on it: 404 (no such exchange), 406 (a body over
// max_message_size, a bad header) or 403 (an internal exchange). After its
// setup a publisher's channel does nothing else that the broker can refuse.
func publishRefused(err error) (*amqp.Error, bool) {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		return nil, false
	}
	switch ae.Code {
	case amqp.NotFound, amqp.PreconditionFailed, amqp.AccessRefused:
		return ae, true
	}
	return nil, false
}

// refused finds the message whose publish made the broker close the
// channel with cause, and sets it aside; it reports whether it did.
//
// The broker handles a channel's publishes in order and closes it at the
// first one it refuses; it ignores those that follow. The refused message is
// never confirmed, so it is among the outstanding ones (a message whose
// Publish failed is held, never outstanding). With one outstanding, that is
// the one. With more, the culprit cannot be told from the messages that the
// broker took but had not confirmed yet, or that came after it: the next
// sessions write them one at a time (probing) until the culprit is alone
// when the channel closes again.
func (e *engine) refused(cause error) bool {
	ae, ok := publishRefused(cause)
	if !ok {
		return false
	}
	// No write is in progress on the dead session while pubMu is held.
	e.pubMu.Lock()
	e.mu.Lock()
	var culprit *outMsg
	switch len(e.outstanding) {
	case 0:
	case 1:
		for tag, m := range e.outstanding {
			culprit = m
			delete(e.outstanding, tag)
		}
	default:
		if !e.probing {
			e.log.Info("omqs: the broker refused one of the messages in flight; resending them one at a time to find it",
				"publisher", e.name, "messages", len(e.outstanding))
		}
		e.probing = true
	}
	e.mu.Unlock()
	e.pubMu.Unlock()
	if culprit == nil {
		return false
	}
	e.quarantine(culprit, ae)
	return true
}

// reconnectLoop connects until it succeeds or the engine stops. After
// RECONNECT_TIMES failures it spools what it holds and keeps trying.
func (e *engine) reconnectLoop() *session {
	for {
		sess, err := e.connect(e.runCtx, false)
		if err == nil {
			e.install(sess)
			return sess
		}
		if e.runCtx.Err() != nil {
			return nil
		}
		// Without failFast, Connect fails only by giving up (after
		// RECONNECT_TIMES attempts, at once when that is 1): spool, and wait
		// an interval before the next round of attempts.
		e.giveUp(err)
		if !e.pause() {
			return nil
		}
	}
}

// pause waits RECONNECT_INTERVAL (at least 10ms, as the Dialer does) and
// reports whether the engine is still running.
func (e *engine) pause() bool {
	if e.dialer.Wait != nil {
		return e.pauseFor(e.interval)
	}
	return e.pauseFor(max(e.interval, 10*time.Millisecond))
}

// pauseFor waits d (through the Dialer's Wait when set) and reports whether
// the engine is still running.
func (e *engine) pauseFor(d time.Duration) bool {
	if w := e.dialer.Wait; w != nil {
		return w(e.runCtx, d) == nil
	}
	return reconnect.Sleep(e.runCtx, d)
}

// install makes sess current and publishes what waited for it.
func (e *engine) install(sess *session) {
	e.pubMu.Lock()
	defer e.pubMu.Unlock()
	e.mu.Lock()
	if e.state == stateStopped || e.runCtx.Err() != nil {
		e.mu.Unlock()
		_ = sess.conn.CloseDeadline(time.Now())
		return
	}
	if e.probing {
		// The unconfirmed messages go first, and are still to probe.
		e.probe += len(e.outstanding)
	}
	resend := e.unresolvedLocked()
	e.sess = sess
	e.blocked = false
	reconnected := e.everUp
	e.everUp = true
	if e.state == stateDown || e.state == stateSpooling {
		e.state = stateUp
	}
	// resending counts what was written to the lost connection, as
	// Stats().Republished will once they are written again; held counts what
	// had not been written.
	resending := 0
	for _, m := range resend {
		if m.wasOut {
			resending++
		}
	}
	held := len(resend) - resending
	if e.probing {
		// advanceProbe writes them.
		e.held = resend
		resend = nil
	}
	e.signal()
	e.mu.Unlock()
	if reconnected {
		e.st.reconnects.Add(1)
		e.log.Info("omqs: connected", "publisher", e.name, "kind", e.kind, "resending", resending, "held", held)
	}
	if e.writeAll(sess, resend) {
		e.advanceProbe(sess)
	}
	e.maybeReplay(0)
}

// writeAll writes msgs on sess in order and reports whether all were
// written. When the engine aborts, what is left is held again, for Stop to
// spool. e.pubMu is held.
func (e *engine) writeAll(sess *session, msgs []*outMsg) bool {
	for i, m := range msgs {
		wasOut := m.wasOut
		if err := e.write(e.runCtx, sess, m); err != nil {
			e.mu.Lock()
			e.held = append(msgs[i:len(msgs):len(msgs)], e.held...)
			e.mu.Unlock()
			return false
		}
		if wasOut {
			e.st.republished.Add(1)
		}
	}
	return true
}

// advanceProbe, while probing, writes the next message to probe once the
// previous one is resolved, and once none is left to probe ends probing and
// writes what was held meanwhile. e.pubMu is held.
func (e *engine) advanceProbe(sess *session) {
	e.mu.Lock()
	if !e.probing || e.sess != sess || len(e.outstanding) > 0 {
		e.mu.Unlock()
		return
	}
	if e.probe > 0 && len(e.held) > 0 {
		m := e.held[0]
		e.held = e.held[1:]
		e.probe--
		e.mu.Unlock()
		e.writeAll(sess, []*outMsg{m})
		e.mu.Lock()
		if n := len(e.held); n > 0 && e.held[n-1] == m {
			// Its Publish failed (the session is going): it stays first
			// to probe on the next one.
			e.held = append([]*outMsg{m}, e.held[:n-1]...)
			e.probe++
		}
		e.mu.Unlock()
		return
	}
	e.probing = false
	e.probe = 0
	rest := e.held
	e.held = nil
	e.signal()
	e.mu.Unlock()
	e.log.Info("omqs: every message in flight when the broker refused one is resolved; publishing as usual", "publisher", e.name)
	e.writeAll(sess, rest)
}

// probeStep calls advanceProbe after confirms, when probing.
func (e *engine) probeStep(sess *session) {
	e.mu.Lock()
	probing := e.probing
	e.mu.Unlock()
	if probing {
		e.pubMu.Lock()
		e.advanceProbe(sess)
		e.pubMu.Unlock()
	}
}

// serve handles one session's notifications until it closes or the engine
// stops. It returns the close cause (nil when stopping).
func (e *engine) serve(s *session) error {
	for {
		select {
		case c, ok := <-s.confirms:
			if !ok {
				return e.closeCause(s)
			}
			// Take what else arrived with it and settle them together.
			batch := append(e.batch[:0], c)
		more:
			for len(batch) < cap(e.batch) {
				select {
				case c, ok := <-s.confirms:
					if !ok {
						break more
					}
					batch = append(batch, c)
				default:
					break more
				}
			}
			e.confirmAll(batch)
			e.batch = batch
			e.probeStep(s)
		case r, ok := <-s.returns:
			if !ok {
				s.returns = nil
				continue
			}
			e.returned(r)
		case b, ok := <-s.blocked:
			if !ok {
				s.blocked = nil
				continue
			}
			e.setBlocked(b)
		case err := <-s.chClose:
			e.drain(s)
			if err == nil {
				return errors.New("channel closed")
			}
			return err
		case err := <-s.connClose:
			e.drain(s)
			if err == nil {
				return errors.New("connection closed")
			}
			return err
		case <-e.done:
			e.drain(s)
			return nil
		}
	}
}

// closeCause returns why s closed once its confirms channel has closed: the
// error that closed the channel or the connection, which the transport
// sends before it closes the confirms channel (refused needs its code), or a
// plain error if none comes within a second.
func (e *engine) closeCause(s *session) error {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	var err *amqp.Error
	select {
	case err = <-s.chClose:
	case err = <-s.connClose:
	case <-e.done:
	case <-t.C:
	}
	e.drain(s)
	if err == nil {
		return errors.New("channel closed")
	}
	return err
}

// drain handles confirms and returns already received on a closing session.
func (e *engine) drain(s *session) {
	for {
		select {
		case c, ok := <-s.confirms:
			if !ok {
				s.confirms = nil
				continue
			}
			e.confirm(c)
		case r, ok := <-s.returns:
			if !ok {
				s.returns = nil
				continue
			}
			e.returned(r)
		default:
			return
		}
	}
}

func (e *engine) setBlocked(b amqp.Blocking) {
	e.mu.Lock()
	changed := e.blocked != b.Active
	e.blocked = b.Active
	if changed {
		e.signal()
	}
	e.mu.Unlock()
	if !changed {
		return
	}
	if b.Active {
		e.st.blockedSince.Store(time.Now().UnixNano())
		e.log.Warn("omqs: broker blocked the connection; publishing paused", "publisher", e.name, "kind", e.kind, "reason", b.Reason)
	} else {
		e.unblockClock()
		e.log.Info("omqs: broker unblocked the connection", "publisher", e.name, "kind", e.kind)
	}
}

func (e *engine) unblockClock() {
	if since := e.st.blockedSince.Swap(0); since != 0 {
		e.st.blockedNanos.Add(int64(time.Since(time.Unix(0, since))))
	}
}

// teardown forgets sess; its outstanding messages wait for the next one.
func (e *engine) teardown(s *session) {
	e.pubMu.Lock()
	e.mu.Lock()
	if e.sess == s {
		e.sess = nil
	}
	if e.state == stateUp {
		e.state = stateDown
	}
	e.blocked = false
	e.signal()
	e.mu.Unlock()
	e.pubMu.Unlock()
	e.unblockClock()
	_ = s.conn.CloseDeadline(time.Now().Add(time.Second))
}
