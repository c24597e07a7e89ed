package faulttest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faulttest"
	"github.com/omqs-go/omqs/internal/spool"
)

// TestManagerSurvivesCloseAllConnections sends 20,000 events while the
// broker closes every connection twice: every accepted event arrives (by
// unique message id), and the duplicates are counted.
func TestManagerSurvivesCloseAllConnections(t *testing.T) {
	faulttest.Require(t)
	r := runStream(t, streamOpts{
		path:  pathEvent,
		fault: faultSpec{name: "close_all_connections ×2", kind: faultKill, at: []float64{0.3, 0.6}},
		n:     20000, size: 100,
	})
	t.Logf("sent %d, accepted %d, delivered %d unique, %d duplicates, lost %d, recovered in %v; %s",
		r.sent, r.accepted, r.delivered, r.duplicates, r.lost, r.recover, r.notes)
}

// blockedManager is a Manager whose two lanes end in queues a collector
// reads, for the memory alarm tests.
type blockedManager struct {
	m          *omqs.Manager
	logs, evts *collector
	cfg        *omqs.Config
}

func newBlockedManager(t *testing.T, name string, expect int, opts ...omqs.Option) *blockedManager {
	t.Helper()
	cfg, names := testConfig(t)
	brokerURL := brokertest.URL(t)
	u := withParams(t, brokerURL, "", url.Values{"heartbeat": {"2"}})
	logQueue := names.Queue + ".logs"
	declareQueue(t, cfg.LogWorker.Exchange, logQueue, "#", false)
	declareQueue(t, cfg.EventWorker.Exchange, names.Queue, names.Key, true)
	b := &blockedManager{cfg: cfg}
	b.logs = startCollector(t, u, logQueue, name+" log collector", expect)
	b.evts = startCollector(t, u, names.Queue, name+" event collector", expect)
	sink := newLogSink(t)
	m, err := omqs.NewManager(append([]omqs.Option{omqs.WithConfig(cfg), omqs.WithURL(u),
		omqs.WithLogger(slog.New(sink)), omqs.WithName(name)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop(stopCtx(t, 10*time.Second)) })
	b.m = m
	return b
}

// block raises the memory alarm and waits until the broker blocked both of
// the Manager's connections (a connection is blocked once it publishes).
func (b *blockedManager) block(t *testing.T) (clear func()) {
	t.Helper()
	clear = faulttest.RaiseMemoryAlarm(t)
	if err := b.m.SendInfo("blocks the log connection"); err != nil {
		t.Fatal(err)
	}
	if err := b.m.SendEvent("blocks the event connection", ""); err != nil {
		t.Fatal(err)
	}
	faulttest.WaitFor(t, 30*time.Second, "the broker to block both connections", func() bool {
		st := b.m.Stats()
		return st.Logs.Blocked > 0 && st.Events.Blocked > 0
	})
	return clear
}

// waitDelivered waits until every accepted message of both lanes arrived
// (the two messages block sent included).
func (b *blockedManager) waitDelivered(t *testing.T, logs, events int) {
	t.Helper()
	faulttest.WaitFor(t, 3*time.Minute, fmt.Sprintf("%d logs and %d events to arrive", logs, events), func() bool {
		return b.logs.got.unique() >= logs && b.evts.got.unique() >= events
	})
	if n := b.logs.got.unique(); n != logs {
		t.Errorf("%d distinct logs arrived, want %d", n, logs)
	}
	if n := b.evts.got.unique(); n != events {
		t.Errorf("%d distinct events arrived, want %d", n, events)
	}
}

// TestManagerMemoryAlarm raises the broker's memory alarm and checks that
// Send* does not block on it: a goroutine makes 40,000 SendEvent and
// SendInfo calls (more than the buffers hold), and all of them return while
// the alarm is still on, nil or ErrBufferFull. Once the alarm clears, every
// accepted message arrives, and the Manager counted the time it was blocked.
func TestManagerMemoryAlarm(t *testing.T) {
	faulttest.Require(t)
	faulttest.Restore(t)
	const perLane = 20000
	b := newBlockedManager(t, namePrefix+" memory-alarm", perLane)
	clear := b.block(t)

	type result struct {
		accepted [2]int
		full     [2]int
		other    error
		lat      []time.Duration
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.lat = make([]time.Duration, 0, 2*perLane)
		for i := 0; i < perLane; i++ {
			for lane := 0; lane < 2; lane++ {
				msg := body("memory-alarm", i, 100)
				start := time.Now()
				var err error
				if lane == 0 {
					err = b.m.SendInfo(msg)
				} else {
					err = b.m.SendEvent(msg, "")
				}
				r.lat = append(r.lat, time.Since(start))
				switch {
				case err == nil:
					r.accepted[lane]++
				case errors.Is(err, omqs.ErrBufferFull):
					r.full[lane]++
				case r.other == nil:
					r.other = err
				}
			}
		}
		done <- r
	}()
	// The sender must finish while the broker still blocks the Manager.
	var r result
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("Send* calls did not return within 2 minutes while the broker was blocked: they block on the alarm")
	}
	st := b.m.Stats()
	blockedLogs, blockedEvents := st.Logs.Blocked, st.Events.Blocked
	if r.other != nil {
		t.Fatalf("Send* failed with %v, want nil or ErrBufferFull", r.other)
	}
	// Still blocked: the blocked time keeps growing.
	faulttest.WaitFor(t, 10*time.Second, "the Manager to be still blocked after the sends", func() bool {
		st := b.m.Stats()
		return st.Logs.Blocked > blockedLogs && st.Events.Blocked > blockedEvents
	})
	slices.Sort(r.lat)
	p := func(q float64) time.Duration { return r.lat[int(q*float64(len(r.lat)-1))] }
	t.Logf("%d Send* calls while blocked: median %v, p99 %v, p99.9 %v, max %v; logs accepted %d refused %d (ErrBufferFull), events accepted %d refused %d",
		len(r.lat), p(0.5), p(0.99), p(0.999), r.lat[len(r.lat)-1], r.accepted[0], r.full[0], r.accepted[1], r.full[1])
	if r.full[0] == 0 || r.full[1] == 0 {
		t.Errorf("no ErrBufferFull (logs %d, events %d): the buffers (%d) should have filled", r.full[0], r.full[1], b.cfg.Global.BufferSize)
	}

	clear()
	// Everything accepted arrives once the alarm is gone; the first
	// message of each lane is the one that got the connection blocked.
	b.waitDelivered(t, r.accepted[0]+1, r.accepted[1]+1)
	if err := b.m.Stop(stopCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	st = b.m.Stats()
	if st.Logs.Blocked <= 0 || st.Events.Blocked <= 0 {
		t.Errorf("Stats().Blocked: logs %v, events %v; want both > 0", st.Logs.Blocked, st.Events.Blocked)
	}
	t.Logf("blocked for %v (logs) and %v (events); %d log and %d event duplicates",
		st.Logs.Blocked.Round(time.Millisecond), st.Events.Blocked.Round(time.Millisecond),
		dups(b.logs.got), dups(b.evts.got))
}

func dups(s *idSet) int {
	total, unique := s.counts()
	return total - unique
}

// TestBurstWhileBlocked makes 1,000,000 Send* calls (half logs, half
// events) while the broker blocks the Manager: the accepted ones are bounded
// by the two buffers and the event publisher's in-flight window, the rest
// return ErrBufferFull, and the heap grows by no more than the accepted
// messages can take. Everything accepted arrives once the alarm clears.
func TestBurstWhileBlocked(t *testing.T) {
	faulttest.Require(t)
	faulttest.Restore(t)
	const (
		calls   = 1_000_000
		bufSize = 16384
		window  = 1024
		msgSize = 100
	)
	b := newBlockedManager(t, namePrefix+" burst", bufSize+window+2,
		omqs.WithBufferSize(bufSize), omqs.WithMaxInFlight(window))
	clear := b.block(t)

	before := heapAlloc()
	var accepted, full [2]int
	var other error
	start := time.Now()
	for i := 0; i < calls; i++ {
		lane := i % 2
		msg := body("burst", i, msgSize)
		var err error
		if lane == 0 {
			err = b.m.SendInfo(msg)
		} else {
			err = b.m.SendEvent(msg, "")
		}
		switch {
		case err == nil:
			accepted[lane]++
		case errors.Is(err, omqs.ErrBufferFull):
			full[lane]++
		case other == nil:
			other = err
		}
	}
	elapsed := time.Since(start)
	after := heapAlloc()
	if other != nil {
		t.Fatalf("Send* failed with %v, want nil or ErrBufferFull", other)
	}
	st := b.m.Stats()
	if st.Logs.Blocked == 0 || st.Events.Blocked == 0 {
		t.Fatalf("the broker did not block the Manager during the burst: %+v", st)
	}

	// What the Manager may hold while blocked: each lane's buffer, the
	// message its worker is handing over, and on the event lane the
	// publisher's window of unconfirmed messages (the message that got the
	// connection blocked took one slot of each lane already).
	maxLogs := bufSize + 1
	maxEvents := bufSize + 1 + window
	if accepted[0] > maxLogs || accepted[1] > maxEvents {
		t.Errorf("accepted %d logs and %d events; the buffers bound them to %d and %d", accepted[0], accepted[1], maxLogs, maxEvents)
	}
	if full[0]+full[1] < calls-maxLogs-maxEvents {
		t.Errorf("%d calls returned ErrBufferFull, want at least %d", full[0]+full[1], calls-maxLogs-maxEvents)
	}
	// The heap may grow by what the Manager can hold: at most maxLogs +
	// maxEvents messages, each costing its text twice (the Send* string in
	// the buffer, the []byte copy a worker takes) and bookkeeping (the
	// buffer's slots are allocated up front; a publisher's message record,
	// its AMQP properties and id: under 512 bytes), plus 4 MiB for the rest.
	held := accepted[0] + accepted[1]
	bound := int64(maxLogs+maxEvents)*(2*msgSize+512) + 4<<20
	growth := int64(after) - int64(before)
	t.Logf("%d Send* calls in %v while blocked: %d logs and %d events accepted, %d refused with ErrBufferFull; heap %.1f MiB before, %.1f MiB after (growth %.1f MiB, %.0f bytes per held message; bound %.1f MiB)",
		calls, elapsed.Round(time.Millisecond), accepted[0], accepted[1], full[0]+full[1],
		mib(before), mib(after), float64(growth)/(1<<20), float64(growth)/float64(max(held, 1)), float64(bound)/(1<<20))
	if growth > bound {
		t.Errorf("heap grew by %.1f MiB while blocked, more than the %.1f MiB the buffers can hold", float64(growth)/(1<<20), float64(bound)/(1<<20))
	}

	clear()
	b.waitDelivered(t, accepted[0]+1, accepted[1]+1)
	if err := b.m.Stop(stopCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
}

// heapAlloc returns the bytes of live heap objects after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// TestStallWithFullSocketBuffers stalls the event publisher's connection
// while 64 KiB events fill the socket buffers, so that a publish is blocked
// writing to the socket when the heartbeats notice the silence: the
// publisher must still drop the connection and reconnect within seconds,
// not when the kernel gives up on the socket.
func TestStallWithFullSocketBuffers(t *testing.T) {
	faulttest.Require(t)
	r := runStream(t, streamOpts{
		path:  pathEvent,
		fault: faultSpec{name: "stall, 64 KiB events", kind: faultStall, at: []float64{0.3}},
		n:     4000, size: 64 << 10,
	})
	t.Logf("%s", row(r))
}

// TestStopWhileBlockedSpoolsAndReplays stops a Manager while the broker
// blocks it: Stop's context ends, so what is not confirmed goes to the spool
// files and Stop says so (ErrNotConfirmed). A new Manager on the same spool
// folder replays them once the alarm cleared: every accepted message
// arrives.
func TestStopWhileBlockedSpoolsAndReplays(t *testing.T) {
	faulttest.Require(t)
	faulttest.Restore(t)
	const perLane = 3000
	b := newBlockedManager(t, namePrefix+" stop-blocked", perLane+1)
	clear := b.block(t)
	for i := 0; i < perLane; i++ {
		if err := b.m.SendInfo(body("stop-blocked", i, 100)); err != nil {
			t.Fatal(err)
		}
		if err := b.m.SendEvent(body("stop-blocked", i, 100), ""); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := b.m.Stop(ctx)
	if !errors.Is(err, omqs.ErrNotConfirmed) {
		t.Fatalf("Stop while blocked: %v, want ErrNotConfirmed", err)
	}
	st := b.m.Stats()
	t.Logf("Stop: %v; stats: logs %+v, events %+v", err, st.Logs, st.Events)
	spooled := func(file string) int {
		n := 0
		for _, p := range spoolFiles(t, b.cfg.Log.Folder, file) {
			if _, err := spool.Read(p, func(spool.Record) error { n++; return nil }); err != nil {
				t.Fatal(err)
			}
		}
		return n
	}
	logs, events := spooled("backup.log"), spooled("backup.evt")
	t.Logf("spooled: %d logs, %d events (accepted %d each)", logs, events, perLane+1)
	if logs+b.logs.got.unique() < perLane+1 || events+b.evts.got.unique() < perLane+1 {
		t.Fatalf("spooled %d logs and %d events, delivered %d and %d: fewer than the %d accepted per lane",
			logs, events, b.logs.got.unique(), b.evts.got.unique(), perLane+1)
	}

	clear()
	m2, err := omqs.NewManager(omqs.WithConfig(b.cfg), omqs.WithURL(withParams(t, brokertest.URL(t), "", nil)),
		omqs.WithLogger(slog.New(newLogSink(t))), omqs.WithName(namePrefix+" stop-blocked replay"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.Start(stopCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	b.waitDelivered(t, perLane+1, perLane+1)
	if err := m2.Stop(stopCtx(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if left := spooled("backup.log") + spooled("backup.evt"); left != 0 {
		t.Errorf("%d records left in the spool after the replay", left)
	}
	t.Logf("replayed: logs %d, events %d; duplicates: logs %d, events %d",
		m2.Stats().Logs.Replayed, m2.Stats().Events.Replayed, dups(b.logs.got), dups(b.evts.got))
}

// spoolFiles returns the spool file of that name in dir and the files moved
// aside for replay.
func spoolFiles(t *testing.T, dir, name string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, name+"*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
