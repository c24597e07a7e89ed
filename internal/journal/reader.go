//go:build linux

package journal

import (
	"runtime"
	"sync/atomic"
)

// idleSpins is how many times Next yields, when no entry is ready, before it
// sleeps: while a stream flows the next entry usually comes meanwhile, and
// an Append pays for a wake-up (a channel send) only when the Reader sleeps.
const idleSpins = 64

// Reader reads a journal's entries in position order: first those Open
// recovered, then those appended since, each once. One goroutine at a time.
type Reader struct {
	j        *Journal
	pos      atomic.Uint64 // the next position to read; written by the reader only
	recEnd   uint64        // before it, entries are recovered ones, found by scanning
	sleeping atomic.Bool   // Next sleeps on wake
	wake     chan struct{} // cap 1
	corrupt  atomic.Uint64 // entries with a bad checksum met after Open (the file was written to by someone else)
}

type readState int

const (
	rsEmpty readState = iota // no entry ready yet
	rsEntry
	rsEnd // sealed and all read
)

// Next returns the next entry, waiting for it to be committed. It returns
// false once the journal is sealed and every entry appended before was read.
func (r *Reader) Next() (Entry, bool) {
	for i := 0; ; i++ {
		e, st := r.try()
		if st != rsEmpty {
			return e, st == rsEntry
		}
		if i < idleSpins {
			runtime.Gosched()
			continue
		}
		// Sleep. An Append committed after this store sees it; one
		// committed before it is seen by the try below.
		r.sleeping.Store(true)
		e, st = r.try()
		if st != rsEmpty {
			r.sleeping.Store(false)
			return e, st == rsEntry
		}
		<-r.wake
		r.sleeping.Store(false)
		i = 0
	}
}

// TryNext returns the next entry if it is committed, without waiting.
func (r *Reader) TryNext() (Entry, bool) {
	e, st := r.try()
	return e, st == rsEntry
}

// Pos returns the position of the next entry to read.
func (r *Reader) Pos() uint64 { return r.pos.Load() }

func (r *Reader) try() (Entry, readState) {
	j := r.j
	for {
		p := r.pos.Load()
		t := j.tail.Load()
		sealed := t&sealedBit != 0
		t &^= sealedBit
		if p >= t {
			if sealed {
				return Entry{}, rsEnd
			}
			return Entry{}, rsEmpty
		}
		no, off := p>>j.shift, p&j.mask
		base, next := no<<j.shift, (no+1)<<j.shift
		if p < r.recEnd {
			// Recovered entries: scan, skipping what is not valid.
			s := j.lookup(no)
			if s == nil {
				r.pos.Store(min(next, r.recEnd)) // a missing segment file
				continue
			}
			limit := j.segSize
			if r.recEnd < next {
				limit = r.recEnd - base
			}
			sc := find(s.data, base, off, limit)
			switch sc.kind {
			case kEntry:
				r.pos.Store(sc.e.Next)
				return sc.e, rsEntry
			case kPad:
				r.pos.Store(next)
			default:
				r.pos.Store(base + limit)
			}
			continue
		}
		if j.segSize-off < hdrSize {
			r.pos.Store(next)
			continue
		}
		s := j.lookup(no)
		if s == nil {
			return Entry{}, rsEmpty // cannot happen: Append maps before it reserves
		}
		e, k := decode(s.data, base, off)
		switch k {
		case kEntry:
			r.pos.Store(e.Next)
			return e, rsEntry
		case kPad:
			r.pos.Store(next)
			continue
		case kCorrupt:
			// Appended and committed, then overwritten by someone else: skip
			// it by its lengths (they fit the segment, or the rest goes).
			r.corrupt.Add(1)
			h := s.data[off : off+hdrSize]
			bl := uint64(h[24]) | uint64(h[25])<<8 | uint64(h[26])<<16 | uint64(h[27])<<24
			n := min(p+entrySize(int(h[28]), int(h[29]), int(bl)), next)
			r.pos.Store(n)
			continue
		}
		return Entry{}, rsEmpty
	}
}
