package omqs

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"github.com/omqs-go/omqs/internal/spool"
)

// replayBatch tracks the messages of one spool file being replayed; the file
// is removed once every message in it is resolved.
type replayBatch struct {
	path      string
	remaining atomic.Int64 // unresolved messages, plus one while the file is read
	failed    atomic.Bool  // a message was neither delivered nor spooled: keep the file
	done      func()       // called once every message is resolved
}

func (b *replayBatch) resolve() {
	if b.remaining.Add(-1) != 0 {
		return
	}
	if !b.failed.Load() {
		os.Remove(b.path)
	}
	b.done()
}

// takeAllLocked removes every unresolved message, oldest first, and counts
// them resolved. e.mu is held.
func (e *engine) takeAllLocked() []*outMsg {
	msgs := e.unresolvedLocked()
	if len(msgs) > 0 {
		e.doneInflight(len(msgs))
	}
	return msgs
}

// unresolvedLocked removes the outstanding and held messages, oldest first;
// they still count in flight. e.mu is held.
func (e *engine) unresolvedLocked() []*outMsg {
	tags := make([]uint64, 0, len(e.outstanding))
	for t := range e.outstanding {
		tags = append(tags, t)
	}
	slices.Sort(tags)
	msgs := make([]*outMsg, 0, len(tags)+len(e.held))
	for _, t := range tags {
		msgs = append(msgs, e.outstanding[t])
	}
	msgs = append(msgs, e.held...)
	clear(e.outstanding)
	e.held = nil
	return msgs
}

// spoolOne writes one message that cannot be delivered now to the spool.
func (e *engine) spoolOne(m *outMsg, why error) { e.spoolMany([]*outMsg{m}, why) }

// spoolMany writes msgs to the spool, or fails them when there is none. Each
// message's slot is released.
func (e *engine) spoolMany(msgs []*outMsg, why error) {
	if len(msgs) == 0 {
		return
	}
	if e.sp == nil {
		for _, m := range msgs {
			e.resolveFailed(m, why)
		}
		return
	}
	recs := make([]spool.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = spool.NewRecord(m.exchange, m.key, m.id, m.ts, m.body, m.headers)
	}
	if err := e.sp.Append(recs...); err != nil {
		e.rep.report(fmt.Errorf("%s %s: %w", e.kind, e.name, err))
		for _, m := range msgs {
			e.resolveFailed(m, err)
		}
		return
	}
	e.st.spooled.Add(uint64(len(msgs)))
	result := ErrSpooled
	if why != nil {
		result = fmt.Errorf("%w: %w", ErrSpooled, why)
	}
	for _, m := range msgs {
		e.release(m, result)
	}
}

// resolveFailed reports a message that is neither delivered nor spooled.
func (e *engine) resolveFailed(m *outMsg, why error) {
	if why == nil {
		why = ErrConnection
	}
	e.st.dropped.Add(1)
	e.rep.report(fmt.Errorf("%s %s: message %s (key %q) not delivered: %w", e.kind, e.name, m.id, m.key, why))
	if m.replay != nil {
		m.replay.failed.Store(true) // keep its spool file
	}
	e.release(m, why)
}

// maybeReplay starts replaying the spool (after delay) if it holds anything
// and no replay runs.
func (e *engine) maybeReplay(delay time.Duration) {
	if e.sp == nil {
		return
	}
	e.mu.Lock()
	if e.state >= stateStopping {
		e.mu.Unlock()
		return
	}
	if e.replaying {
		e.replayAgain = true // the running replay looks again when it ends
		e.mu.Unlock()
		return
	}
	e.replaying = true
	e.wg.Add(1)
	e.mu.Unlock()
	go e.replay(delay)
}

func (e *engine) replay(delay time.Duration) {
	defer e.wg.Done()
	for {
		e.replayOnce(delay)
		e.mu.Lock()
		again := e.replayAgain && e.state < stateStopping && e.runCtx.Err() == nil
		e.replayAgain = false
		if !again {
			e.replaying = false
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		delay = e.interval
	}
}

// replayOnce takes the spool files and publishes what they hold.
func (e *engine) replayOnce(delay time.Duration) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-e.runCtx.Done():
			t.Stop()
			return
		}
	}
	files, err := e.sp.Take()
	if err != nil {
		e.rep.report(fmt.Errorf("%s %s: replay: %w", e.kind, e.name, err))
		return
	}
	for _, path := range files {
		e.mu.Lock()
		busy := e.replayFiles[path]
		e.replayFiles[path] = true
		e.mu.Unlock()
		if busy {
			// Replayed before and not all resolved (a reconnect resends
			// them): the file goes once they are.
			continue
		}
		b := &replayBatch{path: path, done: func() {
			e.mu.Lock()
			delete(e.replayFiles, path)
			e.mu.Unlock()
		}}
		b.remaining.Add(1) // held until the file is read
		n := 0
		bad, err := spool.Read(path, func(r spool.Record) error {
			body, err := r.Bytes()
			if err != nil {
				return err
			}
			m := &outMsg{exchange: r.Exchange, key: r.Key, body: body, id: r.MessageID, ts: r.Timestamp, replay: b}
			if len(r.Headers) > 0 {
				m.headers = toTable(r.Headers)
			}
			b.remaining.Add(1)
			if err := e.publish(e.runCtx, m); err != nil {
				b.remaining.Add(-1)
				return err
			}
			n++
			return nil
		})
		if err != nil {
			// The file stays for a later replay.
			b.failed.Store(true)
			b.resolve()
			if !errors.Is(err, ErrStopped) && e.runCtx.Err() == nil {
				e.rep.report(fmt.Errorf("%s %s: replay %s: %w", e.kind, e.name, path, err))
			}
			return
		}
		if bad > 0 {
			e.st.dropped.Add(uint64(bad))
			e.rep.report(fmt.Errorf("%s %s: replay %s: %d line(s) could not be read; their messages are lost", e.kind, e.name, path, bad))
		}
		b.resolve()
		if n > 0 {
			e.log.Info("omqs: replayed spooled messages", "publisher", e.name, "file", path, "messages", n)
		}
	}
}
