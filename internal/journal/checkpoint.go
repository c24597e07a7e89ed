//go:build linux

package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// The CHECKPOINT file is one page:
//
//	0  magic    "OMQSJCP1"
//	8  segSize  uint64
//	16 crc      uint32 of bytes 0..16
//	64 slot 0: pos uint64, crc uint32 (CRC-32C of pos's 8 bytes)
//	128 slot 1: the same
//
// Confirm writes the slots in turn, position first and checksum last, so a
// torn write leaves the other slot valid; Open takes the larger valid one.
const (
	cpMagic = "OMQSJCP1"
	cpSize  = 4096
)

type checkpoint struct {
	data []byte
	seq  uint64
}

// open maps the checkpoint file, creating it with segSize when it is new or
// was never written, and returns the journal's segment size and confirmed
// position.
func (c *checkpoint) open(path string, segSize uint64) (uint64, uint64, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, 0, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("journal: %w", err)
	}
	if fi.Size() != cpSize {
		if fi.Size() != 0 {
			return 0, 0, fmt.Errorf("%w: %s is %d bytes, not %d", ErrCorrupt, path, fi.Size(), cpSize)
		}
		if err := f.Truncate(cpSize); err != nil {
			return 0, 0, fmt.Errorf("journal: %w", err)
		}
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, cpSize, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return 0, 0, fmt.Errorf("journal: mmap %s: %w", path, err)
	}
	c.data = data
	h := data[:20]
	if string(h[:8]) != cpMagic {
		for _, b := range data {
			if b != 0 {
				c.close()
				return 0, 0, fmt.Errorf("%w: %s is not a journal checkpoint", ErrCorrupt, path)
			}
		}
		// New (or created by a process that died before writing it).
		copy(h, cpMagic)
		binary.LittleEndian.PutUint64(h[8:], segSize)
		binary.LittleEndian.PutUint32(h[16:], crc32.Checksum(h[:16], castagnoli))
		if err := msync(data); err != nil {
			c.close()
			return 0, 0, err
		}
		if err := f.Sync(); err != nil {
			c.close()
			return 0, 0, fmt.Errorf("journal: %w", err)
		}
		return segSize, 0, nil
	}
	if crc32.Checksum(h[:16], castagnoli) != binary.LittleEndian.Uint32(h[16:]) {
		c.close()
		return 0, 0, fmt.Errorf("%w: %s has a bad header checksum", ErrCorrupt, path)
	}
	segSize = binary.LittleEndian.Uint64(h[8:])
	if segSize < minSegmentSize || segSize > maxSegmentSize || segSize&(segSize-1) != 0 {
		c.close()
		return 0, 0, fmt.Errorf("%w: %s has segment size %d", ErrCorrupt, path, segSize)
	}
	var pos uint64
	for i := range 2 {
		if p, ok := c.slot(i); ok && p > pos {
			pos = p
			c.seq = uint64(i) + 1 // write the other slot next
		}
	}
	return segSize, pos, nil
}

func (c *checkpoint) slot(i int) (uint64, bool) {
	s := c.data[64+64*i:]
	p := (*atomic.Uint64)(unsafe.Pointer(&s[0])).Load()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], p)
	return p, crc32.Checksum(b[:], castagnoli) == (*atomic.Uint32)(unsafe.Pointer(&s[8])).Load()
}

// store writes pos into the next slot.
func (c *checkpoint) store(pos uint64) {
	s := c.data[64+64*(c.seq&1):]
	c.seq++
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], pos)
	(*atomic.Uint64)(unsafe.Pointer(&s[0])).Store(pos)
	(*atomic.Uint32)(unsafe.Pointer(&s[8])).Store(crc32.Checksum(b[:], castagnoli))
}

func (c *checkpoint) close() {
	if c.data != nil {
		syscall.Munmap(c.data)
		c.data = nil
	}
}
