package omqs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/spool"
)

// How often a replay records its progress beside the file it reads
// (spool.SaveMark): when this many more records were resolved since the
// last mark, or this long after it. Each mark is one small synced write.
const (
	markEvery    = 1024
	markInterval = 250 * time.Millisecond
)

// replayBatch tracks the messages of one spool file being replayed; the file
// is removed once every message in it is resolved.
//
// Records resolve (confirmed, spooled again) mostly in the order they were
// read: confirms come in order on a channel, a nack spools its message at
// once, and after a reconnect the unconfirmed ones are published again in
// order. The batch follows the end of the longest prefix of the file whose
// records are all resolved and records it beside the file from time to
// time, and once more when the file's replay ends unfinished, so that the
// next replay starts there. A record that is neither delivered nor spooled
// (or that Stop kept from being published) stops the prefix for good.
type replayBatch struct {
	path      string
	remaining atomic.Int64 // unresolved messages, plus one while the file is read
	failed    atomic.Bool  // the file stays: not read to its end, or a message neither delivered nor spooled
	done      func(kept bool)
	report    func(error) // a mark that could not be saved

	mu      sync.Mutex
	next    int64        // the sequence number of the next record read
	base    int64        // the sequence number of queue[0]
	queue   []replayLine // the records from base on, until stuck
	stuck   int64        // the first record that never resolves, or -1
	handled int64        // the end of the resolved prefix
	saved   int64        // the mark on disk (0: none written by this batch)
	savedAt time.Time
	savedN  int64 // base when the mark was saved
	warned  bool  // a failed mark was reported
}

type replayLine struct {
	end      int64 // the offset just after the record's line
	resolved bool
}

// replayRec is one record of a replayBatch: an outMsg's replay field.
type replayRec struct {
	*replayBatch
	seq int64
}

func newReplayBatch(path string, done func(kept bool), report func(error)) *replayBatch {
	return &replayBatch{path: path, done: done, report: report, stuck: -1, savedAt: time.Now()}
}

// add counts the record whose line ends at end as read.
func (b *replayBatch) add(end int64) *replayRec {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := &replayRec{replayBatch: b, seq: b.next}
	b.next++
	if b.stuck < 0 {
		b.queue = append(b.queue, replayLine{end: end})
	}
	return r
}

// resolve counts the record resolved: delivered, or written elsewhere.
func (r *replayRec) resolve() {
	b := r.replayBatch
	b.mu.Lock()
	if i := r.seq - b.base; i >= 0 && i < int64(len(b.queue)) {
		b.queue[i].resolved = true
		for len(b.queue) > 0 && b.queue[0].resolved {
			b.handled = b.queue[0].end
			b.queue = b.queue[1:]
			b.base++
		}
	}
	b.mu.Unlock()
	b.resolve()
}

// fail marks the record as one that stays in the file: the file is kept,
// and its mark never goes past the record.
func (r *replayRec) fail() {
	b := r.replayBatch
	b.failed.Store(true)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stuck >= 0 && b.stuck <= r.seq {
		return
	}
	b.stuck = r.seq
	if i := r.seq - b.base; i >= 0 && i < int64(len(b.queue)) {
		b.queue = b.queue[:i]
	}
}

// resolve counts one unresolved message, or the file's reading, done. The
// last one removes the file, or saves its mark when the file stays.
func (b *replayBatch) resolve() {
	if b.remaining.Add(-1) != 0 {
		return
	}
	if b.failed.Load() {
		b.saveMark(true)
		b.done(true)
		return
	}
	if err := spool.Discard(b.path); err != nil {
		b.report(fmt.Errorf("replay: %w", err))
	}
	b.done(false)
}

// saveMark records the resolved prefix beside the file when it grew: now
// (final), or when markEvery records or markInterval passed since the last
// mark. The reader calls it between records and the last resolve at the
// end, never both at once.
func (b *replayBatch) saveMark(final bool) {
	b.mu.Lock()
	h := b.handled
	due := h > b.saved && (final || b.base-b.savedN >= markEvery || time.Since(b.savedAt) >= markInterval)
	n := b.base
	b.mu.Unlock()
	if !due {
		return
	}
	err := spool.SaveMark(b.path, h)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil {
		if !b.warned {
			b.warned = true
			b.report(fmt.Errorf("replay: %w (a later replay of the file sends again what was confirmed since its last mark)", err))
		}
		return
	}
	b.saved, b.savedAt, b.savedN = h, time.Now(), n
}

// countSpooled counts the lines of the replay files (of the spool) it has
// not counted yet: Pending includes them until the replay reads them.
func (e *engine) countSpooled(files []string) {
	for _, p := range files {
		e.mu.Lock()
		_, known := e.spoolLeft[p]
		e.mu.Unlock()
		if known {
			continue
		}
		n, err := spool.Remaining(p)
		if err != nil {
			continue // the replay reports it
		}
		e.mu.Lock()
		if _, known := e.spoolLeft[p]; !known {
			e.spoolLeft[p] = n
			e.spoolLeftN += n
		}
		e.mu.Unlock()
	}
}

