// Package journal is a crash-safe, memory-mapped, append-only log of
// messages: the hand-off between OMQS's Send* callers and the worker that
// publishes to the broker, for when a message accepted by Send* must survive
// the death of the process.
//
// # Use
//
//	j, err := journal.Open(dir, journal.Options{Sync: journal.SyncNone})
//	pos, err := j.Append(key, body, id, ts, lane) // any goroutine; ErrFull at the quota
//	pos, err = j.AppendMeta(key, meta, body, id, ts, lane) // with metadata (Entry.Meta)
//	r := j.Reader()                              // one goroutine
//	for e, ok := r.Next(); ok; e, ok = r.Next() {
//		publish(e)
//		j.Confirm(e.Next) // once the broker confirmed e and everything before it
//	}
//	j.Seal() // no more Appends; Next returns false once everything is read
//	j.Close()
//
// Append copies the message into a memory-mapped segment file and returns:
// from then on the bytes are in the kernel's page cache, so the message
// survives a crash, kill -9 or panic of the process (not a power loss, unless
// the Sync policy says so). Open hands every entry after the confirmed
// position to the Reader again (at-least-once).
//
// # Design
//
// Positions are byte offsets in an endless log cut into segments of
// SegmentSize bytes (a power of two); segment n holds positions
// [n*SegmentSize, (n+1)*SegmentSize) in the file seg-<16 hex digits of
// n*SegmentSize>.jnl. Append reserves its entry's bytes with one
// compare-and-swap on the tail position (no lock), writes the entry and then
// its commit word, last, with an atomic store. An entry that does not fit in
// the rest of a segment goes to the start of the next one; the rest is
// marked with a pad word when there is room for one. Entries never span
// segments.
//
// Segments are created (fallocate) and pre-faulted (every page written once)
// by a background goroutine one segment ahead of the tail, so Append does
// not take a page fault for a new page; segments wholly before the confirmed
// position are renamed to spare-<n>.jnl and reused (zeroed) for the next
// segment, or removed. The confirmed position is kept in CHECKPOINT, a
// memory-mapped page with two slots written alternately, each with its own
// checksum, so a torn write of one leaves the other.
//
// # Entry format
//
// Entries start at multiples of 8 bytes. Little-endian:
//
//	0  commit  uint32  "JNL1" for an entry, "JPAD" for a pad; written last
//	4  crc     uint32  CRC-32C of bytes 8 .. 32+len(payload)
//	8  pos     uint64  the entry's own position
//	16 ts      int64   the caller's timestamp
//	24 body    uint32  body field length
//	28 key     uint8   key length
//	29 id      uint8   id length
//	30 lane    uint8
//	31 flags   uint8   0, or 1 when the body field holds metadata
//	32 key, id, body field; zeros up to the next multiple of 8
//
// The body field is the body, or, with flag 1 (an entry of AppendMeta), a
// uint32 length, that many bytes of metadata (not 0), then the body. The
// entries of versions without metadata all have flags 0 and read as
// before; a version that predates flag 1 takes an entry with it for
// corrupt and skips it.
//
// The position inside the entry makes a stale entry (from a reused segment)
// invalid where it lies. On Open, the recovery scan walks from the confirmed
// position: a valid entry (commit word, its own position, lengths within the
// segment, checksum) is handed to the Reader and the scan jumps over it;
// anything else is skipped 8 bytes at a time until the next valid entry, so a
// corrupt entry in the middle hides nothing after it. A skipped region that
// holds an entry header with a bad checksum counts as Corrupt; one that holds
// other non-zero bytes (an entry whose writer died before its commit word)
// counts as Torn. New appends start after the last valid entry; the bytes
// after it are zeroed first.
//
// # Sync policies
//
//   - SyncNone: Append writes to the page cache only. A crash of the process
//     loses nothing; a power loss or kernel crash loses what the kernel had
//     not written back (by default up to 30 s).
//   - SyncInterval(d): a background goroutine msyncs what was appended every
//     d; a power loss loses at most the last d (plus the time of the msync).
//   - SyncEvery: Append msyncs its entry before it returns (a disk write per
//     message: slow).
//
// The package is Linux only: it uses mmap, fallocate, msync and flock.
package journal
