package faulttest_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/faultproxy"
	"github.com/omqs-go/omqs/internal/faulttest"
)

// pathKind is what a stream goes through.
type pathKind string

const (
	// pathLog: Manager.SendLogContext -> LogMsgWorker (SyncPublisher) ->
	// log exchange -> a queue bound with "#" -> a plain collector.
	pathLog pathKind = "log"
	// pathEvent: Manager.SendEventContext -> EventMsgWorker (AsyncPublisher)
	// -> event exchange -> the event queue -> a plain collector.
	pathEvent pathKind = "event"
	// pathConsumer: Manager.SendEventContext -> the event queue ->
	// EventMsgConsumer; proxy faults hit the consumer's connection.
	pathConsumer pathKind = "consumer"
)

// faultKind is how a fault breaks things.
type faultKind int

const (
	faultKill    faultKind = iota // rabbitmqctl close_all_connections
	faultRestart                  // rabbitmqctl stop_app, start_app
	faultCut                      // proxy: connections closed, new ones refused for a while
	faultStall                    // proxy: open connections go silent; heartbeats must notice
	faultSlow                     // proxy: every chunk delayed
	faultAlarm                    // rabbitmqctl set_vm_memory_high_watermark 0.000001
)

// breaks reports whether the fault ends connections (recovery then means a
// new connection that carries traffic).
func (k faultKind) breaks() bool {
	return k == faultKill || k == faultRestart || k == faultCut || k == faultStall
}

func (k faultKind) proxied() bool { return k == faultCut || k == faultStall || k == faultSlow }

// faultSpec is one row kind of the matrix.
type faultSpec struct {
	name string
	kind faultKind
	at   []float64     // progress (fraction of the stream delivered) at which to inject, one per injection
	hold time.Duration // how long the fault stays (restart, cut, slow, alarm)
	slow time.Duration // per-chunk delay of faultSlow
	// reconnectTimes, when not 0, is the Manager's RECONNECT_TIMES (at a
	// RECONNECT_INTERVAL of 200ms; default 25): a fault longer than that
	// many attempts makes the publishers write to their spool files.
	reconnectTimes int
}

// streamOpts describe one case.
type streamOpts struct {
	path  pathKind
	fault faultSpec
	n     int // messages
	size  int // bytes per message body
}

// sample is the state of a stream's client at one moment.
type sample struct {
	at         time.Time
	progress   uint64 // confirms and replays (publishing paths) or deliveries (consumer path)
	reconnects uint64 // publisher reconnections
	losses     int    // connections lost, as the client saw them
	ready      bool   // consumer Ready (always true on publishing paths)
	blocked    time.Duration
}

func (s sample) same(o sample) bool {
	return s.progress == o.progress && s.reconnects == o.reconnects && s.losses == o.losses &&
		s.ready == o.ready && s.blocked == o.blocked
}

// history keeps the samples where something changed.
type history struct {
	mu      sync.Mutex
	samples []sample
}

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.samples); n > 0 && h.samples[n-1].same(s) {
		return
	}
	h.samples = append(h.samples, s)
}

// since returns a copy of the samples taken at or after t, and the one
// before them.
func (h *history) since(t time.Time) []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := sort.Search(len(h.samples), func(i int) bool { return !h.samples[i].at.Before(t) })
	return append([]sample(nil), h.samples[max(i-1, 0):]...)
}

// injection is one fault put in place.
type injection struct {
	start   time.Time // the action began
	end     time.Time // the fault was in place
	cleared time.Time // the fault was removed (alarm, slow); zero otherwise
	base    sample    // just before start
}

// stream is one case being run.
type stream struct {
	t       *testing.T
	o       streamOpts
	name    string // connection name prefix of the case's clients
	cfg     *omqs.Config
	proxy   *faultproxy.Proxy
	m       *omqs.Manager
	pubName string // the lane's publisher name, as its log lines say it
	sink    *logSink
	got     *idSet
	cons    *omqs.EventMsgConsumer
	coll    *collector

	consLosses atomic.Int32
	sent       atomic.Int64
	accepted   atomic.Int64
	refused    atomic.Int64
	acceptedAt []bool // by sequence number; written by the sender only
	firstErr   atomic.Value
	senderDone chan struct{}

	// The sender waits before message gates[k].at until fault k begins, and
	// before gates[k].after until it is in place: the stream is sending
	// while the fault lands, and goes on after it.
	gates []gate

	hist history
}

