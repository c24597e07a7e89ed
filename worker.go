package omqs

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/omqs-go/omqs/internal/dispatch"
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
}

// LogMsgWorker is the built-in worker of the log lane: it publishes each
// message through a SyncPublisher (one confirmed publish at a time) to the
// topic exchange "omqs.exchange.log" ([LogWorker] section), keyed by level.
// What it cannot deliver goes to FOLDER/backup.log and is replayed later.
type LogMsgWorker struct {
	builtinWorker
}

// EventMsgWorker is the built-in worker of the event lane: it publishes each
// message through an AsyncPublisher (pipelined, mandatory) to the topic
// exchange "omqs.exchange.event", with the durable queue "omqs.queue.event"
// bound to "omqs.key.event" ([EventWorker] section). What it cannot deliver
// goes to FOLDER/backup.evt and is replayed later.
type EventMsgWorker struct {
	builtinWorker
}

// builtinWorker is what the built-in workers share: a publishing engine and
// the hooks that start and stop it.
type builtinWorker struct {
	e          *engine
	background bool
}

// WorkerWillRun connects and declares the worker's exchange (and queue and
// binding, when it has them).
func (w *builtinWorker) WorkerWillRun(ctx context.Context) error {
	return w.e.start(ctx, w.background)
}

// WorkerWillStop waits for every confirm and closes the publisher.
func (w *builtinWorker) WorkerWillStop(ctx context.Context) error { return w.e.stop(ctx) }

func (w *builtinWorker) laneStats() LaneStats { return w.e.st.snapshot() }
func (w *builtinWorker) pendingMsgs() int     { return w.e.pending() }
func (w *builtinWorker) abort()               { w.e.abort() }

// builtinDeps are what the Manager shares with its built-in workers.
type builtinDeps struct {
	endpoints []transport.Endpoint
	disp      *dispatch.Dispatcher
	spool     *spool.Spool
	// busy is the lane's flag for a message inside MsgDidReceive; the
	// engine clears it when it starts counting the message as its own, so
	// that Pending counts the message once.
	busy *atomic.Bool
	// free gives a message's bytes back to the lane's budget once the
	// engine has resolved it (confirmed, spooled or dropped).
	free func(n int)
}

func newLogMsgWorker(s *settings, name string, d builtinDeps) *LogMsgWorker {
	e := configuredEngine(s, "LogMsgWorker", name+".log", workerTopology(s.cfg.LogWorker), false, d)
	return &LogMsgWorker{builtinWorker{e: e, background: s.background}}
}

func newEventMsgWorker(s *settings, name string, d builtinDeps) *EventMsgWorker {
	e := configuredEngine(s, "EventMsgWorker", name+".event", workerTopology(s.cfg.EventWorker), true, d)
	return &EventMsgWorker{builtinWorker{e: e, background: s.background}}
}

// MsgDidReceive publishes msg and waits for the broker's confirm. A message
// the broker cannot take now is spooled by the publisher, which is not an error.
func (w *LogMsgWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	m, err := w.e.fromMessage(msg, true)
	if err != nil {
		return err
	}
	m.done = make(chan error, 1)
	if err := w.e.publish(ctx, m); err != nil {
		return err // not taken: the Manager spools it
	}
	// Taken: the publisher confirms it, spools it or reports it; the
	// outcome is in its counters.
	select {
	case <-m.done:
	case <-ctx.Done():
	}
	return nil
}

// MsgDidReceive hands msg to the AsyncPublisher; it blocks only while
// MAX_IN_FLIGHT messages await confirms or the broker blocks the connection.
func (w *EventMsgWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	m, err := w.e.fromMessage(msg, true)
	if err != nil {
		return err
	}
	return w.e.publish(ctx, m)
}

// messageTime converts a Send* timestamp.
func messageTime(ns int64) time.Time { return time.Unix(0, ns) }
