//go:build linux

package journal

import (
	"encoding/binary"
	"hash/crc32"
	"strconv"
	"testing"
)

// Entries with and without metadata read back as they were appended, from
// the Reader and after a reopen.
func TestAppendMeta(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentSize: testSeg}
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	meta := func(i int) string {
		if i%3 == 0 {
			return ""
		}
		return "meta " + strconv.Itoa(i)
	}
	const n = 600 // several segments
	for i := range n {
		if _, err := j.AppendMeta("k"+strconv.Itoa(i), meta(i), "body "+strconv.Itoa(i), "id-"+strconv.Itoa(i), int64(i), 1); err != nil {
			t.Fatalf("AppendMeta %d: %v", i, err)
		}
	}
	check := func(es []Entry, from int) {
		t.Helper()
		if len(es) != n-from {
			t.Fatalf("read %d entries, want %d", len(es), n-from)
		}
		for k, e := range es {
			i := from + k
			if string(e.Key) != "k"+strconv.Itoa(i) || string(e.ID) != "id-"+strconv.Itoa(i) ||
				string(e.Body) != "body "+strconv.Itoa(i) || string(e.Meta) != meta(i) || e.TS != int64(i) || e.Lane != 1 {
				t.Fatalf("entry %d = {%q %q %q %q %d %d}", i, e.Key, e.ID, e.Meta, e.Body, e.TS, e.Lane)
			}
			if (meta(i) == "") != (e.Meta == nil) {
				t.Fatalf("entry %d: Meta %#v", i, e.Meta)
			}
		}
	}
	es := readAll(j)
	check(es, 0)
	j.Confirm(es[99].Next)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, o)
	if r := j.Recovery(); r.Entries != n-100 || r.Corrupt != 0 || r.Torn != 0 {
		t.Fatalf("recovery %+v, want %d entries", r, n-100)
	}
	check(readAll(j), 100)
}

// An entry as versions without metadata wrote it (flags 0, written here
// byte by byte from the format in doc.go) decodes as before.
func TestDecodeEntryWithoutMeta(t *testing.T) {
	b := make([]byte, 128)
	const pos = 4096
	key, id, body := "info", "abc-1", "hello"
	binary.LittleEndian.PutUint64(b[8:], pos)
	binary.LittleEndian.PutUint64(b[16:], 42)
	binary.LittleEndian.PutUint32(b[24:], uint32(len(body)))
	b[28], b[29], b[30], b[31] = byte(len(key)), byte(len(id)), 1, 0
	p := hdrSize + copy(b[hdrSize:], key)
	p += copy(b[p:], id)
	p += copy(b[p:], body)
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:p], castagnoli))
	binary.LittleEndian.PutUint32(b[0:], magicEntry)

	e, k := decode(b, pos, 0)
	if k != kEntry {
		t.Fatalf("kind %v, want an entry", k)
	}
	if string(e.Key) != key || string(e.ID) != id || string(e.Body) != body || e.Meta != nil || e.TS != 42 || e.Lane != 1 ||
		e.Next != pos+entrySize(len(key), len(id), len(body)) {
		t.Fatalf("entry %+v", e)
	}
}

// An entry whose metadata length does not fit its body field, or with
// flags this version does not know, is corrupt even with a good checksum.
func TestDecodeBadMeta(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags byte
		mlen  uint32
	}{
		{"metadata longer than the field", flagMeta, 100},
		{"empty metadata", flagMeta, 0},
		{"unknown flag", flagMeta | 2, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := make([]byte, 128)
			put(b, 0, 4096, "k", "meta", "id", "body", 0, 0)
			b[31] = c.flags
			binary.LittleEndian.PutUint32(b[hdrSize+3:], c.mlen)
			end := hdrSize + 3 + fieldLen(4, 4)
			binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(b[8:end], castagnoli))
			if _, k := decode(b, 4096, 0); k != kCorrupt {
				t.Fatalf("kind %v, want corrupt", k)
			}
		})
	}
}

// The metadata counts toward the segment size.
func TestAppendMetaTooLarge(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: testSeg})
	big := string(make([]byte, testSeg))
	if _, err := j.AppendMeta("k", big, "", "id", 0, 0); err != ErrTooLarge {
		t.Fatalf("AppendMeta of a segment of metadata: %v, want ErrTooLarge", err)
	}
	if _, err := j.AppendMeta("k", big[:testSeg/2], big[:testSeg/2], "id", 0, 0); err != ErrTooLarge {
		t.Fatalf("AppendMeta of half a segment of metadata and of body: %v, want ErrTooLarge", err)
	}
}
