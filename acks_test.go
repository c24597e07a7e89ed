package omqs

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// ackLog records the acks an acker sends, and the requeues and rejects
// passed through settle, in order, on a channel the tests read.
type ackLog struct {
	sent chan string
	fail error
}

func newAckLog() *ackLog { return &ackLog{sent: make(chan string, 64)} }

func (l *ackLog) Ack(tag uint64, multiple bool) error {
	if multiple {
		l.sent <- fmt.Sprintf("ack<=%d", tag)
	} else {
		l.sent <- fmt.Sprintf("ack %d", tag)
	}
	return l.fail
}

func (l *ackLog) nack(tag uint64) func() error {
	return func() error {
		l.sent <- fmt.Sprintf("nack %d", tag)
		return nil
	}
}

// wantNow checks what was sent so far, without letting the bubble's clock
// move.
func wantNow(t *testing.T, l *ackLog, want ...string) {
	t.Helper()
	synctest.Wait()
	var got []string
	for len(l.sent) > 0 {
		got = append(got, <-l.sent)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
}

// wantAfter waits for the next thing sent and checks it and how long the
// bubble's clock moved before it.
func wantAfter(t *testing.T, l *ackLog, after time.Duration, want string) {
	t.Helper()
	start := time.Now()
	got := <-l.sent
	if got != want || time.Since(start) != after {
		t.Fatalf("sent %q after %v, want %q after %v", got, time.Since(start), want, after)
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
		l := newAckLog()
		a := newAcker(l, 3, nil)
		a.ack(1)
		a.ack(2)
		wantNow(t, l)
		a.ack(3) // the batch is full
		wantNow(t, l, "ack<=3")
		a.ack(4) // alone: it goes once it waited ackDelay
		wantAfter(t, l, ackDelay, "ack 4")
		a.close()
		wantNow(t, l)
	})
}

// An AsyncConsumer's callbacks end out of order: a multiple ack never
// covers a delivery whose callback still runs, and a requeue goes out at
// once, before the multiple ack that passes it.
func TestAckerOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAckLog()
		a := newAcker(l, 2, nil)
		a.ack(2)
		a.ack(3)
		a.ack(5)
		wantNow(t, l) // 1 still runs
		a.settle(4, l.nack(4))
		wantNow(t, l, "nack 4")
		a.ack(1) // 1, 2, 3 and 5 are acknowledged; 4 was requeued
		wantNow(t, l, "ack<=5")
		a.ack(7)
		a.close() // 6 was never settled: 7 goes alone
		wantNow(t, l, "ack 7")
		a.ack(6) // a callback that ended after the session closed
		wantNow(t, l, "ack 6")
	})
}

// A callback that runs long holds the acknowledgements of the deliveries
// after it for at most two ackDelays: then they go one by one, so the
// broker's prefetch window is not held by one slow callback.
func TestAckerSlowCallbackDoesNotHoldOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAckLog()
		a := newAcker(l, 4, nil)
		a.ack(2)
		a.ack(3)
		start := time.Now()
		got := []string{<-l.sent, <-l.sent}
		slices.Sort(got)
		if want := []string{"ack 2", "ack 3"}; !slices.Equal(got, want) || time.Since(start) != 2*ackDelay {
			t.Fatalf("sent %q after %v, want %q after %v", got, time.Since(start), want, 2*ackDelay)
		}
		a.ack(4) // still behind 1, which has not moved for a whole ackDelay
		wantAfter(t, l, ackDelay, "ack 4")
		a.ack(1) // the floor passes 2, 3 and 4, sent already
		a.ack(5)
		wantAfter(t, l, ackDelay, "ack<=5")
		a.close()
		wantNow(t, l)
	})
}

func TestAckerDropForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAckLog()
		a := newAcker(l, 8, nil)
		a.ack(1)
		a.ack(3)
		a.drop()
		select {
		case s := <-l.sent:
			t.Fatalf("sent %q after drop", s)
		case <-time.After(4 * ackDelay):
		}
	})
}

// A requeue that could not be sent leaves its tag unsettled: no multiple
// ack covers it.
func TestAckerFailedRequeueBlocksMultipleAck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAckLog()
		a := newAcker(l, 8, nil)
		a.ack(1)
		if err := a.settle(2, func() error { return errors.New("channel closed") }); err == nil {
			t.Fatal("settle hid the error")
		}
		a.ack(3)
		wantAfter(t, l, ackDelay, "ack 1")
		a.close()
		wantNow(t, l, "ack 3")
	})
}

func TestAckerWarnsWhenAckFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAckLog()
		l.fail = errors.New("channel closed")
		var got []string
		a := newAcker(l, 2, func(err error, tag uint64, n int) { got = append(got, fmt.Sprintf("%d up to %d: %v", n, tag, err)) })
		a.ack(1)
		a.ack(2)
		if want := []string{"2 up to 2: channel closed"}; !slices.Equal(got, want) {
			t.Fatalf("warned %q, want %q", got, want)
		}
		wantNow(t, l, "ack<=2")
	})
}
