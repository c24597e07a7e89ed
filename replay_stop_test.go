package omqs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/membroker"
	"github.com/omqs-go/omqs/internal/spool"
)

// pausable returns the URL clients should use so that the test can stop the
// broker from taking publishes (the in-process broker blocks them, as under
// a memory alarm; for RabbitMQ a TCP proxy stalls the connection) and let
// it go on again.
func pausable(t *testing.T, url string) (clientURL string, pause func(on bool)) {
	t.Helper()
	if isMemory(url) {
		b := membroker.Get(strings.TrimPrefix(url, "memory://"))
		t.Cleanup(func() { b.SetBlocked(false) })
		return url, b.SetBlocked
	}
	p := newProxy(t, url)
	t.Cleanup(func() { p.Stall(false) })
	return proxyURL(url, p), p.Stall
}

// replayFilesLeft returns how many lines the replay files of the spool file
// at path hold after their marks.
func replayFilesLeft(t *testing.T, path string) int {
	t.Helper()
	files, err := spool.New(path).Pending()
	if err != nil {
		t.Fatal(err)
	}
	left := 0
	for _, p := range files {
		n, err := spool.Remaining(p)
		if err != nil {
			t.Fatal(err)
		}
		left += n
	}
	return left
}

// Issue 11, item 2: Stop while a spool file is being replayed. Pending counts
// the records not sent yet; Stop with a short context says how many stay in
// which file; the next Manager on the folder sends only those (and the few
// that were in flight at Stop), not the part the broker already confirmed.
func TestStopDuringReplayResumesAfterConfirmed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, url string) {
		cfg, n := backendConfig(t, url)
		cfg.Global.MaxInFlight = 64
		const N = 3000
		ex := cfg.EventWorker.Exchange
		ch := backendChannel(t, url)
		if err := ch.ExchangeDeclare(ex, cfg.EventWorker.ExchangeType, cfg.EventWorker.ExchangeDurable, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		got := collect(t, url, ex, n.Key)
		evt := filepath.Join(cfg.Log.Folder, "backup.evt")
		sp := spool.New(evt)
		if _, err := sp.AppendEach(N, func(i int) spool.Record {
			return spool.NewRecord(ex, n.Key, fmt.Sprintf("r%05d", i), time.Now(), []byte(strings.Repeat("x", 100)), nil)
		}); err != nil {
			t.Fatal(err)
		}
		if err := sp.Close(); err != nil {
			t.Fatal(err)
		}

		clientURL, pause := pausable(t, url)
		m := startManager(t, WithConfig(cfg), WithURL(clientURL), WithLogger(testLogger(t)))
		t.Cleanup(func() { pause(false) }) // before the Manager's cleanup, should the test fail
		waitUntil(t, 30*time.Second, "a third of the spool replayed", func() bool { return m.Stats().Events.Replayed >= N/3 })
		pause(true)
		// Every record is confirmed or pending: in flight, or still in the
		// file.
		waitUntil(t, 10*time.Second, "Pending + Replayed = N", func() bool {
			_, pending := m.Pending()
			return uint64(pending)+m.Stats().Events.Replayed == N
		})
		replayed := m.Stats().Events.Replayed
		if replayed == N {
			t.Fatal("the whole spool was replayed before the pause")
		}

		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := m.Stop(ctx)
		replayed = m.Stats().Events.Replayed // some in flight may be confirmed while stopping
		left := replayFilesLeft(t, evt)
		spooled, err2 := sp.Count() // in flight at Stop: spooled again
		if err2 != nil {
			t.Fatal(err2)
		}
		spooled -= left
		if replayed+uint64(left+spooled) != N {
			t.Fatalf("%d replayed, %d left in the replay file, %d spooled at Stop: want %d in all", replayed, left, spooled, N)
		}
		if left == 0 || !errors.Is(err, ErrSpooled) ||
			!strings.Contains(err.Error(), fmt.Sprintf("%d message(s) read back from the spool were not sent", left)) ||
			!strings.Contains(err.Error(), evt+".replay.") {
			t.Fatalf("Stop: %v; want ErrSpooled naming the %d message(s) left in %s.replay.*", err, left, evt)
		}
		if _, pending := m.Pending(); pending != left {
			t.Errorf("Pending after Stop: %d events, want the %d left in the replay file", pending, left)
		}
		pause(false)

		// The next Manager sends the rest: every id arrives, and only those
		// that were in flight at Stop may come twice.
		m2 := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
		waitUntil(t, 60*time.Second, "every record, and the replay done", func() bool {
			_, pending := m2.Pending()
			return got.unique() == N && pending == 0
		})
		if err := m2.Stop(testCtx(t, 20*time.Second)); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		if dups := got.count() - N; dups > spooled {
			t.Fatalf("%d duplicates, want at most the %d in flight at Stop (%d were confirmed before it)", dups, spooled, replayed)
		}
		if left := replayFilesLeft(t, evt); left != 0 {
			t.Fatalf("%d records left in replay files after the second Manager", left)
		}
		if files, _ := filepath.Glob(evt + ".replay.*"); len(files) != 0 {
			t.Fatalf("files left: %v", files)
		}
	})
}

