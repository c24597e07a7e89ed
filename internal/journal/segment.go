//go:build linux

package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// maxSpares is how many confirmed segment files are kept for reuse.
const maxSpares = 2

var pageSize = uint64(os.Getpagesize())

// segment is one mapped segment file. no and data do not change once the
// segment is published: appenders read them without a lock (and the race
// detector cannot see that they synchronize through the commit words in the
// mapping).
type segment struct {
	no       uint64
	data     []byte
	unmapped bool // guarded by Journal.mu
}

func (s *segment) unmap() {
	if !s.unmapped {
		s.unmapped = true
		syscall.Munmap(s.data)
	}
}

func (j *Journal) segPath(no uint64) string {
	return filepath.Join(j.dir, fmt.Sprintf("seg-%016x.jnl", no<<j.shift))
}

// lookup returns segment no if it is mapped and published, else nil. It
// takes no lock.
func (j *Journal) lookup(no uint64) *segment {
	if s := j.slots[no%uint64(len(j.slots))].Load(); s != nil && s.no == no {
		return s
	}
	return nil
}

// seg returns segment no, mapping it first if maintain has not (the slow
// path).
func (j *Journal) seg(no uint64) (*segment, error) {
	if s := j.lookup(no); s != nil {
		return s, nil
	}
	j.stalls.Add(1)
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.unmapped {
		return nil, ErrClosed
	}
	if s, ok := j.segs[no]; ok {
		return s, nil
	}
	return j.makeSegment(no)
}

// makeSegment creates segment no from a spare or a new file, pre-faults
// every page, and publishes it. j.mu is held.
func (j *Journal) makeSegment(no uint64) (*segment, error) {
	i := no % uint64(len(j.slots))
	if old := j.slots[i].Load(); old != nil && j.segs[old.no] == old {
		return nil, fmt.Errorf("%w: segment %d is still in use", ErrFull, old.no)
	}
	path := j.segPath(no)
	var data []byte
	for data == nil && len(j.spares) > 0 {
		sp := j.spares[len(j.spares)-1]
		j.spares = j.spares[:len(j.spares)-1]
		data, _ = j.useSpare(sp, path)
	}
	if data == nil {
		d, err := j.mapFile(path, true)
		if err != nil {
			return nil, err
		}
		for p := uint64(0); p < uint64(len(d)); p += pageSize {
			d[p] = 0 // fault the page in, writable, now rather than in Append
		}
		data = d
	}
	if j.opts.Sync.mode != syncNone {
		syncDir(j.dir)
	}
	s := &segment{no: no, data: data}
	j.segs[no] = s
	j.slots[i].Store(s)
	return s, nil
}

// spare is a segment file kept for reuse, with its mapping when it was
// retired in this process (mapping a file's pages again costs a page fault
// each).
type spare struct {
	path string
	data []byte // nil: not mapped
}

// useSpare zeroes a spare, mapping it first if need be, renames it to path
// and returns its mapping. On failure the spare is gone.
func (j *Journal) useSpare(sp spare, path string) ([]byte, error) {
	if sp.data == nil {
		d, err := j.mapFile(sp.path, false)
		if err != nil {
			os.Remove(sp.path)
			return nil, err
		}
		sp.data = d
	}
	clear(sp.data) // zero the old entries; this also faults every page in
	if err := os.Rename(sp.path, path); err != nil {
		syscall.Munmap(sp.data)
		os.Remove(sp.path)
		return nil, err
	}
	return sp.data, nil
}

// mapFile maps a segment file of segSize bytes, creating it (fallocate) when
// create is set, and growing a shorter one (a truncated segment) with zeros.
func (j *Journal) mapFile(path string, create bool) ([]byte, error) {
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	size := int64(j.segSize)
	switch {
	case fi.Size() > size:
		return nil, fmt.Errorf("%w: %s is %d bytes, larger than the segment size %d", ErrCorrupt, path, fi.Size(), size)
	case create:
		if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err != nil && !errors.Is(err, syscall.EOPNOTSUPP) {
			f.Close()
			os.Remove(path)
			if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
				return nil, fmt.Errorf("%w: create %s: %w", ErrFull, path, err)
			}
			return nil, fmt.Errorf("journal: create %s: %w", path, err)
		}
		fallthrough
	case fi.Size() < size:
		if err := f.Truncate(size); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
	}
	if create && j.opts.Sync.mode != syncNone {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("journal: mmap %s: %w", path, err)
	}
	return data, nil
}

// retireConfirmed unmaps the segments wholly before the confirmed position
// and keeps their files as spares (or removes them). j.mu is held.
func (j *Journal) retireConfirmed() {
	c := j.confirmed.Load() >> j.shift
	for no, s := range j.segs {
		if no < c {
			j.retire(s)
		}
	}
}

// retire unpublishes a segment and keeps it, mapped, as a spare (or
// unmaps and removes it when there are enough).
func (j *Journal) retire(s *segment) {
	j.slots[s.no%uint64(len(j.slots))].CompareAndSwap(s, nil)
	delete(j.segs, s.no)
	if !j.spareFile(j.segPath(s.no), s.data) {
		s.unmap()
	}
}

