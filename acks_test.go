package omqs

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// ackLog records the acks an acker sends, and the requeues and rejects
// passed through settle, in order.
type ackLog struct {
	mu   sync.Mutex
	sent []string
	fail error
}

func (l *ackLog) Ack(tag uint64, multiple bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if multiple {
		l.sent = append(l.sent, fmt.Sprintf("ack<=%d", tag))
	} else {
		l.sent = append(l.sent, fmt.Sprintf("ack %d", tag))
	}
	return l.fail
}

func (l *ackLog) nack(tag uint64) func() error {
	return func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.sent = append(l.sent, fmt.Sprintf("nack %d", tag))
		return nil
	}
}

func (l *ackLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.sent
	l.sent = nil
	return s
}

func wantSent(t *testing.T, l *ackLog, want ...string) {
	t.Helper()
	if got := l.take(); !slices.Equal(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
}

func TestAckBatchFor(t *testing.T) {
	for prefetch, want := range map[int]int{0: maxAckBatch, 1: 1, 3: 1, 32: 8, 256: 64, 10000: maxAckBatch} {
		if got := ackBatchFor(prefetch); got != want {
			t.Errorf("ackBatchFor(%d) = %d, want %d", prefetch, got, want)
		}
	}
}

func TestAckerBatchesInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &ackLog{}
		a := newAcker(l, 3, nil)
		a.ack(1)
		a.ack(2)
		wantSent(t, l)
		a.ack(3) // the batch is full
		wantSent(t, l, "ack<=3")
		a.ack(4)
		time.Sleep(ackDelay / 2)
		wantSent(t, l)
		time.Sleep(ackDelay) // the first waited ackDelay: it goes alone
		synctest.Wait()
		wantSent(t, l, "ack 4")
		a.close()
		wantSent(t, l)
	})
}

// An AsyncConsumer's callbacks end out of order: a multiple ack never
// covers a delivery whose callback still runs, and a requeue goes out at
// once, before the multiple ack that passes it.
func TestAckerOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &ackLog{}
		a := newAcker(l, 2, nil)
		a.ack(2)
		a.ack(3)
		a.ack(5)
		time.Sleep(ackDelay + ackDelay/2)
		wantSent(t, l) // 1 still runs
		a.settle(4, l.nack(4))
		wantSent(t, l, "nack 4")
		a.ack(1) // 1, 2, 3 and 5 are acknowledged; 4 was requeued
		wantSent(t, l, "ack<=5")
		a.ack(7)
		a.close() // 6 was never settled: 7 goes alone
		wantSent(t, l, "ack 7")
		a.ack(6) // a callback that ended after the session closed
		wantSent(t, l, "ack 6")
	})
}

func TestAckerDropForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &ackLog{}
		a := newAcker(l, 8, nil)
		a.ack(1)
		a.ack(3)
		a.drop()
		time.Sleep(2 * ackDelay)
		synctest.Wait()
		wantSent(t, l)
	})
}

func TestAckerWarnsWhenAckFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &ackLog{fail: errors.New("channel closed")}
		var got []string
		a := newAcker(l, 2, func(err error, tag uint64, n int) { got = append(got, fmt.Sprintf("%d up to %d: %v", n, tag, err)) })
		a.ack(1)
		a.ack(2)
		if want := []string{"2 up to 2: channel closed"}; !slices.Equal(got, want) {
			t.Fatalf("warned %q, want %q", got, want)
		}
	})
}

// A callback that runs long holds the acknowledgements of the deliveries
// after it for at most two ackDelays: then they go one by one, so the
// broker's prefetch window is not held by one slow callback.
func TestAckerSlowCallbackDoesNotHoldOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &ackLog{}
		a := newAcker(l, 4, nil)
		a.ack(2)
		a.ack(3)
		time.Sleep(ackDelay + ackDelay/2)
		wantSent(t, l) // 1 may be about to end
		time.Sleep(ackDelay)
		synctest.Wait()
		got := l.take()
		slices.Sort(got)
		if want := []string{"ack 2", "ack 3"}; !slices.Equal(got, want) {
			t.Fatalf("sent %q, want %q", got, want)
		}
		a.ack(4) // still behind 1
		time.Sleep(ackDelay)
		synctest.Wait()
		wantSent(t, l, "ack 4")
		a.ack(1) // the floor passes 2, 3 and 4, sent already
		a.ack(5)
		time.Sleep(ackDelay)
		synctest.Wait()
		wantSent(t, l, "ack<=5")
		a.close()
		wantSent(t, l)
	})
}

// A requeue that could not be sent leaves its tag unsettled: no multiple
// ack covers it.
func TestAckerFailedRequeueBlocksMultipleAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &ackLog{}
		a := newAcker(l, 8, nil)
		a.ack(1)
		if err := a.settle(2, func() error { return errors.New("channel closed") }); err == nil {
			t.Fatal("settle hid the error")
		}
		a.ack(3)
		time.Sleep(ackDelay)
		synctest.Wait()
		wantSent(t, l, "ack 1")
		a.close()
		wantSent(t, l, "ack 3")
	})
}
