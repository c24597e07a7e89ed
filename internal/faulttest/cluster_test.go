package faulttest_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs"
	"github.com/omqs-go/omqs/internal/brokertest"
	"github.com/omqs-go/omqs/internal/clustertest"
	"github.com/omqs-go/omqs/internal/faulttest"
)

// clusterSample is the state of the cluster test's clients at one moment.
type clusterSample struct {
	at         time.Time
	confirmed  uint64 // the Manager's event lane: confirms and replays
	reconnects uint64 // the Manager's event lane
	delivered  uint64 // deliveries to the consumer
	losses     int32  // connections the consumer lost
	ready      bool   // the consumer's Ready
}

// clusterFault is one node stopped during the cluster test.
type clusterFault struct {
	what     string            // whose node
	at       float64           // fraction of the stream delivered before the stop
	node     string            // the node stopped
	placed   map[string]string // connection name -> node, before the stop
	leader   string            // the queue leader's node, before the stop
	start    time.Time         // stop_app began
	stopped  time.Time         // stop_app returned
	restart  time.Duration
	producer time.Duration // the longest time without a confirm, from start to the first confirm after the failover
	consumer time.Duration // the same for deliveries
	begun    chan struct{} // closed when the stop begins
	over     chan struct{} // closed when both clients failed over
}

