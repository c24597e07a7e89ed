package omqs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/journal"
)

// journalQuota keeps the tests' journals small: 1 MiB segments.
const journalQuota = 4 << 20

// journalConfig is backendConfig with a journal in a temp dir.
func journalConfig(t *testing.T, url string) (*Config, string, string) {
	t.Helper()
	cfg, n := backendConfig(t, url)
	dir := t.TempDir()
	cfg.Global.Journal = dir
	cfg.Global.JournalMaxBytes = journalQuota
	return cfg, dir, n.Key
}

func TestManagerJournalRoundTrip(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerJournalRoundTrip)
}

func testManagerJournalRoundTrip(t *testing.T, url string) {
	cfg, dir, _ := journalConfig(t, url)
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	logs := collect(t, url, cfg.LogWorker.Exchange, "#")
	events := collect(t, url, cfg.EventWorker.Exchange, "#")
	before := time.Now().Add(-time.Second)
	const N = 3000
	for i := range N {
		if err := m.SendEvent(fmt.Sprintf("event %d", i), ""); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if i%10 == 0 {
			if err := m.SendLog(fmt.Sprintf("log %d", i), "audit.x"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := m.Stop(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if l, e := m.Pending(); l+e != 0 {
		t.Errorf("Pending after Stop = %d, %d", l, e)
	}
	st := m.Stats()
	if st.Accepted != N+N/10 || st.Confirmed != N+N/10 {
		t.Errorf("Accepted %d, Confirmed %d; want %d", st.Accepted, st.Confirmed, N+N/10)
	}
	events.waitCount(t, N, 10*time.Second)
	logs.waitCount(t, N/10, 10*time.Second)
	if u := events.unique(); u != N {
		t.Errorf("%d unique event ids, want %d", u, N)
	}
	for i, d := range events.all() {
		if want := fmt.Sprintf("event %d", i); string(d.Body) != want {
			t.Fatalf("event %d is %q, want %q (order)", i, d.Body, want)
		}
		if d.MessageId == "" || d.Timestamp.Before(before.Truncate(time.Second)) {
			t.Fatalf("event %d: id %q, timestamp %v", i, d.MessageId, d.Timestamp)
		}
	}
	// Everything was confirmed: a journal opened on the folder holds nothing.
	for _, lane := range []string{"log", "event"} {
		j, err := journal.Open(filepath.Join(dir, lane), journal.Options{SegmentSize: journalSegment(journalQuota), MaxBytes: journalQuota})
		if err != nil {
			t.Fatal(err)
		}
		if r := j.Recovery(); r.Entries != 0 {
			t.Errorf("%s journal: %d entries left unconfirmed", lane, r.Entries)
		}
		j.Close()
	}
}

// A journal left with unconfirmed entries (a process that died) is
// published again, with the original ids, by the next Manager on its folder.
func TestManagerJournalRedeliversUnconfirmed(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerJournalRedelivers)
}

func testManagerJournalRedelivers(t *testing.T, url string) {
	cfg, dir, key := journalConfig(t, url)
	j, err := journal.Open(filepath.Join(dir, "event"), journal.Options{SegmentSize: journalSegment(journalQuota), MaxBytes: journalQuota})
	if err != nil {
		t.Fatal(err)
	}
	const N = 50
	ts := time.Now().Add(-time.Hour).Truncate(time.Second)
	for i := range N {
		if _, err := j.Append(key, fmt.Sprintf("before the crash %d", i), fmt.Sprintf("old-id-%d", i), ts.UnixNano(), eventLane); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil { // not confirmed
		t.Fatal(err)
	}

	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	got := consumeQueue(t, backendChannel(t, url), cfg.EventWorker.Queue)
	got.waitCount(t, N, 10*time.Second)
	for i, d := range got.all() {
		if want := fmt.Sprintf("old-id-%d", i); d.MessageId != want || string(d.Body) != fmt.Sprintf("before the crash %d", i) {
			t.Fatalf("delivery %d: id %q body %q, want id %q", i, d.MessageId, d.Body, want)
		}
		if !d.Timestamp.Equal(ts) {
			t.Errorf("delivery %d: timestamp %v, want the original %v", i, d.Timestamp, ts)
		}
	}
	waitUntil(t, 10*time.Second, "recovered messages confirmed", func() bool {
		l, e := m.Pending()
		return l+e == 0
	})
	if st := m.Stats(); st.Events.Recovered != N || st.Events.Confirmed != N {
		t.Errorf("Recovered %d, Confirmed %d; want %d", st.Events.Recovered, st.Events.Confirmed, N)
	}
}

func TestManagerJournalLocked(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, dir, _ := journalConfig(t, url)
	startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	m2, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = m2.Start(testCtx(t, 10*time.Second))
	if !errors.Is(err, ErrJournalLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Start on the folder: %v; want ErrJournalLocked naming %s", err, dir)
	}
	if err := m2.SendInfo("x"); !errors.Is(err, ErrStopped) {
		t.Errorf("Send after the failed Start: %v", err)
	}
	if err := m2.Stop(context.Background()); err != nil {
		t.Errorf("Stop after the failed Start: %v", err)
	}
}

// A full journal is ErrBufferFull; confirmed entries make room again, and
// Send*Context waits for it.
func TestManagerJournalFull(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, _, _ := journalConfig(t, url)
	cfg.Global.JournalMaxBytes = 64 << 10
	w := &blockingWorker{release: make(chan struct{})}
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithLogWorker(w))
	body := strings.Repeat("x", 1000)
	sent := 0
	for ; ; sent++ {
		err := m.SendInfo(body)
		if errors.Is(err, ErrBufferFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if sent > 1000 {
			t.Fatal("a 64 KiB journal took 1000 messages of 1 KB")
		}
	}
	if sent < 50 {
		t.Fatalf("only %d messages fit in 64 KiB", sent)
	}
	if r := m.Stats().Logs.Refused; r != 1 {
		t.Errorf("Stats().Logs.Refused = %d, want the 1 refusal", r)
	}
	if l, _ := m.Pending(); l != sent {
		t.Errorf("Pending = %d, want %d", l, sent)
	}
	done := make(chan error, 1)
	go func() { done <- m.SendLogContext(testCtx(t, 10*time.Second), "after room", "") }()
	close(w.release)
	if err := <-done; err != nil {
		t.Fatalf("SendLogContext waiting for room: %v", err)
	}
	waitUntil(t, 10*time.Second, "all delivered", func() bool { return len(w.bodies()) == sent+1 })
	waitUntil(t, 10*time.Second, "all resolved", func() bool { l, _ := m.Pending(); return l == 0 })
}

func TestManagerJournalSendAllocs(t *testing.T) {
	url := memoryURL(t)
	cfg, _, _ := journalConfig(t, url)
	cfg.Global.JournalMaxBytes = 64 << 20
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	if n := testing.AllocsPerRun(1000, func() {
		if err := m.SendInfo("hello journal"); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("SendInfo with the journal: %v allocations, want 0", n)
	}
}

func TestJournalSyncSetting(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"", "none", true}, {"none", "none", true}, {"EVERY", "every", true},
		{"interval:10", "interval(10ms)", true}, {"interval:0", "", false}, {"interval:x", "", false}, {"sometimes", "", false},
	} {
		s, err := parseJournalSync(tc.in)
		if (err == nil) != tc.ok || (tc.ok && s.String() != tc.want) {
			t.Errorf("parseJournalSync(%q) = %v, %v", tc.in, s, err)
		}
	}
	if _, err := NewManager(WithConfig(DefaultConfig()), WithJournal("")); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("WithJournal(\"\"): %v", err)
	}
}

func TestAppendMessageID(t *testing.T) {
	var buf [40]byte
	a, b := string(appendMessageID(buf[:0])), newMessageID()
	if a == b || !strings.HasPrefix(a, idPrefix) || len(a) != len(b) && len(a)+1 != len(b) {
		t.Errorf("appendMessageID %q, newMessageID %q", a, b)
	}
}

// A custom worker that wraps the built-in one (and changes each message)
// works with the journal: every entry is confirmed once the broker confirmed
// its message.
func TestManagerJournalWrappedBuiltinWorker(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	cfg, dir, _ := journalConfig(t, url)
	w := &stampingWorker{EventMsgWorker: NewEventMsgWorker()}
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithEventWorker(w))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := collect(t, url, cfg.EventWorker.Exchange, "#")
	const N = 500
	for i := range N {
		if err := m.SendEvent(fmt.Sprintf("event %d", i), ""); err != nil {
			t.Fatal(err)
		}
	}
	got.waitCount(t, N, 10*time.Second)
	waitUntil(t, 10*time.Second, "the journal confirmed", func() bool { _, e := m.Pending(); return e == 0 })
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if b := string(got.all()[N-1].Body); b != fmt.Sprintf("EVENT %d", N-1) {
		t.Errorf("last body %q: the wrapper's change is lost", b)
	}
	j, err := journal.Open(filepath.Join(dir, "event"), journal.Options{SegmentSize: journalSegment(journalQuota), MaxBytes: journalQuota})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if r := j.Recovery(); r.Entries != 0 {
		t.Errorf("%d entries left unconfirmed", r.Entries)
	}
}
