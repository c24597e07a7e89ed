//go:build linux

package journal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

const testSeg = 16 << 10

func open(t testing.TB, dir string, o Options) *Journal {
	t.Helper()
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// readAll reads every entry ready now.
func readAll(j *Journal) []Entry {
	var es []Entry
	for {
		e, ok := j.Reader().TryNext()
		if !ok {
			return es
		}
		es = append(es, e)
	}
}

func appendN(t testing.TB, j *Journal, from, n int) []uint64 {
	t.Helper()
	var ps []uint64
	for i := from; i < from+n; i++ {
		p, err := j.Append("key."+strconv.Itoa(i%7), "body "+strconv.Itoa(i), "id-"+strconv.Itoa(i), int64(i), byte(i%2))
		if err != nil {
			t.Fatalf("Append %d: %v", i, err)
		}
		ps = append(ps, p)
	}
	return ps
}

func checkSeq(t *testing.T, es []Entry, want []int) {
	t.Helper()
	if len(es) != len(want) {
		t.Fatalf("read %d entries, want %d", len(es), len(want))
	}
	for k, e := range es {
		i := want[k]
		if string(e.Body) != "body "+strconv.Itoa(i) || string(e.Key) != "key."+strconv.Itoa(i%7) ||
			string(e.ID) != "id-"+strconv.Itoa(i) || e.TS != int64(i) || e.Lane != byte(i%2) {
			t.Fatalf("entry %d = {%q %q %q %d %d}, want message %d", k, e.Key, e.ID, e.Body, e.TS, e.Lane, i)
		}
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestAppendReadAcrossSegments(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: testSeg, MaxBytes: 1 << 20})
	ps := appendN(t, j, 0, 2000) // about 60 bytes each: several segments
	es := readAll(j)
	checkSeq(t, es, seq(0, 2000))
	for k, e := range es {
		if e.Pos != ps[k] {
			t.Fatalf("entry %d at %d, Append said %d", k, e.Pos, ps[k])
		}
	}
	j.Confirm(es[len(es)-1].Next)
	st := j.Stats()
	if st.Confirmed != st.Tail || st.Read != st.Tail {
		t.Fatalf("stats %+v: want confirmed = read = tail", st)
	}
	// Confirmed segments are retired in the background.
	deadline := time.Now().Add(5 * time.Second)
	for j.Stats().Segments > 1+ahead {
		if time.Now().After(deadline) {
			t.Fatalf("segments not retired: %+v", j.Stats())
		}
		runtime.Gosched()
	}
}

func TestReopenResumesAfterConfirmed(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentSize: testSeg}
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, j, 0, 1000)
	es := readAll(j)
	j.Confirm(es[599].Next)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = open(t, dir, o)
	if r := j.Recovery(); r.Entries != 400 || r.Corrupt != 0 || r.Torn != 0 {
		t.Fatalf("recovery %+v, want 400 entries", r)
	}
	appendN(t, j, 1000, 100)
	checkSeq(t, readAll(j), seq(600, 1100))
}

func TestConcurrentAppendersOneReader(t *testing.T) {
	const appenders, each = 4, 20000
	j := open(t, t.TempDir(), Options{SegmentSize: 64 << 10, MaxBytes: 256 << 10})
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				_, err := j.Append("k", strconv.Itoa(g)+":"+strconv.Itoa(i), "", 0, byte(g))
				switch {
				case err == nil:
					i++
				case errors.Is(err, ErrFull):
					runtime.Gosched() // the reader confirms and frees room
				default:
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan error, 1)
	go func() {
		var next [appenders]int
		r := j.Reader()
		for {
			e, ok := r.Next()
			if !ok {
				break
			}
			var g, i int
			if _, err := fmt.Sscanf(string(e.Body), "%d:%d", &g, &i); err != nil || int(e.Lane) != g {
				done <- fmt.Errorf("entry %q lane %d", e.Body, e.Lane)
				return
			}
			if i != next[g] {
				done <- fmt.Errorf("appender %d: read %d, want %d", g, i, next[g])
				return
			}
			next[g]++
			j.Confirm(e.Next)
		}
		for g, n := range next {
			if n != each {
				done <- fmt.Errorf("appender %d: read %d entries, want %d", g, n, each)
				return
			}
		}
		done <- nil
	}()
	wg.Wait()
	j.Seal()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append("k", "late", "", 0, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Seal: %v, want ErrClosed", err)
	}
	if st := j.Stats(); st.Err != nil || st.Segments+st.Spares > 256/64+4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSealWakesReader(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: testSeg})
	got := make(chan bool)
	go func() {
		_, ok := j.Reader().Next()
		got <- ok
	}()
	// Next sleeps after its spins; Seal must wake it either way.
	j.Seal()
	if ok := <-got; ok {
		t.Fatal("Next returned an entry from an empty, sealed journal")
	}
}