// gate holds the sender back at a point of the stream until a fault began
// (begun is closed) and until it is in place (placed is closed).
type gate struct {
	at, after     int
	begun, placed chan struct{}
}

// result is one row of the matrix.
type result struct {
	path        pathKind
	fault       string
	sent        int
	accepted    int
	refused     int
	delivered   int // unique message ids
	duplicates  int // deliveries beyond the first, whether the callback saw them or not
	cbDup       int // duplicates that reached the callback (consumer path, de-duplication on); -1 for other paths
	redelivered int
	lost        int
	recover     []time.Duration
	elapsed     time.Duration
	notes       string
}

// runStream runs one case: a stream of o.n messages with o.fault injected
// along the way. It fails t when a message is lost or a fault is not
// recovered from, and returns what it measured.
func runStream(t *testing.T, o streamOpts) (res result) {
	faulttest.Restore(t)
	res = result{path: o.path, fault: o.fault.name}
	s := &stream{t: t, o: o, acceptedAt: make([]bool, o.n), got: newIDSet(o.n), senderDone: make(chan struct{})}
	s.name = fmt.Sprintf("%s %s %s", namePrefix, o.path, strings.ReplaceAll(o.fault.name, " ", "-"))
	for _, at := range o.fault.at {
		from := int(at * float64(o.n))
		s.gates = append(s.gates, gate{
			at: min(o.n, from+o.n/10), after: min(o.n, from+o.n/5),
			begun: make(chan struct{}), placed: make(chan struct{}),
		})
	}
	s.setup()

	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	senderDone := s.senderDone
	go s.send(ctx, senderDone)
	monitorStop, monitorDone := make(chan struct{}), make(chan struct{})
	go s.monitor(monitorStop, monitorDone)
	stopped := false
	stopBackground := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-senderDone
		close(monitorStop)
		<-monitorDone
	}
	defer stopBackground()

	// Inject each fault once the stream got that far, and wait for the
	// client to recover before the next one.
	for i, at := range o.fault.at {
		want := int(at * float64(o.n))
		s.waitProgress(fmt.Sprintf("%d of %d messages delivered before fault %d", want, o.n, i+1), want)
		inj := s.inject(i)
		rec, err := s.awaitRecovery(inj, 90*time.Second)
		if err != nil {
			t.Errorf("fault %d (%s): %v", i+1, o.fault.name, err)
		}
		res.recover = append(res.recover, rec)
	}

	// Let the stream finish: every accepted message must arrive.
	select {
	case <-senderDone:
	case <-time.After(10 * time.Minute):
		t.Fatalf("the sender did not finish")
	}
	s.waitAll()
	res.elapsed = time.Since(start)
	stopBackground()

	if err := s.m.Stop(stopCtx(t, time.Minute)); err != nil {
		t.Errorf("Manager.Stop: %v", err)
	}
	if s.cons != nil {
		if err := s.cons.Stop(stopCtx(t, time.Minute)); err != nil {
			t.Errorf("consumer Stop: %v", err)
		}
	}
	if v := s.firstErr.Load(); v != nil {
		t.Errorf("sender: %v", v)
	}
	res.sent, res.accepted, res.refused = int(s.sent.Load()), int(s.accepted.Load()), int(s.refused.Load())
	total, unique := s.got.counts()
	res.delivered, res.duplicates, res.cbDup = unique, total-unique, -1
	if s.cons != nil {
		// The callback saw total-unique duplicates; the de-duplication
		// window dropped the others.
		res.cbDup = total - unique
		res.duplicates = res.cbDup + int(s.cons.Stats().Duplicates)
	}
	s.got.mu.Lock()
	res.redelivered = s.got.redelivered
	s.got.mu.Unlock()
	res.lost = res.accepted - res.delivered
	if missing, n := s.got.missing(s.acceptedAt, 20); n > 0 {
		t.Errorf("%d accepted message(s) never arrived, among them sequence numbers %v", n, missing)
	}
	if res.lost != 0 {
		t.Errorf("lost %d of %d accepted messages (%d unique delivered)", res.lost, res.accepted, res.delivered)
	}
	res.notes = s.notes(res)
	return res
}

