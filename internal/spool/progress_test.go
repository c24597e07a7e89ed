package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// takenFile appends n records (ids r0, r1, …) to a spool in a new folder and
// takes it for replay.
func takenFile(t *testing.T, n int) string {
	t.Helper()
	s := New(filepath.Join(t.TempDir(), "backup.evt"))
	for i := range n {
		if err := s.Append(NewRecord("x", "k", fmt.Sprintf("r%d", i), time.Now(), []byte("body"), nil)); err != nil {
			t.Fatal(err)
		}
	}
	files, err := s.Take()
	if err != nil || len(files) != 1 {
		t.Fatalf("Take = %v, %v", files, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return files[0]
}

func ids(recs []Record) string {
	var b []string
	for _, r := range recs {
		b = append(b, r.MessageID)
	}
	return strings.Join(b, ",")
}

// A replay that saved a mark is resumed after it by Replay, Read and
// Remaining; Scan still sees every line.
func TestReplayResumesAfterMark(t *testing.T) {
	p := takenFile(t, 6)
	recs, _ := replayAll(t, p, ReplayOptions{Exchange: "x"})
	if err := SaveMark(p, recs[3].End()); err != nil {
		t.Fatal(err)
	}
	got, res := replayAll(t, p, ReplayOptions{Exchange: "x"})
	if ids(got) != "r4,r5" || res.Records != 2 {
		t.Fatalf("replay after the mark: %s (%+v), want r4,r5", ids(got), res)
	}
	if got[1].End() != recs[5].End() {
		t.Errorf("offsets after the mark: %d, want %d", got[1].End(), recs[5].End())
	}
	if n, err := Remaining(p); err != nil || n != 2 {
		t.Fatalf("Remaining = %d, %v; want 2", n, err)
	}
	var read []Record
	if _, err := Read(p, func(r Record) error { read = append(read, r); return nil }); err != nil || ids(read) != "r4,r5" {
		t.Fatalf("Read after the mark: %s, %v", ids(read), err)
	}
	lines := 0
	if err := Scan(p, func(Line) error { lines++; return nil }); err != nil || lines != 6 {
		t.Fatalf("Scan saw %d lines (%v), want all 6", lines, err)
	}
	// A later mark replaces the earlier one.
	if err := SaveMark(p, recs[4].End()); err != nil {
		t.Fatal(err)
	}
	if got, _ := replayAll(t, p, ReplayOptions{Exchange: "x"}); ids(got) != "r5" {
		t.Fatalf("replay after the second mark: %s, want r5", ids(got))
	}
	if err := Discard(p); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p, DonePath(p)} {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("%s after Discard: %v", f, err)
		}
	}
}

