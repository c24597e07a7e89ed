package journal

import (
	"fmt"
	"time"
)

const (
	// DefaultSegmentSize is the size of a segment file when
	// Options.SegmentSize is 0.
	DefaultSegmentSize = 64 << 20
	// DefaultMaxBytes is the quota when Options.MaxBytes is 0.
	DefaultMaxBytes = 1 << 30
	// minSegmentSize keeps a segment at least a few pages.
	minSegmentSize = 16 << 10
	maxSegmentSize = 1 << 32
)

// Options configure Open. The zero value is usable.
type Options struct {
	// SegmentSize is the size of each segment file, a power of two from
	// 16 KiB to 4 GiB; 0 means DefaultSegmentSize. A journal that exists
	// keeps the segment size it was created with.
	SegmentSize int64
	// MaxBytes is the quota: how many bytes of entries not yet confirmed
	// the journal holds before Append returns ErrFull; 0 means
	// DefaultMaxBytes. It is at least SegmentSize. The directory holds at
	// most MaxBytes/SegmentSize+4 segment files.
	MaxBytes int64
	// Sync is when appended entries are written to the disk; the zero
	// value is SyncNone.
	Sync Sync
}

type syncMode uint8

const (
	syncNone syncMode = iota
	syncInterval
	syncEvery
)

// Sync is a policy for writing appended entries from the page cache to the
// disk, that is what a power loss can lose (a crash of the process loses
// nothing under any policy). See the package doc for the measured costs.
type Sync struct {
	mode  syncMode
	every time.Duration
}

var (
	// SyncNone leaves the writing to the kernel (dirty pages are written
	// back within about 30 s by default).
	SyncNone = Sync{}
	// SyncEvery makes Append msync its entry before it returns.
	SyncEvery = Sync{mode: syncEvery}
)

// SyncInterval msyncs what was appended every d, on a background goroutine.
func SyncInterval(d time.Duration) Sync { return Sync{mode: syncInterval, every: d} }

// String names the policy: "none", "every" or "interval(10ms)".
func (s Sync) String() string {
	switch s.mode {
	case syncEvery:
		return "every"
	case syncInterval:
		return "interval(" + s.every.String() + ")"
	}
	return "none"
}

// normalize fills in the defaults and checks the options.
func (o Options) normalize() (Options, error) {
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < minSegmentSize || o.SegmentSize > maxSegmentSize || o.SegmentSize&(o.SegmentSize-1) != 0 {
		return o, fmt.Errorf("%w: SegmentSize %d is not a power of two from %d to %d", ErrInvalidOptions, o.SegmentSize, minSegmentSize, int64(maxSegmentSize))
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBytes < 0 {
		return o, fmt.Errorf("%w: MaxBytes %d is negative", ErrInvalidOptions, o.MaxBytes)
	}
	switch o.Sync.mode {
	case syncNone, syncEvery:
	case syncInterval:
		if o.Sync.every <= 0 {
			return o, fmt.Errorf("%w: SyncInterval(%v) is not positive", ErrInvalidOptions, o.Sync.every)
		}
	default:
		return o, fmt.Errorf("%w: unknown Sync policy", ErrInvalidOptions)
	}
	return o, nil
}
