//go:build !linux

package journal

import (
	"errors"
	"runtime"
)

// ErrUnsupported is returned by Open on systems other than Linux.
var ErrUnsupported = errors.New("journal: not supported on " + runtime.GOOS + " (Linux only)")

// Journal is not available on this system; Open fails.
type Journal struct{ rd Reader }

// Entry is one journal entry.
type Entry struct {
	Pos, Next     uint64
	Key, ID, Body []byte
	TS            int64
	Lane          byte
}

// Recovery says what Open found after the confirmed position.
type Recovery struct {
	From, To               uint64
	Entries, Corrupt, Torn int
}

// Stats is a snapshot of a journal's state.
type Stats struct {
	Tail, Confirmed, Read uint64
	Segments, Spares      int
	Stalls                uint64
	Recovery              Recovery
	Err                   error
}

// Reader reads a journal's entries.
type Reader struct{}

// Open fails with ErrUnsupported.
func Open(dir string, opts Options) (*Journal, error) {
	if _, err := opts.normalize(); err != nil {
		return nil, err
	}
	return nil, ErrUnsupported
}

// Append fails with ErrClosed.
func (j *Journal) Append(key, body, id string, ts int64, lane byte) (uint64, error) {
	return 0, ErrClosed
}

// Confirm does nothing.
func (j *Journal) Confirm(next uint64) {}

// Seal does nothing.
func (j *Journal) Seal() {}

// Close does nothing.
func (j *Journal) Close() error { return nil }

// Reader returns the journal's reader.
func (j *Journal) Reader() *Reader { return &j.rd }

// Recovery returns nothing.
func (j *Journal) Recovery() Recovery { return Recovery{} }

// Dir returns "".
func (j *Journal) Dir() string { return "" }

// Stats returns nothing.
func (j *Journal) Stats() Stats { return Stats{} }

// Next returns false.
func (r *Reader) Next() (Entry, bool) { return Entry{}, false }

// TryNext returns false.
func (r *Reader) TryNext() (Entry, bool) { return Entry{}, false }

// Pos returns 0.
func (r *Reader) Pos() uint64 { return 0 }
