package omqs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/omqs-go/omqs/internal/brokertest"
)

// Stop while Start is still trying to reach the broker: both return, and
// nothing is left running.
func TestManagerLifecycleStopDuringStart(t *testing.T) {
	url := brokertest.URL(t)
	p := newProxy(t, url)
	p.Refuse(true)
	cfg, _ := testConfig(t)
	m, err := NewManager(WithConfig(cfg), WithURL(proxyURL(url, p)), WithReconnect(20*time.Millisecond, 1000), WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	startErr := make(chan error, 1)
	go func() { startErr <- m.Start(context.Background()) }()
	waitUntil(t, 5*time.Second, "Start to be under way", func() bool { return managerState(m.state.Load()) == mgrStarting })
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop(testCtx(t, 10*time.Second)) }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return while Start was connecting")
	}
	select {
	case err := <-startErr:
		if err == nil {
			t.Fatal("Start succeeded although Stop ran")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after Stop")
	}
	if err := m.SendInfo("x"); !errors.Is(err, ErrStopped) {
		t.Fatalf("send after Stop: %v", err)
	}
}

// Stop while the broker is unreachable: the messages held for a reconnect
// are spooled at once, whether RECONNECT_TIMES attempts are used up or
// not, without waiting for Stop's context to end, and Stop returns
// ErrSpooled; Stop never hangs.
func TestManagerLifecycleStopWhileUnreachableSpools(t *testing.T) {
	url := brokertest.URL(t)
	cases := []struct {
		name    string
		times   int
		timeout time.Duration // 0: no deadline
		want    error
	}{
		{"gives up while stopping", 3, 0, ErrSpooled},
		{"still trying, with a deadline", 100000, 500 * time.Millisecond, ErrSpooled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newProxy(t, url)
			p.Refuse(true)
			cfg, _ := testConfig(t)
			m := startManager(t, WithConfig(cfg), WithURL(proxyURL(url, p)), WithReconnect(50*time.Millisecond, c.times),
				WithRetryOnFailedConnect(true), WithLogger(testLogger(t)))
			const N = 20
			for i := 0; i < N; i++ {
				if err := m.SendEvent(fmt.Sprintf("ev %d", i), ""); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, 5*time.Second, "events held by the worker", func() bool { _, e := m.Pending(); return e == N })
			ctx := context.Background()
			if c.timeout > 0 {
				ctx = testCtx(t, c.timeout)
			}
			done := make(chan error, 1)
			go func() { done <- m.Stop(ctx) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("Stop hung while the broker was unreachable")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Stop: %v, want %v", err, c.want)
			}
			if cnt := len(spoolRecords(t, cfg.Log.Folder, "backup.evt")); cnt != N {
				t.Fatalf("spool holds %d events, want %d (Stop: %v)", cnt, N, err)
			}
		})
	}
}

type notConfirmingWorker struct{ blockingWorker }

func (w *notConfirmingWorker) WorkerWillStop(context.Context) error {
	return fmt.Errorf("%w: 3 message(s) lost by the custom worker", ErrNotConfirmed)
}

func TestManagerLifecycleStopReportsCustomWorkerLoss(t *testing.T) {
	w := &notConfirmingWorker{blockingWorker{release: closedChan()}}
	m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://custom-loss"), WithLogWorker(&blockingWorker{release: closedChan()}),
		WithEventWorker(w), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(testCtx(t, 5*time.Second)); !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("Stop: %v, want the custom worker's ErrNotConfirmed", err)
	}
}

// mgrUnreachableWorker stands for a worker whose broker cannot be reached
// and that retries without limit (RECONNECT_TIMES=0): WorkerWillRun returns
// only when its context ends.
type mgrUnreachableWorker struct{ blockingWorker }

func (w *mgrUnreachableWorker) WorkerWillRun(ctx context.Context) error {
	<-ctx.Done()
	return ctx.Err()
}

// Stop right as Start begins, as close as possible to Start's switch to
// starting, so that Stop runs before Start has made itself cancellable: Stop
// must still make Start give up, and both return.
func TestManagerLifecycleStopRightAfterStartBegins(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Global.BufferSize = 16
	dir := t.TempDir()
	for i := 0; i < 1000; i++ {
		m, err := NewManager(WithConfig(cfg), WithURL("memory://mgr-stop-at-start"), WithLogWorker(&mgrUnreachableWorker{}),
			WithEventWorker(&blockingWorker{release: closedChan()}), WithSpoolDir(dir), WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		stopped := make(chan error, 1)
		go func() {
			for managerState(m.state.Load()) == mgrNew {
				// Spin: Stop must come right after Start's state switch.
			}
			stopped <- m.Stop(context.Background())
		}()
		started := make(chan error, 1)
		go func() { started <- m.Start(context.Background()) }()
		select {
		case err := <-stopped:
			if err != nil {
				t.Fatalf("Stop: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Stop hung waiting for a Start it did not cancel", i)
		}
		if err := <-started; err == nil {
			t.Fatal("Start succeeded although Stop ran")
		}
	}
}

// mgrAbortWorker is a built-in-like worker (it has abort) whose
// WorkerWillStop ends Stop's context, and whose abort blocks until release
// is closed.
type mgrAbortWorker struct {
	blockingWorker
	endStop  context.CancelFunc
	aborting chan struct{} // closed when abort begins
	release  chan struct{}
}

func (w *mgrAbortWorker) WorkerWillStop(ctx context.Context) error {
	w.endStop()
	return nil
}

func (w *mgrAbortWorker) laneStats() LaneStats { return LaneStats{} }
func (w *mgrAbortWorker) pendingMsgs() int     { return 0 }
func (w *mgrAbortWorker) stopSoon()            {}
func (w *mgrAbortWorker) abort() {
	close(w.aborting)
	<-w.release
}

// When Stop's context ends while the workers stop, Stop waits for the abort
// it started: no goroutine of the Manager outlives Stop.
func TestManagerLifecycleStopWaitsForItsAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := &mgrAbortWorker{endStop: cancel, aborting: make(chan struct{}), release: make(chan struct{})}
		var releaseOnce sync.Once
		release := func() { releaseOnce.Do(func() { close(w.release) }) }
		defer release()
		m, err := NewManager(WithConfig(DefaultConfig()), WithURL("memory://mgr-stop-abort"), WithLogWorker(w),
			WithEventWorker(&blockingWorker{release: closedChan()}), WithSpoolDir(t.TempDir()), WithLogger(testLogger(t)))
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		stopped := make(chan error, 1)
		go func() { stopped <- m.Stop(ctx) }()
		<-w.aborting
		synctest.Wait()
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned (%v) while the abort it started was still running", err)
		default:
		}
		release()
		if err := <-stopped; err != nil {
			t.Fatalf("Stop: %v", err)
		}
	})
}
