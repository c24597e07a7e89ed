package omqs

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/omqs-go/omqs/internal/journal"
)

// ErrJournalLocked is wrapped by Manager.Start's error when another process
// (or another Manager in this one) holds the journal folder given with
// WithJournal or JOURNAL. The message names the folder and, when it can,
// the holder's process id.
var ErrJournalLocked = errors.New("omqs: journal folder in use")

// WithJournal makes the Manager write each message Send* accepts to a
// crash-safe journal under dir (dir/log and dir/event, one per lane) before
// Send* returns, instead of only to memory (JOURNAL in [Global]). The
// workers publish from the journal and mark what the broker confirmed (or
// the spool took); when a Manager starts on the same dir, it publishes again
// every message the journal holds that was not confirmed, with its original
// message id. So a crash, kill -9 or panic of the process loses nothing
// Send* accepted; the price is duplicates (at least once) for the messages
// the broker had but whose confirm was not recorded.
//
// A full journal (JOURNAL_MAX_BYTES of unconfirmed messages) makes Send*
// return ErrBufferFull, as a full buffer does; BUFFER_SIZE and BUFFER_BYTES
// do not bound Send* then. JOURNAL_SYNC says what a power loss (not a
// crash of the process) can lose. The journal is opened by Start, which
// fails with an error wrapping ErrJournalLocked when another process holds
// dir. Linux only.
//
// A custom worker that wraps a built-in one must pass on the Message it
// received (its fields may be changed): the journal entry of a message the
// built-in worker did not get from the lane is marked done only when the
// engine resolves that very Message.
func WithJournal(dir string) Option {
	return opt("WithJournal", quoted(dir), func(s *settings) error {
		if dir == "" {
			return errors.New("empty folder")
		}
		s.cfg.Global.Journal = dir
		return nil
	})
}

// parseJournalSync reads JOURNAL_SYNC: "none" (or ""), "every" or
// "interval:<ms>".
func parseJournalSync(v string) (journal.Sync, error) {
	switch s := strings.ToLower(strings.TrimSpace(v)); {
	case s == "" || s == "none":
		return journal.SyncNone, nil
	case s == "every":
		return journal.SyncEvery, nil
	case strings.HasPrefix(s, "interval:"):
		ms, err := strconv.Atoi(strings.TrimPrefix(s, "interval:"))
		if err != nil || ms < 1 {
			return journal.Sync{}, fmt.Errorf("%q: want interval:<milliseconds>, at least 1", cfgClip(v))
		}
		return journal.SyncInterval(time.Duration(ms) * time.Millisecond), nil
	}
	return journal.Sync{}, fmt.Errorf("%q is not none, every or interval:<milliseconds>", cfgClip(v))
}

// cfgJournalSync is the JOURNAL_SYNC key.
func cfgJournalSync(key string, p *string) cfgField {
	fd := cfgText(key, p, nil)
	fd.check = func() error {
		_, err := parseJournalSync(*p)
		return err
	}
	return fd
}

// appendMessageID appends a new message id (as newMessageID makes) to b,
// so that a caller with a stack buffer makes one without allocating.
func appendMessageID(b []byte) []byte {
	b = append(b, idPrefix...)
	return strconv.AppendUint(b, idCounter.Add(1), 10)
}

// journalSegment is the size of a lane journal's segment files for a quota
// of quota bytes: 64 MiB, or less for a small quota, so that a quota holds a
// few segments.
func journalSegment(quota int64) int64 {
	seg := int64(journal.DefaultSegmentSize)
	if quota/4 < seg {
		seg = 64 << 10
		if quota/4 > seg {
			seg = int64(1) << (63 - bits.LeadingZeros64(uint64(quota/4)))
		}
	}
	return seg
}

// journalEntryOverhead is a journal entry's bytes besides its body, at most
// (header, key, id, alignment).
const journalEntryOverhead = 32 + 2*255 + 8

// laneJournal is a lane's journal and what the Manager tracks of it.
type laneJournal struct {
	j     *journal.Journal
	lane  byte
	recTo uint64 // entries before it were recovered by Open

	appended  atomic.Uint64 // Appends that succeeded
	read      atomic.Uint64 // entries the drain took
	recovered atomic.Uint64 // recovered entries the drain took
	resolved  atomic.Uint64 // entries resolved (confirmed, spooled or dropped)
	nrec      uint64        // entries Open recovered

	// track keeps the watermark: entries resolve out of order (a
	// republish after a reconnect, a nack that spools), and the journal's
	// confirmed position moves only over a run of resolved entries.
	mu    sync.Mutex
	slots []journalSlot // from head: the entries read and not yet confirmed, in order
	head  int
	base  uint64 // the sequence number of slots[head]
	seq   uint64 // the last sequence number given out
	freed func() // tells Send* waiting for room that there is some
}

type journalSlot struct {
	next uint64 // the entry's Next position
	done bool
}

