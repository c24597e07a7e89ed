//go:build linux

package journal

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// sealedBit in the tail position means no Append succeeds any more.
const sealedBit = 1 << 63

// ahead is how many segments past the tail's are kept ready.
const ahead = 1

type pad [64]byte

// Journal is an open journal directory. Append may be called from any
// goroutine; the Reader from one goroutine at a time; Confirm, Seal, Stats
// and Close from any.
type Journal struct {
	dir     string
	opts    Options
	segSize uint64
	shift   uint
	mask    uint64
	max     uint64

	_         pad
	tail      atomic.Uint64 // the next free position, with sealedBit
	_         pad
	confirmed atomic.Uint64
	_         pad

	stalls atomic.Uint64 // Appends that found their segment not ready

	slots []atomic.Pointer[segment] // segment n in slots[n%len]
	kick  chan struct{}             // cap 1: wakes maintain
	rd    Reader
	rec   Recovery

	mu       sync.Mutex          // guards segs, spares, the mappings' life and msync
	segs     map[uint64]*segment // mapped segments by number
	spares   []spare
	nspare   int // names the next spare file
	unmapped bool
	synced   [2]uint64 // the tails of the last two interval syncs
	bgErr    error     // the last error of a background goroutine

	cpMu  sync.Mutex
	cp    checkpoint
	lockF *os.File

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Recovery says what Open found after the confirmed position.
type Recovery struct {
	From    uint64 // the confirmed position
	To      uint64 // the end of the last valid entry: appends go on from here
	Entries int    // valid entries, handed to the Reader
	Corrupt int    // entries skipped for a bad checksum or bad lengths
	Torn    int    // regions skipped that held an incomplete entry
}

// Stats is a snapshot of a journal's state.
type Stats struct {
	Tail      uint64 // the next position to append at
	Confirmed uint64 // entries before this position are confirmed
	Read      uint64 // the Reader's position
	Segments  int    // segment files mapped
	Spares    int    // segment files kept for reuse
	Stalls    uint64 // Appends (or retries) that found their segment not ready and waited for it
	Recovery  Recovery
	Err       error // the last error of a background goroutine (segment creation, msync), or nil
}

// Open opens (or creates) the journal in dir, takes its lock, recovers the
// entries after the confirmed position for the Reader, and prepares the
// segment the next Append goes to and the one after (creating and
// pre-faulting a segment takes a few hundred milliseconds per 64 MiB on a
// small VM). It fails with an
// error wrapping ErrLocked when another process holds dir.
func Open(dir string, opts Options) (*Journal, error) {
	opts, err := opts.normalize()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	lf, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	j := &Journal{dir: dir, opts: opts, segs: map[uint64]*segment{}, kick: make(chan struct{}, 1), done: make(chan struct{}), lockF: lf}
	j.rd.j = j
	j.rd.wake = make(chan struct{}, 1)
	if err := j.recover(); err != nil {
		j.release()
		return nil, err
	}
	// The first Appends find their segments ready.
	j.mu.Lock()
	err = j.prepare()
	j.mu.Unlock()
	if err != nil {
		j.release()
		return nil, err
	}
	j.wg.Add(1)
	go j.maintain()
	if opts.Sync.mode == syncInterval {
		j.wg.Add(1)
		go j.syncLoop()
	}
	j.poke()
	return j, nil
}

// Append writes one entry and returns its position. It never waits for a
// lock or for the Reader: it reserves its bytes with a compare-and-swap on
// the tail and writes the entry into a mapped, pre-faulted segment. When it
// returns nil the entry survives a crash of the process (and, under
// SyncEvery, a power loss). It returns ErrFull at the quota, ErrTooLarge for
// a key or id over 255 bytes or an entry larger than a segment, ErrClosed
// after Seal. Safe for concurrent use; it allocates nothing.
func (j *Journal) Append(key, body, id string, ts int64, lane byte) (uint64, error) {
	return j.AppendMeta(key, "", body, id, ts, lane)
}

// AppendMeta is Append with metadata: bytes the journal keeps beside the
// body and hands back as Entry.Meta ("" is none, as for Append). An entry
// with metadata cannot be read by a version of this package that predates
// it: it would be skipped as corrupt.
func (j *Journal) AppendMeta(key, meta, body, id string, ts int64, lane byte) (uint64, error) {
	if len(key) > 255 || len(id) > 255 {
		return 0, ErrTooLarge
	}
	field := fieldLen(len(meta), len(body))
	if uint64(field) > j.segSize {
		return 0, ErrTooLarge
	}
	size := entrySize(len(key), len(id), field)
	if size > j.segSize {
		return 0, ErrTooLarge
	}
	for {
		t := j.tail.Load()
		if t&sealedBit != 0 {
			return 0, ErrClosed
		}
		start, off := t, t&j.mask
		if off+size > j.segSize {
			start = t - off + j.segSize
		}
		end := start + size
		if end-j.confirmed.Load() > j.max {
			return 0, ErrFull
		}
		s, err := j.seg(start >> j.shift)
		if err != nil {
			return 0, err
		}
		var old *segment
		if start != t && j.segSize-off >= hdrSize {
			if old, err = j.seg(t >> j.shift); err != nil {
				return 0, err
			}
		}
		if !j.tail.CompareAndSwap(t, end) {
			continue
		}
		if old != nil {
			putPad(old.data, off, t)
		}
		soff := start & j.mask
		put(s.data, soff, start, key, meta, id, body, ts, lane)
		if off == 0 || start != t {
			j.poke() // a new segment is in use: prepare the next one
		}
		if j.opts.Sync.mode == syncEvery {
			j.syncEntry(s, soff, size)
		}
		if j.rd.sleeping.Load() {
			select {
			case j.rd.wake <- struct{}{}:
			default:
			}
		}
		return start, nil
	}
}

// Confirm records that every entry ending at or before next (an Entry's
// Next) is confirmed: Open will not hand them out again, and their segments
// are reused. Positions at or before the confirmed one are ignored, and next
// is capped at the Reader's position. Safe for concurrent use; it does not
// wait for the disk.
func (j *Journal) Confirm(next uint64) {
	j.cpMu.Lock()
	defer j.cpMu.Unlock()
	if j.cp.data == nil {
		return // closed
	}
	if r := j.rd.pos.Load(); next > r {
		next = r
	}
	old := j.confirmed.Load()
	if next <= old {
		return
	}
	j.confirmed.Store(next)
	j.cp.store(next)
	if next>>j.shift != old>>j.shift {
		j.poke()
	}
}

// Seal makes every later Append fail with ErrClosed; the Reader's Next
// returns false once it has read every entry appended before. Idempotent.
func (j *Journal) Seal() {
	for {
		t := j.tail.Load()
		if t&sealedBit != 0 || j.tail.CompareAndSwap(t, t|sealedBit) {
			break
		}
	}
	select {
	case j.rd.wake <- struct{}{}:
	default:
	}
}

// Close seals the journal, stops its goroutines, syncs it (unless the policy
// is SyncNone), and releases its mappings, files and lock. The Reader must
// not be in use: stop calling Next first (after Seal, Next returns false at
// the end). Entries from the Reader are invalid after Close. Idempotent.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() {
		j.Seal()
		close(j.done)
		j.wg.Wait()
		var errs []error
		if !j.quiesce(5 * time.Second) {
			errs = append(errs, errors.New("journal: close: an Append did not finish in 5s; mappings left in place"))
		} else if j.opts.Sync.mode != syncNone {
			if err := j.syncAll(); err != nil {
				errs = append(errs, err)
			}
		}
		if len(errs) == 0 {
			j.release()
		} else if err := j.lockF.Close(); err != nil {
			errs = append(errs, err)
		}
		j.closeErr = errors.Join(errs...)
	})
	return j.closeErr
}

