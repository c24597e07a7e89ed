package dispatch

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunsInOrderOnOneGoroutine(t *testing.T) {
	d := New(16)
	var mu sync.Mutex
	var got []int
	release := make(chan struct{})
	d.Go(func() { <-release })
	for i := 0; i < 10; i++ {
		if !d.Go(func() { mu.Lock(); got = append(got, i); mu.Unlock() }) {
			t.Fatalf("call %d refused with room in the queue", i)
		}
	}
	close(release)
	d.Close()
	for i, v := range got {
		if v != i {
			t.Fatalf("order %v", got)
		}
	}
	if len(got) != 10 {
		t.Fatalf("ran %d of 10 queued calls before Close returned", len(got))
	}
}

func TestFullQueueDropsAndCounts(t *testing.T) {
	d := New(1)
	release := make(chan struct{})
	started := make(chan struct{})
	d.Go(func() { close(started); <-release })
	<-started
	if !d.Go(func() {}) {
		t.Fatal("the one queue slot was refused")
	}
	if d.Go(func() {}) {
		t.Fatal("a call beyond the queue was accepted")
	}
	if d.Dropped() != 1 {
		t.Fatalf("dropped = %d, want 1", d.Dropped())
	}
	close(release)
	d.Close()
	d.Close() // idempotent
	if d.Go(func() {}) {
		t.Fatal("a call after Close was accepted")
	}
	if d.Dropped() != 2 {
		t.Fatalf("dropped = %d, want 2", d.Dropped())
	}
}

func TestCloseContextGivesUpOnABlockedCall(t *testing.T) {
	d := New(4)
	release := make(chan struct{})
	started := make(chan struct{})
	d.Go(func() { close(started); <-release })
	<-started
	ran := false
	d.Go(func() { ran = true })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.CloseContext(ctx); err == nil {
		t.Fatal("CloseContext returned nil while a call blocks")
	}
	close(release)
	d.Close() // waits for the goroutine
	if ran {
		t.Fatal("a call queued behind the blocked one ran after CloseContext gave up")
	}
	if d.Dropped() != 1 {
		t.Fatalf("dropped = %d, want 1", d.Dropped())
	}
}

// A Dispatcher that was never given a call has no goroutine, before or
// after Close, and Close does not wait for one.
func TestUnusedDispatcherStartsNoGoroutine(t *testing.T) {
	d := New(4)
	if err := goleak.Find(); err != nil {
		t.Fatalf("New started a goroutine: %v", err)
	}
	d.Close()
	if d.Go(func() {}) {
		t.Fatal("Go after Close was accepted")
	}
	if err := goleak.Find(); err != nil {
		t.Fatalf("Close left a goroutine: %v", err)
	}
}