// spareFile renames a segment file to a spare, or removes it when there are
// enough spares; it reports whether the file (and data, its mapping or nil)
// was kept.
func (j *Journal) spareFile(path string, data []byte) bool {
	if len(j.spares) < maxSpares {
		name := filepath.Join(j.dir, "spare-"+strconv.Itoa(j.nspare)+".jnl")
		j.nspare++
		if os.Rename(path, name) == nil {
			j.spares = append(j.spares, spare{path: name, data: data})
			return true
		}
	}
	os.Remove(path)
	return false
}

// recover reads the checkpoint, maps the segments after it, finds the valid
// entries and sets the tail after the last one.
func (j *Journal) recover() error {
	segSize, confirmed, err := j.cp.open(filepath.Join(j.dir, "CHECKPOINT"), uint64(j.opts.SegmentSize))
	if err != nil {
		return err
	}
	j.segSize, j.mask = segSize, segSize-1
	for j.shift = 0; uint64(1)<<j.shift < segSize; j.shift++ {
	}
	j.max = max(uint64(j.opts.MaxBytes), segSize)
	j.confirmed.Store(confirmed)

	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	var nos []uint64
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "seg-") && strings.HasSuffix(name, ".jnl"):
			base, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, "seg-"), ".jnl"), 16, 64)
			if err != nil || base&j.mask != 0 {
				continue // not one of ours
			}
			nos = append(nos, base>>j.shift)
		case strings.HasPrefix(name, "spare-") && strings.HasSuffix(name, ".jnl"):
			if n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "spare-"), ".jnl")); err == nil {
				j.nspare = max(j.nspare, n+1)
				if len(j.spares) < maxSpares {
					j.spares = append(j.spares, spare{path: filepath.Join(j.dir, name)})
				} else {
					os.Remove(filepath.Join(j.dir, name))
				}
			}
		}
	}
	slices.Sort(nos)
	cseg := confirmed >> j.shift
	var live []*segment
	for _, no := range nos {
		if no < cseg {
			j.spareFile(j.segPath(no), nil)
			continue
		}
		data, err := j.mapFile(j.segPath(no), false)
		if err != nil {
			for _, s := range live {
				s.unmap()
			}
			return err
		}
		live = append(live, &segment{no: no, data: data})
	}

	// Scan from the confirmed position for the valid entries.
	rec := Recovery{From: confirmed, To: confirmed}
	for _, s := range live {
		base := s.no << j.shift
		off := uint64(0)
		if confirmed > base {
			off = confirmed - base
		}
		for {
			sc := find(s.data, base, off, segSize)
			rec.Corrupt += sc.corrupt
			rec.Torn += sc.torn
			if sc.kind == kEntry {
				rec.Entries++
				rec.To = sc.e.Next
				off = sc.e.Next - base
				continue
			}
			if sc.kind == kPad {
				rec.To = base + segSize
			}
			break
		}
	}
	j.rec = rec

	// Appends go on after the last valid entry, in zeroed space; the
	// segments after its one become spares.
	tseg := rec.To >> j.shift
	span := max(j.max>>j.shift+2, tseg-cseg+1)
	j.slots = make([]atomic.Pointer[segment], span+ahead+2)
	for _, s := range live {
		if s.no > tseg {
			if !j.spareFile(j.segPath(s.no), s.data) {
				s.unmap()
			}
			continue
		}
		if s.no == tseg {
			clear(s.data[rec.To&j.mask:])
		}
		j.segs[s.no] = s
		j.slots[s.no%uint64(len(j.slots))].Store(s)
	}
	j.synced = [2]uint64{confirmed, confirmed}
	j.tail.Store(rec.To)
	j.rd.pos.Store(confirmed)
	j.rd.recEnd = rec.To
	return nil
}

// syncEntry msyncs the pages of an entry (SyncEvery).
func (j *Journal) syncEntry(s *segment, off, size uint64) {
	from := off &^ (pageSize - 1)
	if err := msync(s.data[from : off+size]); err != nil {
		j.mu.Lock()
		j.bgErr = err
		j.mu.Unlock()
	}
}

// syncRecent msyncs the segments written since the interval sync before
// last (an entry reserved before a sync may be committed after it), and the
// checkpoint.
func (j *Journal) syncRecent() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.unmapped {
		return nil
	}
	t := j.tail.Load() &^ sealedBit
	from := min(j.synced[0], j.synced[1]) >> j.shift
	j.synced[0], j.synced[1] = j.synced[1], t
	var errs []error
	for no := from; no <= t>>j.shift; no++ {
		if s, ok := j.segs[no]; ok {
			errs = append(errs, msync(s.data))
		}
	}
	errs = append(errs, j.syncCheckpoint())
	return errors.Join(errs...)
}

// syncAll msyncs every mapped segment and the checkpoint.
func (j *Journal) syncAll() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	var errs []error
	for _, s := range j.segs {
		errs = append(errs, msync(s.data))
	}
	errs = append(errs, j.syncCheckpoint())
	return errors.Join(errs...)
}

func (j *Journal) syncCheckpoint() error {
	j.cpMu.Lock()
	defer j.cpMu.Unlock()
	if j.cp.data == nil {
		return nil
	}
	return msync(j.cp.data)
}

func msync(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, e := syscall.Syscall(syscall.SYS_MSYNC, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), syscall.MS_SYNC)
	if e != 0 {
		return fmt.Errorf("journal: msync: %w", e)
	}
	return nil
}

// syncDir makes the directory's entries (created and renamed files) durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