// setup builds the topology, the Manager, and the collector or consumer.
func (s *stream) setup() {
	t := s.t
	cfg, names := testConfig(t)
	if s.o.fault.reconnectTimes > 0 {
		cfg.Global.ReconnectTimes = s.o.fault.reconnectTimes
	}
	s.cfg = cfg
	brokerURL := brokertest.URL(t)
	hb := url.Values{"heartbeat": {"2"}}
	direct := withParams(t, brokerURL, "", hb)
	mgrURL, consURL := direct, direct
	if s.o.fault.kind.proxied() {
		s.proxy = newProxy(t, brokerURL)
		via := withParams(t, brokerURL, s.proxy.Addr(), hb)
		if s.o.path == pathConsumer {
			consURL = via
		} else {
			mgrURL = via
		}
	}
	s.sink = newLogSink(t)
	logger := slog.New(s.sink)

	// The queue the stream ends in exists before the run.
	queue := names.Queue
	switch s.o.path {
	case pathLog:
		// Like LogMsgConsumer's queue, the log queue is not durable (the
		// broker then confirms without writing to disk), except where it
		// must outlive a broker restart.
		queue = names.Queue + ".logs"
		declareQueue(t, cfg.LogWorker.Exchange, queue, "#", s.o.fault.kind == faultRestart)
	default:
		declareQueue(t, cfg.EventWorker.Exchange, queue, names.Key, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch s.o.path {
	case pathLog, pathEvent:
		s.coll = startCollector(t, direct, queue, s.name+" collector", s.o.n)
		s.got = s.coll.got
	case pathConsumer:
		var err error
		s.cons, err = omqs.NewEventMsgConsumer(
			omqs.WithConfig(cfg), omqs.WithURL(consURL), omqs.WithLogger(logger),
			omqs.WithName(s.name+" consumer"), omqs.WithReconnect(200*time.Millisecond, 0),
			omqs.WithExchange(cfg.EventWorker.Exchange, "topic", true), omqs.WithQueue(queue),
			omqs.WithKeys(names.Key), omqs.WithConcurrency(4), omqs.WithPrefetch(256),
			omqs.WithDedup(1<<16, 0), // duplicates counted both as seen by the callback and as dropped
			omqs.WithErrorHandler(func(error) { s.consLosses.Add(1) }),
			omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error {
				s.got.add(d.MessageID, d.Body, d.Redelivered)
				return nil
			}))
		if err != nil {
			t.Fatal(err)
		}
		runDone := make(chan error, 1)
		go func() { runDone <- s.cons.Run(context.Background()) }()
		t.Cleanup(func() {
			_ = s.cons.Stop(context.Background())
			if err := <-runDone; err != nil {
				t.Errorf("consumer Run: %v", err)
			}
		})
		faulttest.WaitFor(t, 30*time.Second, "the consumer to be ready", s.cons.Ready)
	}

	m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithURL(mgrURL), omqs.WithLogger(logger),
		omqs.WithName(s.name))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s.m = m
	t.Cleanup(func() { _ = m.Stop(stopCtx(t, 10*time.Second)) })
	s.pubName = s.name + ".event"
	if s.o.path == pathLog {
		s.pubName = s.name + ".log"
	}
}

var logKeys = []string{omqs.KeyFatal, omqs.KeyError, omqs.KeyWarning, omqs.KeyInfo, omqs.KeyDebug}