// TestClusterFailover streams events through a Manager to an
// EventMsgConsumer on a quorum queue of a three-node cluster, with MQURL
// listing the three nodes (the Manager prefers node 1, the consumer node 2),
// while it stops the producer's node, then the consumer's, then the node of
// the queue's leader, each started again before the next stop. Nothing
// accepted may be lost; it reports duplicates and failover times, and where
// each connection ended up.
//
//	OMQS_FAULT_TESTS=1 OMQS_CLUSTER_TESTS=1 go test -race -run TestClusterFailover -v -p 1 ./internal/faulttest/
//
// OMQS_CLUSTER_MESSAGES=N changes the number of events (default 50000).
func TestClusterFailover(t *testing.T) {
	faulttest.Require(t)
	clustertest.Require(t)
	began := time.Now()
	c := clustertest.Start(t)
	t.Logf("cluster of %d nodes started and joined in %v", len(c.Nodes), time.Since(began).Round(100*time.Millisecond))
	n1, n2, n3 := c.Nodes[0], c.Nodes[1], c.Nodes[2]

	n := envInt(t, "OMQS_CLUSTER_MESSAGES", 50000)
	name := namePrefix + " cluster"
	exchange := brokertest.Unique("omqs.test.cluster.x")
	queue := brokertest.Unique("omqs.test.cluster.q")
	key := brokertest.Unique("omqs.test.cluster.k")

	// The queue is declared on node 3 first, so that its leader is there
	// (the default leader locator places it on the declaring node): each
	// stop then hits another node.
	declareQuorum(t, n3.URL(), queue)
	t.Logf("queue %s declared on %s; leader on %s", queue, n3.Name, c.Leader(t, n1, queue))

	cfg := omqs.DefaultConfig()
	cfg.Log.Folder = t.TempDir()
	cfg.LogWorker.Exchange = exchange + ".log"
	cfg.EventWorker.Exchange = exchange
	cfg.EventWorker.Queue = queue
	cfg.EventWorker.Keys = []string{key}
	cfg.EventWorker.QueueType = "quorum"
	cfg.EventConsumer.Exchange = exchange
	cfg.EventConsumer.Queue = queue
	cfg.EventConsumer.Keys = []string{key}
	cfg.EventConsumer.QueueType = "quorum"
	cfg.Global.ReconnectInterval = 200 * time.Millisecond
	cfg.Global.ReconnectTimes = 150 // 30 s of attempts: a stop never makes the Manager spool
	hb := "?heartbeat=2"
	list := func(ns ...clustertest.Node) string {
		urls := make([]string, len(ns))
		for i, nd := range ns {
			urls[i] = nd.URL() + hb
		}
		return strings.Join(urls, ",")
	}
	mgrURL, consURL := list(n1, n2, n3), list(n2, n3, n1)
	sink := newLogSink(t)
	logger := slog.New(sink)

	got := newIDSet(n)
	var losses atomic.Int32
	cons, err := omqs.NewEventMsgConsumer(
		omqs.WithConfig(cfg), omqs.WithURL(consURL), omqs.WithLogger(logger),
		omqs.WithName(name+" consumer"), omqs.WithReconnect(200*time.Millisecond, 0),
		omqs.WithConcurrency(4), omqs.WithPrefetch(256),
		omqs.WithErrorHandler(func(error) { losses.Add(1) }),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error {
			got.add(d.MessageID, d.Body, d.Redelivered)
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- cons.Run(context.Background()) }()
	consStopped := false
	t.Cleanup(func() {
		if !consStopped {
			_ = cons.Stop(context.Background())
		}
		if err := <-runDone; err != nil {
			t.Errorf("consumer Run: %v", err)
		}
	})
	faulttest.WaitFor(t, 30*time.Second, "the consumer to be ready", cons.Ready)

	m, err := omqs.NewManager(omqs.WithConfig(cfg), omqs.WithURL(mgrURL), omqs.WithLogger(logger), omqs.WithName(name))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mgrStopped := false
	t.Cleanup(func() {
		if !mgrStopped {
			_ = m.Stop(stopCtx(t, 10*time.Second))
		}
	})
	pubConn, consConn := name+".event", name+" consumer"

	faults := []*clusterFault{
		{what: "producer's node", at: 0.15},
		{what: "consumer's node", at: 0.35},
		{what: "queue leader's node", at: 0.55},
	}
	for _, f := range faults {
		f.begun, f.over = make(chan struct{}), make(chan struct{})
	}

	// Monitor: a sample whenever something changed.
	var (
		histMu sync.Mutex
		hist   []clusterSample
	)
	sampleNow := func() clusterSample {
		st := m.Stats().Events
		return clusterSample{at: time.Now(), confirmed: st.Confirmed + st.Replayed, reconnects: st.Reconnects,
			delivered: got.progress.Load(), losses: losses.Load(), ready: cons.Ready()}
	}
	monStop, monDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(monDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			s := sampleNow()
			histMu.Lock()
			if k := len(hist); k == 0 || hist[k-1].confirmed != s.confirmed || hist[k-1].reconnects != s.reconnects ||
				hist[k-1].delivered != s.delivered || hist[k-1].losses != s.losses || hist[k-1].ready != s.ready {
				hist = append(hist, s)
			}
			histMu.Unlock()
			select {
			case <-monStop:
				return
			case <-tick.C:
			}
		}
	}()
	stopMonitor := sync.OnceFunc(func() {
		close(monStop)
		<-monDone
	})
	t.Cleanup(stopMonitor)
	history := func() []clusterSample {
		histMu.Lock()
		defer histMu.Unlock()
		return append([]clusterSample(nil), hist...)
	}

	// Sender: it waits, a tenth of the stream past each fault's point,
	// until that fault began; from then until the clients failed over it
	// sends an event a millisecond, so that events are in flight through
	// the whole outage and the stream cannot end before it is over.
	var (
		accepted   atomic.Int64
		acceptedAt = make([]bool, n)
		sendErr    atomic.Value
	)
	sendCtx, sendCancel := context.WithCancel(context.Background())
	defer sendCancel()
	senderDone := make(chan struct{})
	t.Cleanup(func() {
		sendCancel()
		<-senderDone
	})
	streamStart := time.Now()
	isClosed := func(c chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}
	go func() {
		defer close(senderDone)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for i := 0; i < n; i++ {
			for _, f := range faults {
				if i == min(n-1, int((f.at+0.1)*float64(n))) {
					select {
					case <-f.begun:
					case <-sendCtx.Done():
						return
					}
				}
				if isClosed(f.begun) && !isClosed(f.over) {
					select {
					case <-tick.C:
					case <-sendCtx.Done():
						return
					}
				}
			}
			if err := m.SendEventContext(sendCtx, body("cluster", i, 100), key); err != nil {
				if sendCtx.Err() == nil {
					sendErr.CompareAndSwap(nil, fmt.Errorf("message %d: %w", i, err))
				}
				continue
			}
			acceptedAt[i] = true
			accepted.Add(1)
		}
	}()

	waitDelivered := func(what string, want int) {
		t.Helper()
		last, lastAt := -1, time.Now()
		_ = faulttest.Poll(time.Hour, func() bool {
			u := got.unique()
			if u != last {
				last, lastAt = u, time.Now()
			}
			return u >= want || time.Since(lastAt) > time.Minute
		})
		if u := got.unique(); u < want {
			t.Fatalf("waiting for %s: stuck at %d delivered for a minute (accepted %d; stats %+v)", what, u, accepted.Load(), m.Stats().Events)
		}
	}

	for i, f := range faults {
		waitDelivered(fmt.Sprintf("%.0f%% of the stream before fault %d", f.at*100, i+1), int(f.at*float64(n)))
		f.placed = c.Connections(t, n1) // every stopped node is back by now
		f.leader = c.Leader(t, n1, queue)
		switch i {
		case 0:
			f.node = f.placed[pubConn]
		case 1:
			f.node = f.placed[consConn]
		case 2:
			f.node = f.leader
		}
		node, ok := c.Node(f.node)
		if !ok {
			t.Fatalf("fault %d: no node for the %s (connections %v)", i+1, f.what, f.placed)
		}
		base := sampleNow()
		f.start = time.Now()
		close(f.begun)
		c.StopApp(t, node)
		f.stopped = time.Now()
		// Failed over: each client made progress after the stop took
		// effect for it (a new connection if it lost its own).
		pubLost := f.placed[pubConn] == f.node
		consLost := f.placed[consConn] == f.node
		var pubAt, consAt time.Time
		err := faulttest.Poll(90*time.Second, func() bool {
			pubAt, consAt = failedOver(history(), f.start, f.stopped, base, pubLost, consLost)
			return !pubAt.IsZero() && !consAt.IsZero()
		})
		if err != nil {
			t.Fatalf("fault %d (%s %s): no failover within 90s (accepted %d, delivered %d, stats %+v)",
				i+1, f.what, f.node, accepted.Load(), got.unique(), m.Stats().Events)
		}
		close(f.over)
		h := history()
		f.producer = longestGap(h, f.start, pubAt, func(s clusterSample) uint64 { return s.confirmed })
		f.consumer = longestGap(h, f.start, consAt, func(s clusterSample) uint64 { return s.delivered })
		restartAt := time.Now()
		c.StartApp(t, node)
		f.restart = time.Since(restartAt)
	}

	select {
	case <-senderDone:
	case <-time.After(5 * time.Minute):
		t.Fatalf("the sender did not finish")
	}
	waitDelivered("every accepted event", int(accepted.Load()))
	elapsed := time.Since(streamStart)
	final := c.Connections(t, n1)
	stopMonitor()

	mgrStopped = true
	if err := m.Stop(stopCtx(t, time.Minute)); err != nil {
		t.Errorf("Manager.Stop: %v", err)
	}
	consStopped = true
	if err := cons.Stop(stopCtx(t, time.Minute)); err != nil {
		t.Errorf("consumer Stop: %v", err)
	}
	if v := sendErr.Load(); v != nil {
		t.Errorf("sender: %v", v)
	}
	total, unique := got.counts()
	acc := int(accepted.Load())
	lost := acc - unique
	if missing, k := got.missing(acceptedAt, 20); k > 0 {
		t.Errorf("%d accepted event(s) never arrived, among them sequence numbers %v", k, missing)
	}
	if lost != 0 {
		t.Errorf("lost %d of %d accepted events", lost, acc)
	}
	st := m.Stats().Events
	if st.Spooled > 0 {
		t.Errorf("the Manager spooled %d events: a stop of one node should not take it that far", st.Spooled)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\n| stop | node | producer on | consumer on | leader on | producer failover | consumer failover | start_app took |\n|---|---|---|---|---|---:|---:|---:|\n")
	short := func(node string) string { name, _, _ := strings.Cut(node, "@"); return name }
	for _, f := range faults {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.2fs | %.2fs | %.1fs |\n", f.what, short(f.node), short(f.placed[pubConn]),
			short(f.placed[consConn]), short(f.leader), f.producer.Seconds(), f.consumer.Seconds(), f.restart.Seconds())
	}
	fmt.Fprintf(&b, "\nsent %d, accepted %d, delivered (unique) %d, duplicates %d, redelivered %d, lost %d; stream %v (nodes restarted included)\n",
		n, acc, unique, total-unique, got.redelivered, lost, elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(&b, "Manager: reconnects %d, republished %d, spooled %d; consumer connections lost %d\n", st.Reconnects, st.Republished, st.Spooled, losses.Load())
	fmt.Fprintf(&b, "connections at the end: producer on %s, consumer on %s\n", final[pubConn], final[consConn])
	fmt.Fprintf(&b, "test time %v (race %v)\n", time.Since(began).Round(100*time.Millisecond), raceEnabled)
	t.Log(b.String())
	if path := os.Getenv("OMQS_CLUSTER_TABLE"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}

	// Where each connection went (see internal/reconnect): a client that
	// lost its connection with a stopped node reconnects to the first
	// address of its MQURL other than that node (the others are up); a
	// client whose node stayed up keeps its connection where it is.
	clients := []struct {
		conn  string
		order []clustertest.Node
	}{{pubConn, []clustertest.Node{n1, n2, n3}}, {consConn, []clustertest.Node{n2, n3, n1}}}
	for i, f := range faults {
		next := final
		if i+1 < len(faults) {
			next = faults[i+1].placed
		}
		for _, cl := range clients {
			want := f.placed[cl.conn]
			if want == f.node {
				for _, nd := range cl.order {
					if nd.Name != f.node {
						want = nd.Name
						break
					}
				}
			}
			if next[cl.conn] != want {
				t.Errorf("after stop %d (%s), %q is on %s, want %s", i+1, f.node, cl.conn, next[cl.conn], want)
			}
		}
	}
}

// declareQuorum declares queue as the library declares a quorum event
// queue, on the node at url.
func declareQuorum(t testing.TB, url, queue string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatal(err)
	}
}

