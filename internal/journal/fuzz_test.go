//go:build linux

package journal

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
)

// FuzzScan feeds arbitrary bytes to the recovery scanner as a segment: it
// must not panic, must return only entries whose checksum holds and which
// lie inside the segment, in increasing positions, and must terminate.
func FuzzScan(f *testing.F) {
	// Seeds: valid entries, a pad, a damaged entry, zeros.
	seg := make([]byte, 512)
	off := uint64(0)
	for i, body := range []string{"hello", "", "a longer body of text"} {
		put(seg, off, 4096+off, "key", "", "id", body, int64(i), byte(i))
		off += entrySize(3, 2, len(body))
	}
	put(seg, off, 4096+off, "key", "meta", "id", "body", 3, 0)
	off += entrySize(3, 2, fieldLen(4, 4))
	putPad(seg, off, 4096+off)
	f.Add(append([]byte(nil), seg...), uint16(4096/8))
	seg[40] ^= 1
	f.Add(append([]byte(nil), seg...), uint16(4096/8))
	f.Add(make([]byte, 64), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, base8 uint16) {
		b := make([]byte, len(data)&^(align-1)) // aligned, like a mapping
		copy(b, data)
		base := uint64(base8) * align
		var last uint64
		for off := uint64(0); off < uint64(len(b)); {
			sc := find(b, base, off, uint64(len(b)))
			if sc.kind == kNone {
				break
			}
			if sc.at < off || sc.at >= uint64(len(b)) || (sc.at > 0 && sc.at < last) {
				t.Fatalf("found at %d scanning from %d", sc.at, off)
			}
			if sc.kind == kPad {
				break
			}
			e := sc.e
			h := b[sc.at:]
			n := hdrSize + len(e.Key) + len(e.ID) + fieldLen(len(e.Meta), len(e.Body))
			if e.Pos != base+sc.at || sc.at+uint64(n) > uint64(len(b)) {
				t.Fatalf("entry at %d: pos %d, %d bytes in a %d-byte segment", sc.at, e.Pos, n, len(b))
			}
			if crc32.Checksum(h[8:n], castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
				t.Fatalf("entry at %d has a bad checksum", sc.at)
			}
			if e.Next <= e.Pos {
				t.Fatalf("entry at %d: next %d", sc.at, e.Next)
			}
			last = sc.at
			off = e.Next - base
		}
	})
}