// release unmaps everything and drops the lock.
func (j *Journal) release() {
	j.cpMu.Lock()
	j.cp.close()
	j.cpMu.Unlock()
	j.mu.Lock()
	j.unmapped = true
	for no, s := range j.segs {
		s.unmap()
		delete(j.segs, no)
	}
	for i := range j.slots {
		j.slots[i].Store(nil)
	}
	for _, sp := range j.spares {
		if sp.data != nil {
			syscall.Munmap(sp.data)
		}
	}
	j.spares = nil
	j.mu.Unlock()
	j.lockF.Close()
}

// quiesce waits until every reserved entry is committed (Appends between
// their reservation and their commit word have finished), or d passes.
func (j *Journal) quiesce(d time.Duration) bool {
	deadline := time.Now().Add(d)
	t := j.tail.Load() &^ sealedBit
	p := max(j.confirmed.Load(), j.rec.To)
	for p < t {
		no, off := p>>j.shift, p&j.mask
		if j.segSize-off < hdrSize {
			p = (no + 1) << j.shift
			continue
		}
		s := j.lookup(no)
		if s == nil {
			return false
		}
		switch word(s.data, off).Load() {
		case magicPad:
			p = (no + 1) << j.shift
		case magicEntry:
			h := s.data[off : off+hdrSize]
			bl := uint64(h[24]) | uint64(h[25])<<8 | uint64(h[26])<<16 | uint64(h[27])<<24
			p += entrySize(int(h[28]), int(h[29]), int(bl))
		default:
			if time.Now().After(deadline) {
				return false
			}
			runtime.Gosched()
		}
	}
	return true
}

// Reader returns the journal's only reader.
func (j *Journal) Reader() *Reader { return &j.rd }

// Recovery returns what Open found.
func (j *Journal) Recovery() Recovery { return j.rec }

// Dir returns the journal's directory.
func (j *Journal) Dir() string { return j.dir }

// Stats returns a snapshot of the journal's state. Safe for concurrent use.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	defer j.mu.Unlock()
	return Stats{
		Tail:      j.tail.Load() &^ sealedBit,
		Confirmed: j.confirmed.Load(),
		Read:      j.rd.pos.Load(),
		Segments:  len(j.segs),
		Spares:    len(j.spares),
		Stalls:    j.stalls.Load(),
		Recovery:  j.rec,
		Err:       j.bgErr,
	}
}

// poke wakes maintain without waiting.
func (j *Journal) poke() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// maintain retires confirmed segments and prepares the next ones, whenever
// poked, until Close.
func (j *Journal) maintain() {
	defer j.wg.Done()
	for {
		select {
		case <-j.kick:
		case <-j.done:
			return
		}
		j.mu.Lock()
		j.retireConfirmed()
		if err := j.prepare(); err != nil {
			j.bgErr = err
		}
		j.mu.Unlock()
	}
}

// prepare makes the tail's segment and the ahead ones after it. j.mu is
// held.
func (j *Journal) prepare() error {
	t := (j.tail.Load() &^ sealedBit) >> j.shift
	for no := t; no <= t+ahead; no++ {
		if _, ok := j.segs[no]; !ok {
			if _, err := j.makeSegment(no); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncLoop msyncs what was appended every Sync interval, until Close.
func (j *Journal) syncLoop() {
	defer j.wg.Done()
	t := time.NewTicker(j.opts.Sync.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := j.syncRecent(); err != nil {
				j.mu.Lock()
				j.bgErr = err
				j.mu.Unlock()
			}
		case <-j.done:
			return
		}
	}
}