// failedOver returns when the producer and the consumer first made progress
// after a stop that began at start and returned at stopped: for a client
// that lost its connection, the first progress on the new one; for the
// other, the first progress after stopped. A zero time means not yet.
func failedOver(h []clusterSample, start, stopped time.Time, base clusterSample, pubLost, consLost bool) (pub, cons time.Time) {
	var pubBack, consBack bool
	var pubFrom, consFrom uint64
	for i, s := range h {
		if s.at.Before(start) {
			continue
		}
		prev := h[max(i-1, 0)]
		if pub.IsZero() {
			switch {
			case pubLost && !pubBack && s.reconnects > base.reconnects:
				pubBack, pubFrom = true, prev.confirmed
			case !pubLost && !pubBack && !s.at.Before(stopped):
				pubBack, pubFrom = true, prev.confirmed
			}
			if pubBack && s.confirmed > pubFrom {
				pub = s.at
			}
		}
		if cons.IsZero() {
			switch {
			case consLost && !consBack && s.losses > base.losses && s.ready:
				consBack, consFrom = true, prev.delivered
			case !consLost && !consBack && !s.at.Before(stopped):
				consBack, consFrom = true, prev.delivered
			}
			if consBack && s.delivered > consFrom {
				cons = s.at
			}
		}
	}
	return pub, cons
}

// longestGap returns the longest time without progress (as value reads it)
// from start to end: between start and the first progress after it, or
// between two progresses.
func longestGap(h []clusterSample, start, end time.Time, value func(clusterSample) uint64) time.Duration {
	var longest time.Duration
	from := start
	var last uint64
	for i, s := range h {
		if s.at.Before(start) {
			last = value(h[i])
			continue
		}
		if s.at.After(end) {
			break
		}
		if v := value(s); v != last {
			longest = max(longest, s.at.Sub(from))
			from, last = s.at, v
		}
	}
	return longest
}