// readSpooled counts one line of the replay file at path read: published,
// or set aside.
func (e *engine) readSpooled(path string) {
	e.mu.Lock()
	e.readSpooledLocked(path)
	e.mu.Unlock()
}

// readSpooledLocked is readSpooled with e.mu held.
func (e *engine) readSpooledLocked(path string) {
	if e.spoolLeft[path] > 0 {
		e.spoolLeft[path]--
		e.spoolLeftN--
	}
}

// forgetSpooled stops counting the replay file at path (removed, or refused).
func (e *engine) forgetSpooled(path string) {
	e.mu.Lock()
	e.spoolLeftN -= e.spoolLeft[path]
	delete(e.spoolLeft, path)
	e.mu.Unlock()
}

// spooledLeftError returns, when the replay files still hold messages after
// their marks (a replay that Stop ended, files the broker was not there
// for), an error wrapping ErrSpooled that says how many and where.
func (e *engine) spooledLeftError() error {
	if e.sp == nil {
		return nil
	}
	files, err := e.sp.Pending()
	if err != nil {
		return errorOf(e.who, fmt.Errorf("%w: %w", ErrSpooled, err))
	}
	total := 0
	var where []string
	for _, p := range files {
		n, err := spool.Remaining(p)
		if err != nil {
			return errorOf(e.who, fmt.Errorf("%w: %s: %w", ErrSpooled, p, err))
		}
		if n > 0 {
			total += n
			where = append(where, fmt.Sprintf("%s (%d)", p, n))
		}
	}
	if total == 0 {
		return nil
	}
	return errorOf(e.who, fmt.Errorf("%w: %d message(s) read back from the spool were not sent before Stop; they remain in %s and are sent, after what the broker already confirmed, when a publisher of this spool next starts",
		ErrSpooled, total, strings.Join(where, ", ")))
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
	// Record by record: the spool encodes each when it writes it, in
	// bounded chunks, so that spooling everything held never copies it all
	// at once.
	n, err := e.sp.AppendEach(len(msgs), func(i int) spool.Record {
		m := msgs[i]
		return m.record()
	})
	e.st.spooled.Add(uint64(n))
	result := ErrSpooled
	if why != nil {
		result = fmt.Errorf("%w: %w", ErrSpooled, why)
	}
	for _, m := range msgs[:n] {
		e.release(m, result)
	}
	if err != nil {
		e.rep.report(errorOf(e.who, err))
		for _, m := range msgs[n:] {
			e.resolveFailed(m, err)
		}
		return err
	}
	return nil
}

// record is m as a spool record.
func (m *outMsg) record() spool.Record {
	r := spool.NewRecord(m.exchange, m.key, m.id, m.ts, m.body, m.headers)
	r.ContentType = m.ct
	return r
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
		if err := e.quar.Append(m.record()); err != nil {
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
		m.replay.fail() // keep it in its spool file
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
	e.countSpooled(files)
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
		b := newReplayBatch(path, func(kept bool) {
			if !kept {
				e.forgetSpooled(path)
			}
			e.mu.Lock()
			delete(e.replayFiles, path)
			e.mu.Unlock()
		}, func(err error) { e.rep.report(errorOf(e.who, err)) })
		b.remaining.Add(1) // held until the file is read
		opts := e.replayOptions()
		opts.OnSetAside = func() { e.readSpooled(path) }
		res, err := spool.Replay(path, opts, func(r spool.Record) error {
			body, err := r.Bytes()
			if err != nil {
				return err
			}
			b.saveMark(false)
			rec := b.add(r.End())
			m := &outMsg{exchange: r.Exchange, key: r.Key, body: body, id: r.MessageID, ts: r.Timestamp, replay: rec}
			if m.id == "" {
				m.id = newMessageID() // a line of the original library
			}
			if m.ts.IsZero() {
				m.ts = time.Now()
			}
			if len(r.Headers) > 0 {
				m.headers = toTable(r.Headers)
			}
			m.ct = r.ContentType
			b.remaining.Add(1)
			if err := e.publish(e.runCtx, m); err != nil {
				// Not published (Stop began): it stays in the file, and
				// the file's mark stops before it.
				if m.spoolRead {
					e.mu.Lock()
					e.spoolLeft[path]++
					e.spoolLeftN++
					e.mu.Unlock()
				}
				rec.fail()
				b.remaining.Add(-1)
				return err
			}
			if !m.spoolRead {
				// Taken without being counted in flight (spooled again):
				// it is no longer among the file's lines.
				e.readSpooled(path)
			}
			return nil
		})
		if errors.Is(err, spool.ErrRefused) {
			b.failed.Store(true)
			b.resolve()
			e.forgetSpooled(path)
			e.rep.report(errorOf(e.who, fmt.Errorf("replay: %w", err)))
			continue
		}
		if err != nil {
			// The file stays for a later replay, which starts after the
			// records resolved by then.
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
