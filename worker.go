package omqs

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

// MsgWorker takes the messages of one of the Manager's two lanes (logs or
// events) and delivers them. The Manager calls the hooks from one goroutine
// per lane, in order: WorkerWillRun once from Start, MsgDidReceive for each
// message, and WorkerWillStop exactly once from Stop (or from Start when
// starting failed), even after errors.
//
// Replace a built-in worker with WithLogWorker or WithEventWorker.
type MsgWorker interface {
	// WorkerWillRun prepares the worker (connects, declares). An error makes
	// Manager.Start fail. ctx is Start's context.
	WorkerWillRun(ctx context.Context) error
	// MsgDidReceive delivers one message. A non-nil error makes the Manager
	// write the message to the lane's spool file and report the error. ctx is
	// cancelled when Stop's context ends; the worker should then return
	// promptly.
	MsgDidReceive(ctx context.Context, msg Message) error
	// WorkerWillStop finishes what the worker holds and releases it. ctx is
	// Stop's context.
	WorkerWillStop(ctx context.Context) error
}

// laneWorker is implemented by the built-in workers: they keep their own
// delivery counters and spool what they cannot deliver themselves.
type laneWorker interface {
	laneStats() LaneStats
	pendingMsgs() int
	// abort stops writing at once when Stop's context ended (see
	// engine.abort); WorkerWillStop then spools what is not confirmed.
	abort()
	// stopSoon tells the worker that Stop began and is handing it the rest
	// of the lane: with no connection up, it spools at once (see
	// engine.stopSoon).
	stopSoon()
}

// LogMsgWorker is the built-in worker of the log lane: it publishes each
// message to the topic exchange "omqs.exchange.log" ([LogWorker] section),
// keyed by level, on one channel in confirm mode, in the order sent. Like
// the event worker it does not wait for each confirm: up to MAX_IN_FLIGHT
// messages await theirs, and after a reconnect they are republished in the
// same order. (The original published logs through a SyncPublisher, one
// confirmed message at a time, at a tenth of the event path's rate.)
// What it cannot deliver goes to FOLDER/backup.log and is replayed later.
//
// The Manager builds one unless WithLogWorker names another worker. To
// change what the built-in worker does while keeping how it delivers
// (confirms, republishing, the spool, the Manager's Stats and Pending),
// embed a *LogMsgWorker (from NewLogMsgWorker) in your own type, override
// the hooks you need, call the embedded ones from them, and pass your type
// to WithLogWorker: NewManager configures the embedded worker from the
// Manager's settings, as it does its own (see the EventMsgWorker example).
// An override of WorkerWillRun or WorkerWillStop must call the embedded
// one. A message your MsgDidReceive does not pass on counts as accepted only.
//
// A LogMsgWorker serves one Manager. Until NewManager has taken it, its
// methods return an error wrapping ErrNotStarted. The zero value is the same
// as NewLogMsgWorker's.
type LogMsgWorker struct {
	builtinWorker
}

// EventMsgWorker is the built-in worker of the event lane: it publishes each
// message through an AsyncPublisher (pipelined, mandatory) to the topic
// exchange "omqs.exchange.event", with the durable queue "omqs.queue.event"
// bound to "omqs.key.event" ([EventWorker] section). What it cannot deliver
// goes to FOLDER/backup.evt and is replayed later.
//
// A custom event worker can wrap one, as LogMsgWorker explains: embed a
// *EventMsgWorker (from NewEventMsgWorker) and pass your type to
// WithEventWorker. Until NewManager has taken it, its methods return an
// error wrapping ErrNotStarted. The zero value is the same as
// NewEventMsgWorker's.
type EventMsgWorker struct {
	builtinWorker
}

// NewLogMsgWorker returns a log worker for a Manager to configure: pass it,
// or a type that embeds it, to NewManager with WithLogWorker.
func NewLogMsgWorker() *LogMsgWorker { return &LogMsgWorker{} }

// NewEventMsgWorker returns an event worker for a Manager to configure: pass
// it, or a type that embeds it, to NewManager with WithEventWorker.
func NewEventMsgWorker() *EventMsgWorker { return &EventMsgWorker{} }

// builtinWorker is what the built-in workers share: a publishing engine and
// the hooks that start and stop it. e is nil until a Manager binds the
// worker.
type builtinWorker struct {
	bound      atomic.Bool
	e          *engine
	background bool
}

// builtinBinder is implemented by *LogMsgWorker and *EventMsgWorker, and so
// by every type that embeds one: NewManager configures the built-in worker
// it finds in the worker of each lane.
type builtinBinder interface {
	bindLane(lane int, s *settings, name string, d builtinDeps) error
}

