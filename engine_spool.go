package omqs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

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
	e.probe = 0 // none left to probe
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
func (e *engine) spoolOne(m *outMsg, why error) { _ = e.spoolMany([]*outMsg{m}, why) }

// spoolMany writes msgs to the spool, or fails them when there is none or
// the write fails (they are then dropped and reported). Each message's slot
// is released. It returns the error of a failed write.
func (e *engine) spoolMany(msgs []*outMsg, why error) error {
	if len(msgs) == 0 {
		return nil
	}
	if e.sp == nil {
		for _, m := range msgs {
			e.resolveFailed(m, why)
		}
		return nil
	}
	recs := make([]spool.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = spool.NewRecord(m.exchange, m.key, m.id, m.ts, m.body, m.headers)
	}
	if err := e.sp.Append(recs...); err != nil {
		e.rep.report(errorOf(e.who, err))
		for _, m := range msgs {
			e.resolveFailed(m, err)
		}
		return err
	}
	e.st.spooled.Add(uint64(len(msgs)))
	result := ErrSpooled
	if why != nil {
		result = fmt.Errorf("%w: %w", ErrSpooled, why)
	}
	for _, m := range msgs {
		e.release(m, result)
	}
	return nil
}

// quarantine sets aside m, whose publish the broker refused with cause
// (closing the channel): publishing it again would only be refused again.
// It goes to the spool's FILE.quarantine, which is never replayed, or is
// dropped when there is no spool; either way it is counted as Quarantined
// and reported once, and its waiter gets an error wrapping
// ErrInvalidMessage and cause.
func (e *engine) quarantine(m *outMsg, cause *amqp.Error) {
	e.st.quarantined.Add(1)
	why := fmt.Errorf("%w: the broker refused it and closed the channel: %w", ErrInvalidMessage, cause)
	where := "dropped (no spool)"
	if e.quar != nil {
		rec := spool.NewRecord(m.exchange, m.key, m.id, m.ts, m.body, m.headers)
		if err := e.quar.Append(rec); err != nil {
			where = fmt.Sprintf("dropped: %v", err)
		} else {
			where = "set aside in " + e.quar.Path()
		}
	}
	e.rep.report(errorOf(e.who, fmt.Errorf("message %s (key %q, %d bytes) %s; it is not published again: %w",
		m.id, m.key, len(m.body), where, why)))
	e.release(m, why)
	e.mu.Lock()
	e.doneInflight(1)
	e.mu.Unlock()
}

// resolveFailed reports a message that is neither delivered nor spooled.
func (e *engine) resolveFailed(m *outMsg, why error) {
	if why == nil {
		why = ErrConnection
	}
	e.st.dropped.Add(1)
	e.rep.report(errorOf(e.who, fmt.Errorf("message %s (key %q) not delivered: %w", m.id, m.key, why)))
	if m.replay != nil {
		m.replay.failed.Store(true) // keep its spool file
	}
	e.release(m, why)
}

// replayOptions says which spooled records this engine replays: only those
// for its own exchange, with bodies up to MaxBodySize. Lines of the original
// library (key:body) go to its exchange, an empty key meaning its default.
func (e *engine) replayOptions() spool.ReplayOptions {
	key := e.defaultKey
	if key == "" {
		switch e.kind {
		case "LogMsgWorker":
			key = KeyInfo
		case "EventMsgWorker":
			key = DefaultEventKey
		}
	}
	return spool.ReplayOptions{Exchange: e.topo.exchange, DefaultKey: key, MaxBody: MaxBodySize, Aside: e.sp.AsidePath()}
}

// spoolFileName returns the name of a publisher's spool file for exchange:
// the name with every byte other than a letter, a digit, '.', '-' or '_'
// percent-escaped (so that it stays a name inside the folder), shortened
// with a hash when long, and ".spool".
func spoolFileName(exchange string) string {
	const maxLen = 160 // leaves room for ".spool.replay.<n>.refused" within 255
	var b strings.Builder
	for i := 0; i < len(exchange); i++ {
		c := exchange[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	name := b.String()
	if len(name) > maxLen {
		sum := sha256.Sum256([]byte(exchange))
		name = name[:maxLen-13] + "-" + hex.EncodeToString(sum[:6])
	}
	return name + ".spool"
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
		e.rep.report(errorOf(e.who, fmt.Errorf("replay: %w", err)))
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
		res, err := spool.Replay(path, e.replayOptions(), func(r spool.Record) error {
			body, err := r.Bytes()
			if err != nil {
				return err
			}
			m := &outMsg{exchange: r.Exchange, key: r.Key, body: body, id: r.MessageID, ts: r.Timestamp, replay: b}
			if m.id == "" {
				m.id = newMessageID() // a line of the original library
			}
			if m.ts.IsZero() {
				m.ts = time.Now()
			}
			if len(r.Headers) > 0 {
				m.headers = toTable(r.Headers)
			}
			b.remaining.Add(1)
			if err := e.publish(e.runCtx, m); err != nil {
				b.remaining.Add(-1)
				return err
			}
			return nil
		})
		if errors.Is(err, spool.ErrRefused) {
			b.failed.Store(true)
			b.resolve()
			e.rep.report(errorOf(e.who, fmt.Errorf("replay: %w", err)))
			continue
		}
		if err != nil {
			// The file stays for a later replay.
			b.failed.Store(true)
			b.resolve()
			if !errors.Is(err, ErrStopped) && e.runCtx.Err() == nil {
				e.rep.report(errorOf(e.who, fmt.Errorf("replay %s: %w", path, err)))
			}
			return
		}
		if n := res.SetAside(); n > 0 {
			// Counted once the whole file is read: a file read again
			// later sets its lines aside again.
			e.st.setAside.Add(uint64(n))
			e.rep.report(errorOf(e.who, fmt.Errorf("replay %s: %d line(s) could not be replayed (%s); they were moved to %s",
				path, n, res, e.sp.AsidePath())))
		}
		b.resolve()
		if res.Records > 0 {
			e.log.Info("omqs: replayed spooled messages", "publisher", e.name, "file", path, "messages", res.Records,
				"original_format", res.Legacy)
		}
	}
}