// A mark that does not fit its file is ignored: the file is read from its
// start (a message may come twice, none is skipped).
func TestMarkThatDoesNotFitIsIgnored(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, p string, ends []int64)
	}{
		{"file rewritten without its first records", func(t *testing.T, p string, ends []int64) {
			data, _ := os.ReadFile(p)
			if err := os.WriteFile(p, data[ends[1]:], 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"same size, other bytes", func(t *testing.T, p string, ends []int64) {
			data, _ := os.ReadFile(p)
			data[ends[2]-4] = 'Y' // the body of r2 ("body"}\n), just before the mark
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", func(t *testing.T, p string, ends []int64) {
			if err := os.WriteFile(DonePath(p), []byte("omqs-spool-mark 1 12 zz\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"a symbolic link", func(t *testing.T, p string, ends []int64) {
			good, _ := os.ReadFile(DonePath(p))
			other := filepath.Join(t.TempDir(), "mark")
			if err := os.WriteFile(other, good, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(DonePath(p))
			if err := os.Symlink(other, DonePath(p)); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := takenFile(t, 5)
			recs, _ := replayAll(t, p, ReplayOptions{Exchange: "x"})
			ends := make([]int64, len(recs))
			for i, r := range recs {
				ends[i] = r.End()
			}
			if err := SaveMark(p, ends[2]); err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, p, ends)
			want := "r0,r1,r2,r3,r4"
			if strings.HasPrefix(tc.name, "file rewritten") {
				want = "r2,r3,r4"
			}
			if got, _ := replayAll(t, p, ReplayOptions{Exchange: "x"}); ids(got) != want {
				t.Fatalf("replay: %s, want the file from its start: %s", ids(got), want)
			}
		})
	}
}

// SaveMark takes only the end of a line.
func TestSaveMarkRefusesMidLine(t *testing.T) {
	p := takenFile(t, 2)
	recs, _ := replayAll(t, p, ReplayOptions{Exchange: "x"})
	for _, off := range []int64{0, recs[0].End() - 1, recs[1].End() + 1} {
		if err := SaveMark(p, off); err == nil {
			t.Errorf("SaveMark(%d) = nil, want an error", off)
		}
	}
}

// Take removes the marks of replay files that are gone.
func TestTakeRemovesStaleMarks(t *testing.T) {
	p := takenFile(t, 2)
	recs, _ := replayAll(t, p, ReplayOptions{Exchange: "x"})
	if err := SaveMark(p, recs[0].End()); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil { // as a crash inside Discard leaves it
		t.Fatal(err)
	}
	s := New(p[:strings.LastIndex(p, ".replay.")])
	if _, err := s.Take(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(DonePath(p)); !os.IsNotExist(err) {
		t.Fatalf("stale mark: %v, want it removed", err)
	}
}

// Replay calls OnSetAside for every line it sets aside.
func TestReplayCountsLinesSetAside(t *testing.T) {
	p := takenFile(t, 2)
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("not a record\n{\"exchange\":\"other\",\"key\":\"k\"}\n")
	f.Close()
	n := 0
	_, res := replayAll(t, p, ReplayOptions{Exchange: "x", Aside: p + ".unreadable", OnSetAside: func() { n++ }})
	if n != 2 || res.SetAside() != 2 {
		t.Fatalf("OnSetAside called %d times, %d set aside; want 2", n, res.SetAside())
	}
}

// Append writes many large records in chunks of at most the chunk size; a
// record longer than that is written alone.
func TestAppendWritesInBoundedChunks(t *testing.T) {
	const chunk = 64 << 10
	s := New(filepath.Join(t.TempDir(), "backup.evt"))
	var writes []int
	s.SetChunkSize(chunk, func(n int) { writes = append(writes, n) })
	var recs []Record
	for i := range 40 {
		recs = append(recs, NewRecord("x", "k", fmt.Sprintf("r%d", i), time.Now(), []byte(strings.Repeat("a", 20<<10)), nil))
	}
	big := NewRecord("x", "k", "big", time.Now(), []byte(strings.Repeat("b", 100<<10)), nil)
	recs = append(recs[:20], append([]Record{big}, recs[20:]...)...)
	if err := s.Append(recs...); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	total, alone := 0, 0
	for _, n := range writes {
		total += n
		if n > chunk {
			alone++
			if n > 101<<10 {
				t.Errorf("a write of %d bytes: more than the one large record", n)
			}
		}
	}
	if alone != 1 || len(writes) < 10 {
		t.Fatalf("writes %v: want chunks of at most %d bytes and the large record alone", writes, chunk)
	}
	fi, err := os.Stat(s.Path())
	if err != nil || fi.Size() != int64(total) {
		t.Fatalf("file of %v bytes (%v), writes of %d", fi.Size(), err, total)
	}
	var got []Record
	if _, err := Read(s.Path(), func(r Record) error { got = append(got, r); return nil }); err != nil || len(got) != 41 || got[20].MessageID != "big" {
		t.Fatalf("read back %d records (%v)", len(got), err)
	}
}

// AppendEach builds each record only when it encodes it, and reports how
// many it wrote.
func TestAppendEachBuildsRecordsInTurn(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "backup.evt"))
	built, written := 0, 0
	s.SetChunkSize(1, func(int) { written++ }) // a write per record
	n, err := s.AppendEach(5, func(i int) Record {
		if built != written {
			t.Errorf("record %d built with %d built and %d written: want each written before the next is built", i, built, written)
		}
		built++
		return NewRecord("x", "k", fmt.Sprintf("r%d", i), time.Now(), []byte("b"), nil)
	})
	if err != nil || n != 5 {
		t.Fatalf("AppendEach = %d, %v", n, err)
	}
	s.Close()
}