// A replay batch follows the resolved prefix of its file: records resolved
// out of order count once the ones before them are, a record that stays in
// the file stops the prefix for good, and the mark is saved every markEvery
// records and when the batch ends.
func TestReplayBatchMarksResolvedPrefix(t *testing.T) {
	dir := t.TempDir()
	sp := spool.New(filepath.Join(dir, "backup.evt"))
	const N = 3000
	if _, err := sp.AppendEach(N, func(i int) spool.Record {
		return spool.NewRecord("x", "k", fmt.Sprintf("r%05d", i), time.Now(), []byte("b"), nil)
	}); err != nil {
		t.Fatal(err)
	}
	files, err := sp.Take()
	if err != nil {
		t.Fatal(err)
	}
	sp.Close()
	path := files[0]
	var ends []int64
	if _, err := spool.Read(path, func(r spool.Record) error { ends = append(ends, r.End()); return nil }); err != nil {
		t.Fatal(err)
	}
	var reported []error
	kept := make(chan bool, 1)
	b := newReplayBatch(path, func(k bool) { kept <- k }, func(err error) { reported = append(reported, err) })
	b.remaining.Add(1) // the reading
	recs := make([]*replayRec, N)
	for i := range recs {
		b.remaining.Add(1)
		recs[i] = b.add(ends[i])
	}
	handled := func() int64 { b.mu.Lock(); defer b.mu.Unlock(); return b.handled }
	// 1 before 0: nothing until 0 is resolved too.
	recs[1].resolve()
	if h := handled(); h != 0 {
		t.Fatalf("prefix %d with record 0 unresolved", h)
	}
	recs[0].resolve()
	if h := handled(); h != ends[1] {
		t.Fatalf("prefix %d, want %d", h, ends[1])
	}
	for i := 2; i < 2000; i++ {
		recs[i].resolve()
	}
	b.saveMark(false) // more than markEvery resolved since the start
	if n, err := spool.Remaining(path); err != nil || n != N-2000 {
		t.Fatalf("after a mark, Remaining = %d, %v; want %d", n, err, N-2000)
	}
	// Record 2500 stays in the file: the mark stops before it.
	recs[2500].fail()
	b.remaining.Add(-1) // as a publish that Stop refused
	for i := 2000; i < N; i++ {
		if i != 2500 {
			recs[i].resolve()
		}
	}
	b.resolve() // the reading ends: the last resolve saves the final mark
	if k := recvWithin(t, kept); !k {
		t.Fatal("the file was removed with a record that stays in it")
	}
	if n, err := spool.Remaining(path); err != nil || n != N-2500 {
		t.Fatalf("final mark: Remaining = %d, %v; want %d (from the record that stayed)", n, err, N-2500)
	}
	if len(reported) != 0 {
		t.Fatalf("reported %v", reported)
	}
}

// A replay batch whose records are all resolved removes its file and mark.
func TestReplayBatchRemovesFinishedFile(t *testing.T) {
	sp := spool.New(filepath.Join(t.TempDir(), "backup.evt"))
	if err := sp.Append(spool.NewRecord("x", "k", "a", time.Now(), nil, nil), spool.NewRecord("x", "k", "b", time.Now(), nil, nil)); err != nil {
		t.Fatal(err)
	}
	files, _ := sp.Take()
	sp.Close()
	var ends []int64
	spool.Read(files[0], func(r spool.Record) error { ends = append(ends, r.End()); return nil })
	kept := make(chan bool, 1)
	b := newReplayBatch(files[0], func(k bool) { kept <- k }, func(err error) { t.Error(err) })
	b.remaining.Add(3)
	r0, r1 := b.add(ends[0]), b.add(ends[1])
	r0.resolve()
	b.saveMark(true)
	r1.resolve()
	b.resolve()
	if k := recvWithin(t, kept); k {
		t.Fatal("the file was kept")
	}
	if left, _ := filepath.Glob(files[0] + "*"); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}

// Issue 17, item 4: spoolMany hands the spool one record at a time, which
// writes them in bounded chunks: spooling many large messages never builds
// one buffer with all of them.
func TestSpoolManyWritesInBoundedChunks(t *testing.T) {
	url := memoryURL(t)
	c := engineConfigFor(t, url, 1, nil)
	sp := spool.New(filepath.Join(t.TempDir(), "engine.spool"))
	const chunk = 256 << 10
	var writes []int
	sp.SetChunkSize(chunk, func(n int) { writes = append(writes, n) })
	c.spool = sp
	e := newEngine(c)
	const N, size = 40, 64 << 10 // 2.5 MiB of bodies
	msgs := make([]*outMsg, N)
	for i := range msgs {
		m, err := e.newMsg("k", []byte(strings.Repeat("y", size)))
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	e.spoolMany(msgs, nil)
	if got := e.st.snapshot().Spooled; got != N {
		t.Fatalf("spooled %d, want %d", got, N)
	}
	total := 0
	for _, n := range writes {
		total += n
		if n > chunk {
			t.Fatalf("a write of %d bytes, above the chunk of %d", n, chunk)
		}
	}
	if total < N*size || len(writes) < N*size/chunk {
		t.Fatalf("%d bytes in %d writes for %d bodies of %d bytes", total, len(writes), N, size)
	}
	if cnt, err := sp.Count(); err != nil || cnt != N {
		t.Fatalf("spool holds %d (%v), want %d", cnt, err, N)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
}

func recvWithin(t *testing.T, c <-chan bool) bool {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("the batch did not end")
		return false
	}
}