// openJournals opens one journal per lane under the folder of JOURNAL, and
// connects the built-in workers' engines to them. Start calls it before the
// workers run; on an error nothing stays open.
func (m *Manager) openJournals() error {
	g := m.s.cfg.Global
	if g.Journal == "" {
		return nil
	}
	policy, err := parseJournalSync(g.JournalSync)
	if err != nil {
		return invalidConfig("Manager.Start", "JOURNAL_SYNC: %v", err)
	}
	maxBytes := int64(g.JournalMaxBytes)
	if maxBytes == 0 {
		maxBytes = journal.DefaultMaxBytes
	}
	seg := journalSegment(maxBytes)
	for i, l := range m.lanes {
		dir := filepath.Join(g.Journal, l.name)
		j, err := journal.Open(dir, journal.Options{SegmentSize: seg, MaxBytes: max(maxBytes, seg), Sync: policy})
		if err != nil {
			m.closeJournals()
			if errors.Is(err, journal.ErrLocked) {
				return errorOf("Manager", fmt.Errorf("%w: Start: %w", ErrJournalLocked, err))
			}
			return errorOf("Manager", fmt.Errorf("Start: open the %s journal in %s: %w", l.name, dir, err))
		}
		rec := j.Recovery()
		jr := &laneJournal{j: j, lane: byte(i), recTo: rec.To, nrec: uint64(rec.Entries), freed: l.freed}
		if rec.Entries > 0 || rec.Corrupt > 0 || rec.Torn > 0 {
			m.log.Info("omqs: journal recovered unconfirmed messages; publishing them again", "lane", l.name, "dir", dir,
				"messages", rec.Entries, "corrupt", rec.Corrupt, "torn", rec.Torn)
		}
		l.maxBody = min(l.maxBody, int(seg)-journalEntryOverhead)
		l.jr.Store(jr)
		if w, ok := l.worker.(interface{ builtinEngine() *engine }); ok {
			if e := w.builtinEngine(); e != nil {
				e.laneDone = jr.resolve
			}
		}
	}
	return nil
}

// builtinEngine returns the built-in worker's engine, or nil when no
// Manager has bound it.
func (w *builtinWorker) builtinEngine() *engine { return w.e }

// closeJournals closes the lanes' journals; the drains have ended.
func (m *Manager) closeJournals() {
	for _, l := range m.lanes {
		jr := l.jr.Load()
		if jr == nil {
			continue
		}
		if err := jr.j.Close(); err != nil {
			m.log.Error("omqs: close journal", "dir", jr.j.Dir(), "error", err.Error())
		}
	}
}

// sealJournal makes the lane's journal take no more messages; its drain
// ends once it has read every message. No Send* may be under way.
func (l *lane) sealJournal() {
	if jr := l.jr.Load(); jr != nil {
		jr.j.Seal()
	}
}

// sendJournal writes one message of Send* to the lane's journal, with the
// trace context tc (nil: none) in its headers. When the journal is full it
// fails at once, unless wait or the overflow policy OverflowWait make it wait
// for room until ctx ends or Stop begins. It does not allocate.
func (m *Manager) sendJournal(ctx context.Context, wait bool, overflow Overflow, l *lane, jr *laneJournal, key, body string, tc *traceCtx) error {
	var buf [40]byte
	idb := appendMessageID(buf[:0])
	id := unsafe.String(unsafe.SliceData(idb), len(idb))
	var mb [256]byte
	var meta []byte
	if tc != nil {
		meta = appendTraceMeta(mb[:0], "", tc)
	}
	return m.appendJournal(ctx, wait, overflow, l, jr, key, bytesString(meta), body, id, m.clock())
}

// appendJournal appends one message to the lane's journal; see sendJournal.
func (m *Manager) appendJournal(ctx context.Context, wait bool, overflow Overflow, l *lane, jr *laneJournal, key, meta, body, id string, ts int64) error {
	waiting := false
	for {
		_, err := jr.j.AppendMeta(key, meta, body, id, ts, jr.lane)
		if err == nil {
			jr.appended.Add(1)
			if waiting {
				l.waiters.Add(-1)
				if l.waiters.Load() > 0 {
					l.freed()
				}
			}
			return nil
		}
		switch {
		case errors.Is(err, journal.ErrFull):
		case errors.Is(err, journal.ErrClosed):
			return errManagerStopped
		case errors.Is(err, journal.ErrTooLarge):
			return errorOf("Manager", fmt.Errorf("%w: message does not fit in the %s journal: %w", ErrInvalidMessage, l.name, err))
		default:
			return errorOf("Manager", fmt.Errorf("%s journal: %w", l.name, err))
		}
		if !wait && overflow == OverflowFail {
			l.st.refused.Add(1)
			return l.full
		}
		if !waiting {
			// Counted as a waiter before the next try: an entry
			// confirmed after a failed try signals room.
			waiting = true
			l.waiters.Add(1)
			continue
		}
		select {
		case <-l.room:
		case <-ctx.Done():
			l.waiters.Add(-1)
			l.st.refused.Add(1)
			return fmt.Errorf("%w: %w", l.full, ctx.Err())
		case <-m.stopping:
			l.waiters.Add(-1)
			return errorOf("Manager", fmt.Errorf("%w: Stop began while Send waited for room in the journal", ErrStopped))
		}
	}
}

