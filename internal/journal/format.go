//go:build linux

package journal

import (
	"encoding/binary"
	"hash/crc32"
	"sync/atomic"
	"unsafe"
)

const (
	hdrSize = 32 // entry header bytes
	align   = 8  // entries start at multiples of align

	magicEntry uint32 = 0x314c4e4a // "JNL1"
	magicPad   uint32 = 0x4441504a // "JPAD"

	// flagMeta in an entry's flags: its body field starts with a 4-byte
	// length (metaLen) and that many bytes of metadata (Entry.Meta), then
	// the body.
	flagMeta = byte(1)
	metaLen  = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// entrySize is the bytes an entry with these lengths takes, alignment
// included.
func entrySize(key, id, body int) uint64 {
	return uint64(hdrSize+key+id+body+align-1) &^ (align - 1)
}

// word returns the commit word at b[off:], which must be 4-byte aligned in a
// mapping.
func word(b []byte, off uint64) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&b[off]))
}

// fieldLen is the length of an entry's body field: the body, after the
// metadata and its length when there is metadata.
func fieldLen(meta, body int) int {
	if meta == 0 {
		return body
	}
	return metaLen + meta + body
}

// put writes an entry at b[off:] (zeroed, with room for it), commit word last.
func put(b []byte, off, pos uint64, key, meta, id, body string, ts int64, lane byte) {
	h := b[off : off+hdrSize : off+hdrSize]
	binary.LittleEndian.PutUint64(h[8:], pos)
	binary.LittleEndian.PutUint64(h[16:], uint64(ts))
	binary.LittleEndian.PutUint32(h[24:], uint32(fieldLen(len(meta), len(body))))
	h[28], h[29], h[30], h[31] = byte(len(key)), byte(len(id)), lane, 0
	p := off + hdrSize
	p += uint64(copy(b[p:], key))
	p += uint64(copy(b[p:], id))
	if meta != "" {
		h[31] = flagMeta
		binary.LittleEndian.PutUint32(b[p:], uint32(len(meta)))
		p += metaLen
		p += uint64(copy(b[p:], meta))
	}
	p += uint64(copy(b[p:], body))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(b[off+8:p], castagnoli))
	word(b, off).Store(magicEntry)
}

// putPad marks b[off:] as the unused rest of a segment.
func putPad(b []byte, off, pos uint64) {
	binary.LittleEndian.PutUint64(b[off+8:], pos)
	word(b, off).Store(magicPad)
}

// Entry is one journal entry. Key, ID and Body point into the journal's
// memory mapping: they stay valid until Confirm passes Next (or Close), so
// copy them to keep them longer.
type Entry struct {
	Pos  uint64 // the entry's position
	Next uint64 // the position after it: Confirm(Next) confirms it
	Key  []byte
	ID   []byte
	Meta []byte // the metadata given to AppendMeta, or nil
	Body []byte
	TS   int64 // the timestamp given to Append
	Lane byte  // the lane given to Append
}

type kind int

const (
	kNone    kind = iota // nothing valid here
	kEntry               // a valid entry
	kPad                 // a valid pad: the rest of the segment is unused
	kCorrupt             // an entry header whose lengths or checksum are wrong
)

// decode reads what lies at b[off:] (off aligned, in a segment whose first
// position is base), loading the commit word atomically. It never trusts a
// length it has not checked against the segment.
func decode(b []byte, base, off uint64) (Entry, kind) {
	if uint64(len(b))-off < hdrSize {
		return Entry{}, kNone
	}
	h := b[off : off+hdrSize : off+hdrSize]
	c := word(b, off).Load()
	if c != magicEntry && c != magicPad {
		return Entry{}, kNone
	}
	pos := base + off
	if binary.LittleEndian.Uint64(h[8:]) != pos {
		return Entry{}, kNone // stale or garbage
	}
	if c == magicPad {
		return Entry{}, kPad
	}
	bl, kl, il := uint64(binary.LittleEndian.Uint32(h[24:])), uint64(h[28]), uint64(h[29])
	end := off + hdrSize + kl + il + bl
	if end > uint64(len(b)) || h[31]&^flagMeta != 0 {
		return Entry{}, kCorrupt
	}
	if crc32.Checksum(b[off+8:end], castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return Entry{}, kCorrupt
	}
	p := off + hdrSize
	e := Entry{
		Pos:  pos,
		Next: pos + entrySize(int(kl), int(il), int(bl)),
		Key:  b[p : p+kl : p+kl],
		ID:   b[p+kl : p+kl+il : p+kl+il],
		TS:   int64(binary.LittleEndian.Uint64(h[16:])),
		Lane: h[30],
	}
	p += kl + il
	if h[31]&flagMeta != 0 {
		if bl < metaLen {
			return Entry{}, kCorrupt
		}
		ml := uint64(binary.LittleEndian.Uint32(b[p:]))
		if ml == 0 || ml > bl-metaLen {
			return Entry{}, kCorrupt
		}
		p += metaLen
		e.Meta = b[p : p+ml : p+ml]
		p += ml
	}
	e.Body = b[p:end:end]
	return e, kEntry
}

// scanned is the result of find.
type scanned struct {
	at      uint64 // offset of the entry or pad found, or the limit
	kind    kind   // kEntry, kPad or kNone (nothing valid before the limit)
	e       Entry
	corrupt int // entry headers with a bad checksum or lengths skipped
	torn    int // regions of other non-zero bytes skipped
}

// find returns the first valid entry or pad at an aligned offset in
// [off, limit) of segment b (first position base), and counts what it
// skipped on the way: the entry headers with a bad checksum or lengths as
// corrupt; a skipped region without one but with non-zero bytes (an entry
// whose writer died before its commit word) as one torn entry.
func find(b []byte, base, off, limit uint64) scanned {
	var s scanned
	dirty := false
	off = (off + align - 1) &^ (align - 1)
	if limit > uint64(len(b)) {
		limit = uint64(len(b))
	}
	for ; off < limit; off += align {
		e, k := decode(b, base, off)
		switch k {
		case kEntry, kPad:
			if dirty && s.corrupt == 0 {
				s.torn++
			}
			s.at, s.kind, s.e = off, k, e
			return s
		case kCorrupt:
			s.corrupt++
			continue
		}
		if !dirty && off+8 <= uint64(len(b)) && binary.LittleEndian.Uint64(b[off:]) != 0 {
			dirty = true
		}
	}
	if dirty && s.corrupt == 0 {
		s.torn++
	}
	s.at, s.kind = limit, kNone
	return s
}