// bindLane makes w the Manager's log worker.
func (w *LogMsgWorker) bindLane(lane int, s *settings, name string, d builtinDeps) error {
	if lane != logLane {
		return errors.New("a LogMsgWorker publishes logs; it cannot be the event worker")
	}
	return w.bind("LogMsgWorker", s, func() *engine {
		return configuredEngine(s, "LogMsgWorker", name+".log", workerTopology(s.cfg.LogWorker), false, d)
	})
}

// bindLane makes w the Manager's event worker.
func (w *EventMsgWorker) bindLane(lane int, s *settings, name string, d builtinDeps) error {
	if lane != eventLane {
		return errors.New("an EventMsgWorker publishes events; it cannot be the log worker")
	}
	return w.bind("EventMsgWorker", s, func() *engine {
		return configuredEngine(s, "EventMsgWorker", name+".event", workerTopology(s.cfg.EventWorker), s.mandatory == nil || *s.mandatory, d)
	})
}

func (w *builtinWorker) bind(kind string, s *settings, newEngine func() *engine) error {
	if !w.bound.CompareAndSwap(false, true) {
		return fmt.Errorf("this %s already serves another Manager", kind)
	}
	w.e, w.background = newEngine(), s.background
	return nil
}

// unbound is the error of a built-in worker no Manager has taken.
func (w *builtinWorker) unbound() error {
	return fmt.Errorf("%w: built-in worker: not part of a Manager (pass it to NewManager with WithLogWorker or WithEventWorker)", ErrNotStarted)
}

// WorkerWillRun connects and declares the worker's exchange (and queue and
// binding, when it has them).
func (w *builtinWorker) WorkerWillRun(ctx context.Context) error {
	if w.e == nil {
		return w.unbound()
	}
	return w.e.start(ctx, w.background)
}

// WorkerWillStop waits for every confirm and closes the publisher.
func (w *builtinWorker) WorkerWillStop(ctx context.Context) error {
	if w.e == nil {
		return w.unbound()
	}
	return w.e.stop(ctx)
}

func (w *builtinWorker) laneStats() LaneStats {
	if w.e == nil {
		return LaneStats{}
	}
	return w.e.st.snapshot()
}

func (w *builtinWorker) pendingMsgs() int {
	if w.e == nil {
		return 0
	}
	return w.e.pending()
}

func (w *builtinWorker) abort() {
	if w.e != nil {
		w.e.abort()
	}
}

func (w *builtinWorker) stopSoon() {
	if w.e != nil {
		w.e.stopSoon()
	}
}

// sharesBody reports whether w is a built-in worker itself, which only
// reads a message's body, so that the Manager can hand it the buffered
// string's bytes without a copy. A type that embeds one may change the body:
// it gets a copy.
func sharesBody(w MsgWorker) bool {
	switch w.(type) {
	case *LogMsgWorker, *EventMsgWorker:
		return true
	}
	return false
}

// builtinDeps are what the Manager shares with its built-in workers.
type builtinDeps struct {
	endpoints []transport.Endpoint
	rep       *reporter
	spool     *spool.Spool
	// busy is the lane's flag for a message inside MsgDidReceive; the
	// engine clears it when it starts counting the message as its own, so
	// that Pending counts the message once.
	busy *atomic.Bool
	// free gives a message's bytes back to the lane's budget once the
	// engine has resolved it (confirmed, spooled or dropped).
	free func(n int)
	// obs observes the lane (nil: no WithObserver).
	obs ComponentObserver
}

// MsgDidReceive hands msg to the log lane's publisher; it blocks only while
// MAX_IN_FLIGHT messages await confirms or the broker blocks the connection.
func (w *LogMsgWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	return w.publish(ctx, msg)
}

// MsgDidReceive hands msg to the AsyncPublisher; it blocks only while
// MAX_IN_FLIGHT messages await confirms or the broker blocks the connection.
func (w *EventMsgWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	return w.publish(ctx, msg)
}

// publish hands msg to the worker's publisher, which confirms it, spools it
// or reports it (the outcome is in its counters). It returns an error only
// when the publisher did not take msg; the Manager then spools it.
func (w *builtinWorker) publish(ctx context.Context, msg Message) error {
	if w.e == nil {
		return w.unbound()
	}
	m, err := w.e.fromMessage(msg, true)
	if err != nil {
		return err
	}
	return w.e.publish(ctx, m)
}

// messageTime converts a Send* timestamp.
func messageTime(ns int64) time.Time { return time.Unix(0, ns) }