// send sends the stream with the Send*Context methods, which wait for room
// in the buffer rather than refuse.
func (s *stream) send(ctx context.Context, done chan struct{}) {
	defer close(done)
	wait := func(c chan struct{}) bool {
		select {
		case <-c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	isClosed := func(c chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	// While a fault is being put in place, send a message a millisecond,
	// so that messages are in flight whenever it lands.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := 0; i < s.o.n; i++ {
		for _, g := range s.gates {
			if (i == g.at && !wait(g.begun)) || (i == g.after && !wait(g.placed)) {
				return
			}
			if i > g.at && i < g.after && !isClosed(g.placed) {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		}
		b := body(s.name, i, s.o.size)
		s.sent.Add(1)
		var err error
		if s.o.path == pathLog {
			err = s.m.SendLogContext(ctx, b, logKeys[i%len(logKeys)])
		} else {
			err = s.m.SendEventContext(ctx, b, "")
		}
		if err != nil {
			s.refused.Add(1)
			if ctx.Err() != nil {
				return
			}
			s.firstErr.CompareAndSwap(nil, fmt.Errorf("message %d: %w", i, err))
			continue
		}
		s.acceptedAt[i] = true
		s.accepted.Add(1)
	}
}

// now samples the client's state.
func (s *stream) now() sample {
	sm := sample{at: time.Now(), ready: true}
	if s.o.path == pathConsumer {
		sm.progress = s.got.progress.Load()
		sm.losses = int(s.consLosses.Load())
		sm.ready = s.cons.Ready()
		return sm
	}
	st := s.m.Stats().Events
	if s.o.path == pathLog {
		st = s.m.Stats().Logs
	}
	sm.progress = st.Confirmed + st.Replayed
	sm.reconnects = st.Reconnects
	sm.losses = s.sink.lost(s.pubName)
	sm.blocked = st.Blocked
	return sm
}

func (s *stream) monitor(stop, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		s.hist.add(s.now())
		select {
		case <-stop:
			return
		case <-tick.C:
		}
	}
}

// waitProgress waits until want distinct messages arrived; it fails the
// test when nothing arrives for a minute.
func (s *stream) waitProgress(what string, want int) {
	s.t.Helper()
	last, lastAt := -1, time.Now()
	err := faulttest.Poll(time.Hour, func() bool {
		n := s.got.unique()
		if n != last {
			last, lastAt = n, time.Now()
		}
		return n >= want || time.Since(lastAt) > time.Minute
	})
	if err != nil || s.got.unique() < want {
		s.t.Fatalf("waiting for %s: stuck at %d for a minute (accepted %d; stats %+v)", what, s.got.unique(), s.accepted.Load(), s.m.Stats())
	}
}

// waitAll waits until every accepted message arrived, or nothing arrived
// for a minute.
func (s *stream) waitAll() {
	s.waitProgressSoft(func() bool { return s.got.unique() >= int(s.accepted.Load()) })
}

func (s *stream) waitProgressSoft(done func() bool) {
	last, lastAt := -1, time.Now()
	_ = faulttest.Poll(time.Hour, func() bool {
		n := s.got.unique()
		if n != last {
			last, lastAt = n, time.Now()
		}
		return done() || time.Since(lastAt) > time.Minute
	})
}

// inPlace records that fault i is in place and lets the sender go on.
func (s *stream) inPlace(i int) time.Time {
	close(s.gates[i].placed)
	return time.Now()
}

// finished reports whether the sender is done and every accepted message
// arrived.
func (s *stream) finished() bool {
	select {
	case <-s.senderDone:
		return s.got.unique() >= int(s.accepted.Load())
	default:
		return false
	}
}

// inject puts fault i in place (and, for faults with a length, removes it).
func (s *stream) inject(i int) injection {
	t := s.t
	f := s.o.fault
	inj := injection{base: s.now()}
	inj.start = time.Now()
	close(s.gates[i].begun)
	switch f.kind {
	case faultKill:
		faulttest.CloseConnections(t, fmt.Sprintf("fault matrix: kill %d", i+1), s.name)
		inj.end = s.inPlace(i)
	case faultRestart:
		start := faulttest.StopApp(t)
		inj.end = s.inPlace(i)
		hold(f.hold)
		start()
	case faultCut:
		s.proxy.Refuse(true)
		s.proxy.Cut()
		inj.end = s.inPlace(i)
		hold(f.hold)
		s.proxy.Refuse(false)
	case faultStall:
		if n := s.proxy.StallOpen(); n == 0 {
			t.Fatalf("stall: no connection through the proxy")
		}
		inj.end = s.inPlace(i)
		// The stall lasts until the client got through on a new
		// connection (its heartbeats noticed the silence), so that the
		// recovery cannot come from the stall ending.
		if _, err := s.awaitRecovery(inj, 60*time.Second); err != nil {
			t.Errorf("stall: heartbeats did not detect it: %v", err)
		}
		s.proxy.Stall(false)
	case faultSlow:
		s.proxy.Slow(f.slow)
		inj.end = s.inPlace(i)
		hold(f.hold)
		s.proxy.Slow(0)
		inj.cleared = time.Now()
	case faultAlarm:
		clear := faulttest.RaiseMemoryAlarm(t)
		inj.end = s.inPlace(i)
		hold(f.hold)
		clear()
		inj.cleared = time.Now()
	}
	return inj
}

// awaitRecovery waits until the client is back after inj and returns the
// time from the fault's start to the first confirm (or delivery) after it:
// for faults that end connections, the first on a new connection; for the
// memory alarm, the first once it cleared; for a slow link, the first
// through it. The fault's start is when it was in place, or when the client
// first saw it if that came earlier.
func (s *stream) awaitRecovery(inj injection, timeout time.Duration) (time.Duration, error) {
	var (
		rec time.Duration
		ok  bool
	)
	err := faulttest.Poll(timeout, func() bool {
		rec, ok = s.recovery(inj, s.hist.since(inj.start))
		return ok || s.finished()
	})
	switch {
	case ok:
		return rec, nil
	case err == nil:
		return 0, fmt.Errorf("the stream ended before a recovery could be seen (%s)", s.state())
	}
	return 0, fmt.Errorf("no recovery within %v (%s)", timeout, s.state())
}

// state describes the stream for error messages.
func (s *stream) state() string {
	sm := s.now()
	return fmt.Sprintf("accepted %d, delivered %d, progress %d, reconnects %d, connection losses %d, ready %v",
		s.accepted.Load(), s.got.unique(), sm.progress, sm.reconnects, sm.losses, sm.ready)
}

func (s *stream) recovery(inj injection, h []sample) (time.Duration, bool) {
	kind := s.o.fault.kind
	t0 := inj.end
	i := sort.Search(len(h), func(i int) bool { return !h[i].at.Before(inj.start) })
	if kind.breaks() {
		// The client may have seen the fault before the command returned.
		for _, sm := range h[i:] {
			if sm.at.After(t0) {
				break
			}
			if sm.losses > inj.base.losses {
				t0 = sm.at
				break
			}
		}
	}
	after := func(from int, prev uint64) (time.Duration, bool) {
		for _, sm := range h[from:] {
			if sm.progress > prev {
				return max(sm.at.Sub(t0), 0), true
			}
		}
		return 0, false
	}
	switch {
	case kind.breaks():
		for j := i; j < len(h); j++ {
			sm := h[j]
			back := sm.reconnects > inj.base.reconnects
			if s.o.path == pathConsumer {
				back = sm.losses > inj.base.losses && sm.ready
			}
			if back {
				prev := h[max(j-1, 0)].progress
				return after(j, prev)
			}
		}
		return 0, false
	case kind == faultAlarm:
		j := sort.Search(len(h), func(k int) bool { return h[k].at.After(inj.cleared) })
		if j == 0 {
			return 0, false
		}
		return after(j, h[j-1].progress)
	default:
		return after(i, inj.base.progress)
	}
}

// notes summarises the client's counters for the table.
func (s *stream) notes(r result) string {
	rate := float64(r.accepted) / r.elapsed.Seconds()
	parts := []string{fmt.Sprintf("%.0f msg/s", rate)}
	if s.o.path == pathConsumer {
		parts = append(parts, fmt.Sprintf("consumer reconnects %d, redelivered %d", s.consLosses.Load(), r.redelivered))
		st := s.m.Stats().Events
		parts = append(parts, fmt.Sprintf("publisher reconnects %d", st.Reconnects))
		return strings.Join(parts, "; ")
	}
	st := s.m.Stats().Events
	if s.o.path == pathLog {
		st = s.m.Stats().Logs
	}
	parts = append(parts, fmt.Sprintf("reconnects %d, republished %d", st.Reconnects, st.Republished))
	if st.Spooled > 0 || st.Replayed > 0 {
		parts = append(parts, fmt.Sprintf("spooled %d, replayed %d", st.Spooled, st.Replayed))
	}
	if st.Blocked > 0 {
		parts = append(parts, fmt.Sprintf("blocked %.1fs", st.Blocked.Seconds()))
	}
	if r.redelivered > 0 {
		parts = append(parts, fmt.Sprintf("collector redelivered %d", r.redelivered))
	}
	return strings.Join(parts, "; ")
}