// drainJournal feeds the lane's journal entries to its worker until the
// journal is sealed and read, as drain does for the buffer. An entry counts
// as resolved when the built-in worker's engine resolves it (confirmed,
// spooled or dropped), or, for a custom worker or a message the engine did
// not take, when MsgDidReceive returns.
func (m *Manager) drainJournal(l *lane) {
	defer m.wg.Done()
	jr := l.jr.Load()
	_, builtin := l.worker.(laneWorker)
	share := sharesBody(l.worker)
	r := jr.j.Reader()
	for {
		e, ok := r.Next()
		if !ok {
			return
		}
		seq := jr.track(e.Next)
		if e.Pos < jr.recTo {
			jr.recovered.Add(1)
		}
		jr.read.Add(1)
		l.st.accepted.Add(1)
		l.busy.Store(true)
		n := len(e.Body)
		l.bytes.Add(int64(n)) // given back as for a buffered message
		msg := journalMessage(e, seq)
		if len(e.Meta) > 0 {
			ct, h, err := parseMeta(e.Meta)
			if err != nil {
				// The entry's checksum held: a bug, not a torn write.
				// The message goes out without what could not be read.
				m.rep.report(errorOf("Manager", fmt.Errorf("%s message %s: its content type and headers are lost: %w", l.name, msg.MessageID, err)))
			}
			msg.ContentType, msg.Headers = ct, h
		}
		err := l.worker.MsgDidReceive(m.runCtx, msg)
		if err != nil {
			m.keep(l, msg, err)
		} else if !builtin {
			l.st.confirmed.Add(1)
		}
		if err != nil || !share {
			l.release(n)
		}
		// A built-in worker's engine that counted the message (busy is
		// cleared) resolves it; otherwise it is resolved now.
		if err != nil || !builtin || l.busy.Load() {
			jr.resolve(seq)
		}
		l.busy.Store(false)
	}
}

// journalMessage copies e out of the journal's mapping (whose pages are
// reused once e is confirmed) into one allocation.
func journalMessage(e journal.Entry, seq uint64) Message {
	b := make([]byte, len(e.Key)+len(e.ID)+len(e.Body))
	k := copy(b, e.Key)
	i := k + copy(b[k:], e.ID)
	copy(b[i:], e.Body)
	return Message{Key: bytesString(b[:k]), Body: b[i:len(b):len(b)], MessageID: bytesString(b[k:i]), Timestamp: messageTime(e.TS), jseq: seq}
}

// bytesString shares b's bytes as a string; b must not change after.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// track gives the entry ending at next (read in order) its sequence number.
func (jr *laneJournal) track(next uint64) uint64 {
	jr.mu.Lock()
	defer jr.mu.Unlock()
	if jr.head == len(jr.slots) {
		jr.slots, jr.head = jr.slots[:0], 0
	} else if jr.head >= 1024 && jr.head >= len(jr.slots)/2 {
		n := copy(jr.slots, jr.slots[jr.head:])
		jr.slots, jr.head = jr.slots[:n], 0
	}
	jr.seq++
	if jr.head == len(jr.slots) {
		jr.base = jr.seq
	}
	jr.slots = append(jr.slots, journalSlot{next: next})
	return jr.seq
}

// resolve marks the entry seq resolved, and confirms in the journal the run
// of resolved entries from the oldest. Resolving an entry twice is harmless.
// Safe for concurrent use.
func (jr *laneJournal) resolve(seq uint64) {
	jr.mu.Lock()
	if seq < jr.base || seq-jr.base >= uint64(len(jr.slots)-jr.head) {
		jr.mu.Unlock()
		return // confirmed already
	}
	s := &jr.slots[jr.head+int(seq-jr.base)]
	if s.done {
		jr.mu.Unlock()
		return
	}
	s.done = true
	jr.resolved.Add(1)
	var confirm uint64
	for jr.head < len(jr.slots) && jr.slots[jr.head].done {
		confirm = jr.slots[jr.head].next
		jr.head++
		jr.base++
	}
	if confirm != 0 {
		jr.j.Confirm(confirm)
	}
	jr.mu.Unlock()
	if confirm != 0 {
		jr.freed()
	}
}

// unread is how many entries wait in the journal for the drain.
func (jr *laneJournal) unread() int {
	read := jr.read.Load() // before appended: an entry is read after its Append returned
	return max(0, int(int64(jr.appended.Load()+jr.nrec)-int64(read)))
}

// pending is how many entries are not yet resolved.
func (jr *laneJournal) pending() int {
	resolved := jr.resolved.Load()
	return max(0, int(int64(jr.appended.Load()+jr.nrec)-int64(resolved)))
}