func TestReaderWakesOnAppend(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: testSeg})
	got := make(chan string)
	go func() {
		for {
			e, ok := j.Reader().Next()
			if !ok {
				close(got)
				return
			}
			got <- string(e.Body)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !j.Reader().sleeping.Load() { // let the reader fall asleep
		if time.Now().After(deadline) {
			t.Fatal("reader never slept")
		}
		runtime.Gosched()
	}
	if _, err := j.Append("k", "wake up", "", 0, 0); err != nil {
		t.Fatal(err)
	}
	if b := <-got; b != "wake up" {
		t.Fatalf("read %q", b)
	}
	j.Seal()
	if _, ok := <-got; ok {
		t.Fatal("entry after Seal")
	}
}

func TestQuota(t *testing.T) {
	j := open(t, t.TempDir(), Options{SegmentSize: testSeg, MaxBytes: 2 * testSeg})
	body := string(make([]byte, 1000))
	n := 0
	for ; ; n++ {
		_, err := j.Append("k", body, "", 0, 0)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := 2 * testSeg / int(entrySize(1, 0, 1000)); n < want-2 || n > want {
		t.Fatalf("%d entries fit in the quota, want about %d", n, want)
	}
	es := readAll(j)
	j.Confirm(es[9].Next)
	for range 10 {
		if _, err := j.Append("k", body, "", 0, 0); err != nil {
			t.Fatalf("after confirming 10: %v", err)
		}
	}
	if _, err := j.Append("k", body, "", 0, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("Append = %v, want ErrFull", err)
	}
	if _, err := j.Append("k", string(make([]byte, testSeg)), "", 0, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append larger than a segment = %v, want ErrTooLarge", err)
	}
	if _, err := j.Append(string(make([]byte, 256)), "", "", 0, 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append with a 256-byte key = %v, want ErrTooLarge", err)
	}
}

func TestSyncPolicies(t *testing.T) {
	for _, s := range []Sync{SyncNone, SyncInterval(time.Millisecond), SyncEvery} {
		t.Run(s.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{SegmentSize: testSeg, Sync: s}
			j, err := Open(dir, o)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, j, 0, 500)
			es := readAll(j)
			j.Confirm(es[99].Next)
			if st := j.Stats(); st.Err != nil {
				t.Fatal(st.Err)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j = open(t, dir, o)
			checkSeq(t, readAll(j), seq(100, 500))
		})
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{SegmentSize: 1000},
		{SegmentSize: 8 << 10},
		{SegmentSize: 1 << 33},
		{MaxBytes: -1},
		{Sync: SyncInterval(0)},
	} {
		if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Open(%+v) = %v, want ErrInvalidOptions", o, err)
		}
	}
	// A journal keeps the segment size it was made with.
	dir := t.TempDir()
	j, err := Open(dir, Options{SegmentSize: testSeg})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, j, 0, 1000)
	j.Close()
	j = open(t, dir, Options{SegmentSize: 1 << 20})
	if j.segSize != testSeg {
		t.Fatalf("segment size %d, want %d", j.segSize, testSeg)
	}
	checkSeq(t, readAll(j), seq(0, 1000))
}

func TestSecondOpenInProcessIsLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{SegmentSize: testSeg})
	_, err := Open(dir, Options{SegmentSize: testSeg})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

// segFile returns the path of the segment holding position pos.
func segFile(dir string, pos uint64, segSize uint64) string {
	return filepath.Join(dir, fmt.Sprintf("seg-%016x.jnl", pos&^(segSize-1)))
}

