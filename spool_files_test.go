package omqs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omqs-go/omqs/internal/safefile"
	"github.com/omqs-go/omqs/internal/spool"
)

// The spool's reader reads back every body the library publishes.
func TestMaxBodySizeMatchesSpool(t *testing.T) {
	if spool.MaxBody != MaxBodySize {
		t.Fatalf("spool.MaxBody = %d, MaxBodySize = %d", spool.MaxBody, MaxBodySize)
	}
}

// writeFile writes a file of the test, private as the library's are.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A Go Manager started in the folder of the original Python library replays
// its key:body spool lines (an empty event key meaning the default key),
// sets aside the line it cannot read instead of deleting it, and counts
// nothing as lost.
func TestManagerReplaysOriginalSpoolFiles(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		cfg, n := backendConfig(t, url)
		dir := cfg.Log.Folder
		writeFile(t, filepath.Join(dir, "backup.evt"), ":first: event\n"+n.Key+":second event\nnot a spool line\n")
		writeFile(t, filepath.Join(dir, "backup.log"), "info:log one\nwarning:log two\n")
		ch := backendChannel(t, url)
		if err := ch.ExchangeDeclare(cfg.LogWorker.Exchange, "topic", true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		logs := collect(t, url, cfg.LogWorker.Exchange, "#")
		m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
		waitUntil(t, 10*time.Second, "the replay", func() bool { st := m.Stats(); return st.Replayed == 4 && st.SetAside == 1 })
		logs.waitCount(t, 2, 10*time.Second)
		if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if st := m.Stats(); st.Dropped != 0 || st.Events.SetAside != 1 || st.Logs.Replayed != 2 || st.Events.Replayed != 2 {
			t.Fatalf("stats %+v", st)
		}
		var got []string
		for _, d := range logs.all() {
			got = append(got, d.RoutingKey+":"+string(d.Body))
			if d.MessageId == "" {
				t.Errorf("replayed log %q has no message id", d.Body)
			}
		}
		if strings.Join(got, ",") != "info:log one,warning:log two" {
			t.Errorf("logs %v", got)
		}
		events := consumeQueue(t, backendChannel(t, url), n.Queue)
		events.waitCount(t, 2, 10*time.Second)
		got = got[:0]
		for _, d := range events.all() {
			got = append(got, d.RoutingKey+":"+string(d.Body))
		}
		if want := n.Key + ":first: event," + n.Key + ":second event"; strings.Join(got, ",") != want {
			t.Errorf("events %v, want %s", got, want)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "backup.evt.unreadable")); err != nil || string(b) != "not a spool line\n" {
			t.Errorf("set aside %q, %v", b, err)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, "backup.*.replay.*")); len(left) != 0 {
			t.Errorf("replay files left: %v", left)
		}
	})
}

// A replayed record naming another exchange than the publisher's is set
// aside, not published there, and reported with the file it went to.
func TestEngineReplaySetsAsideOtherExchange(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	victim := n.Exchange + ".victim"
	ch := backendChannel(t, url)
	if err := ch.ExchangeDeclare(victim, "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	seen := collect(t, url, victim, "#")
	dir := t.TempDir()
	reported := make(chan error, 10)
	p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
		WithExchange(n.Exchange, "direct", false), WithQueue(n.Queue), WithQueueDurable(false), WithKeys(n.Key),
		WithSpoolDir(dir), WithErrorHandler(func(err error) { reported <- err }))
	if err != nil {
		t.Fatal(err)
	}
	sp := spool.New(p.e.sp.Path())
	if err := sp.Append(spool.NewRecord(victim, n.Key, "forged", time.Now(), []byte("forged"), nil),
		spool.NewRecord(n.Exchange, n.Key, "good", time.Now(), []byte("good"), nil)); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	ctx := testCtx(t, 20*time.Second)
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the replay", func() bool { st := p.Stats(); return st.Replayed == 1 && st.SetAside == 1 })
	select {
	case err := <-reported:
		if !strings.Contains(err.Error(), "1 for another exchange") || !strings.Contains(err.Error(), sp.AsidePath()) {
			t.Errorf("report %v, want the reason and %s", err, sp.AsidePath())
		}
	case <-ctx.Done():
		t.Fatal("no report")
	}
	if err := p.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	wantDepth(t, url, n.Queue, 1)
	if c := seen.count(); c != 0 {
		t.Errorf("%d message(s) published to the other exchange", c)
	}
}

// Start refuses a spool folder that others may write to: they could plant
// replay files or links there.
func TestStartRefusesFolderWritableByOthers(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	n := testNames(t, url)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	cfg := namedConfig(t, n)
	cfg.Log.Folder = dir
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	err = m.Start(testCtx(t, 10*time.Second))
	if !errors.Is(err, ErrInvalidConfig) || !errors.Is(err, safefile.ErrOpenFolder) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Manager.Start: %v, want ErrInvalidConfig naming %s", err, dir)
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(url), WithLogger(testLogger(t)),
		WithExchange(n.Exchange, "topic", false), WithQueue(""), WithSpoolDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(testCtx(t, 10*time.Second)); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("AsyncPublisher.Start: %v, want ErrInvalidConfig naming %s", err, dir)
	}
	if err := p.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// A publisher's spool file name comes from its exchange's name, which must
// not lead out of the folder.
func TestSpoolFileNameStaysInFolder(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é/", 120)
	names := map[string]bool{}
	for _, ex := range []string{"plain.exchange-1_x", "../../x", "..", "a/b", "a%2Fb", `a\b`, "", "\x00", long, long + "1"} {
		name := spoolFileName(ex)
		if strings.ContainsAny(name, `/\`+"\x00") || !strings.HasSuffix(name, ".spool") || len(name) > 180 {
			t.Errorf("spoolFileName(%q) = %q", ex, name)
		}
		if names[name] {
			t.Errorf("spoolFileName(%q) = %q, as for another exchange", ex, name)
		}
		names[name] = true
	}
	if got := spoolFileName("plain.exchange-1_x"); got != "plain.exchange-1_x.spool" {
		t.Errorf("a plain name became %q", got)
	}

	dir := t.TempDir()
	p, err := NewAsyncPublisher(WithConfig(DefaultConfig()), WithURL(memoryURL(t)), WithLogger(testLogger(t)),
		WithExchange("../../x", "topic", false), WithQueue(""), WithSpoolDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(testCtx(t, 10*time.Second))
	if got := filepath.Dir(p.e.sp.Path()); got != dir {
		t.Fatalf("spool file %s is outside %s", p.e.sp.Path(), dir)
	}
}
