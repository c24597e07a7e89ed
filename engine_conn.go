package omqs

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

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
			returns:   ch.NotifyReturn(make(chan amqp.Return, n)),
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
		cause := e.serve(sess)
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
			e.log.Warn("omqs: connection lost, reconnecting", "publisher", e.name, "error", cause.Error())
		}
	}
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
	if w := e.dialer.Wait; w != nil {
		return w(e.runCtx, e.interval) == nil
	}
	t := time.NewTimer(max(e.interval, 10*time.Millisecond))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.runCtx.Done():
		return false
	}
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
	resend := e.unresolvedLocked()
	e.sess = sess
	e.blocked = false
	reconnected := e.everUp
	e.everUp = true
	if e.state == stateDown || e.state == stateSpooling {
		e.state = stateUp
	}
	e.signal()
	e.mu.Unlock()
	if reconnected {
		e.st.reconnects.Add(1)
		e.log.Info("omqs: connected", "publisher", e.name, "resending", len(resend))
	}
	for i, m := range resend {
		wasOut := m.wasOut
		if err := e.write(e.runCtx, sess, m); err != nil {
			// Aborted: what is left waits for Stop, which spools it.
			e.mu.Lock()
			e.held = append(e.held, resend[i:]...)
			e.mu.Unlock()
			return
		}
		if wasOut {
			e.st.republished.Add(1)
		}
	}
	e.maybeReplay(0)
}

// serve handles one session's notifications until it closes or the engine
// stops. It returns the close cause (nil when stopping).
func (e *engine) serve(s *session) error {
	for {
		select {
		case c, ok := <-s.confirms:
			if !ok {
				return errors.New("channel closed")
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
		e.log.Warn("omqs: broker blocked the connection; publishing paused", "publisher", e.name, "reason", b.Reason)
	} else {
		e.unblockClock()
		e.log.Info("omqs: broker unblocked the connection", "publisher", e.name)
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