// TestDamagedEntries damages one entry of a closed journal in each way a
// crash or a disk can, and checks that Open skips that entry only.
func TestDamagedEntries(t *testing.T) {
	cases := []struct {
		name          string
		damage        func(t *testing.T, path string, off int64)
		corrupt, torn int
	}{
		{"body byte flipped", func(t *testing.T, path string, off int64) { flip(t, path, off+hdrSize+8) }, 1, 0},
		{"checksum flipped", func(t *testing.T, path string, off int64) { flip(t, path, off+5) }, 1, 0},
		{"body length flipped", func(t *testing.T, path string, off int64) { flip(t, path, off+25) }, 1, 0},
		{"key length flipped", func(t *testing.T, path string, off int64) { flip(t, path, off+28) }, 1, 0},
		{"commit word missing", func(t *testing.T, path string, off int64) { writeAt(t, path, off, make([]byte, 4)) }, 0, 1},
		{"position flipped", func(t *testing.T, path string, off int64) { flip(t, path, off+9) }, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			j, err := Open(dir, Options{SegmentSize: testSeg})
			if err != nil {
				t.Fatal(err)
			}
			ps := appendN(t, j, 0, 10)
			j.Close()
			c.damage(t, segFile(dir, ps[5], testSeg), int64(ps[5]&(testSeg-1)))

			j = open(t, dir, Options{SegmentSize: testSeg})
			if r := j.Recovery(); r.Entries != 9 || r.Corrupt != c.corrupt || r.Torn != c.torn {
				t.Fatalf("recovery %+v, want 9 entries, %d corrupt, %d torn", r, c.corrupt, c.torn)
			}
			checkSeq(t, readAll(j), []int{0, 1, 2, 3, 4, 6, 7, 8, 9})
			// Appends go on after the last valid entry.
			appendN(t, j, 10, 5)
			checkSeq(t, readAll(j), seq(10, 15))
		})
	}
}

// TestTornTail cuts the last segment in the middle of its last entry, as a
// crash of the machine can leave it.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{SegmentSize: testSeg})
	if err != nil {
		t.Fatal(err)
	}
	ps := appendN(t, j, 0, 10)
	j.Close()
	path := segFile(dir, ps[9], testSeg)
	if err := os.Truncate(path, int64(ps[9]&(testSeg-1))+hdrSize+3); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{SegmentSize: testSeg})
	if r := j.Recovery(); r.Entries != 9 || r.Corrupt+r.Torn != 1 || r.To != ps[9] {
		t.Fatalf("recovery %+v, want 9 entries and 1 skipped, appends from %d", r, ps[9])
	}
	appendN(t, j, 100, 1)
	checkSeq(t, readAll(j), append(seq(0, 9), 100))
}

// TestRecoverCopyTakenMidWrite copies the journal's files while appenders
// write, as a crash would leave them, and checks that the copy holds every
// entry whose Append returned before the copy began.
func TestRecoverCopyTakenMidWrite(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{SegmentSize: 64 << 10, MaxBytes: 16 << 20})
	const appenders = 3
	var (
		mu       sync.Mutex
		accepted [appenders]int // entries each appender had appended
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for g := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := j.Append("k", strconv.Itoa(g)+":"+strconv.Itoa(i), "", 0, byte(g)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				accepted[g] = i + 1
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for j.Stats().Tail < 200<<10 { // a few segments
		if time.Now().After(deadline) {
			t.Fatal("appenders too slow")
		}
		runtime.Gosched()
	}
	mu.Lock()
	before := accepted
	mu.Unlock()
	cp := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == "LOCK" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cp, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()

	c := open(t, cp, Options{SegmentSize: 64 << 10, MaxBytes: 16 << 20})
	var next [appenders]int
	for _, e := range readAll(c) {
		var g, i int
		fmt.Sscanf(string(e.Body), "%d:%d", &g, &i)
		if i != next[g] {
			t.Fatalf("appender %d: recovered %d, want %d", g, i, next[g])
		}
		next[g]++
	}
	for g := range appenders {
		if next[g] < before[g] {
			t.Errorf("appender %d: %d entries recovered, %d were appended before the copy", g, next[g], before[g])
		}
	}
	t.Logf("recovery %+v; appended before the copy %v, recovered %v", c.Recovery(), before, next)
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
