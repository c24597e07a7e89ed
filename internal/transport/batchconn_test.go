package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeSock is a net.Conn whose writes are recorded and can be held.
type fakeSock struct {
	net.Conn // nil: only the methods below are used

	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	gate    chan struct{} // when not nil, each write waits for a value
	fail    error
	closed  bool
	entered chan struct{} // a write has begun (cap 1)
}

func newFakeSock() *fakeSock { return &fakeSock{entered: make(chan struct{}, 1)} }

func (f *fakeSock) Write(p []byte) (int, error) {
	select {
	case f.entered <- struct{}{}:
	default:
	}
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0, net.ErrClosed
	}
	if f.fail != nil {
		return 0, f.fail
	}
	f.writes++
	f.buf.Write(p)
	return len(p), nil
}

func (f *fakeSock) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeSock) SetWriteDeadline(time.Time) error { return nil }

func (f *fakeSock) snapshot() (string, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf.String(), f.writes, f.closed
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestBatchConnWritesThroughBeforeStart(t *testing.T) {
	s := newFakeSock()
	b := newBatchConn(s)
	if _, err := b.Write([]byte("handshake")); err != nil {
		t.Fatal(err)
	}
	if got, n, _ := s.snapshot(); got != "handshake" || n != 1 {
		t.Fatalf("before start the socket holds %q after %d writes", got, n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, closed := s.snapshot(); !closed {
		t.Fatal("Close did not close the socket")
	}
	if _, err := b.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
}

// While the socket is busy with one write, later writes queue and go out
// together, in order.
func TestBatchConnCoalescesWritesInOrder(t *testing.T) {
	s := newFakeSock()
	s.gate = make(chan struct{})
	b := newBatchConn(s)
	b.start()
	defer b.Close()
	if _, err := b.Write([]byte("first;")); err != nil {
		t.Fatal(err)
	}
	<-s.entered // the writer is in the socket's write
	var want bytes.Buffer
	want.WriteString("first;")
	for i := range 100 {
		msg := fmt.Sprintf("m%d;", i)
		want.WriteString(msg)
		if _, err := b.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	close(s.gate)
	waitFor(t, "every byte on the socket", func() bool {
		got, _, _ := s.snapshot()
		return len(got) == want.Len()
	})
	got, writes, _ := s.snapshot()
	if got != want.String() {
		t.Fatalf("the socket holds\n%q\nwant\n%q", got, want.String())
	}
	if writes != 2 {
		t.Fatalf("101 writes took %d socket writes, want 2 (one, then the rest together)", writes)
	}
}

// Writes from many goroutines arrive whole and each goroutine's in order.
func TestBatchConnConcurrentWritesStayWhole(t *testing.T) {
	c1, c2 := net.Pipe()
	b := newBatchConn(c1)
	b.start()
	const writers, each = 8, 200
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(c2)
		got <- all
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := fmt.Fprintf(b, "<%d:%04d>", w, i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	all := <-got
	c2.Close()
	next := make([]int, writers)
	for _, rec := range bytes.Split(bytes.TrimSuffix(all, []byte(">")), []byte(">")) {
		var w, i int
		if _, err := fmt.Sscanf(string(rec), "<%d:%d", &w, &i); err != nil {
			t.Fatalf("a record was torn: %q", rec)
		}
		if i != next[w] {
			t.Fatalf("writer %d: record %d came when %d was due", w, i, next[w])
		}
		next[w]++
	}
	for w, n := range next {
		if n != each {
			t.Fatalf("writer %d: %d of %d records arrived", w, n, each)
		}
	}
}

// A failed socket write fails the writes after it and closes the socket.
func TestBatchConnFailureClosesAndFailsLaterWrites(t *testing.T) {
	s := newFakeSock()
	boom := errors.New("connection reset")
	s.fail = boom
	b := newBatchConn(s)
	b.start()
	defer b.Close()
	if _, err := b.Write([]byte("lost")); err != nil {
		t.Fatalf("the first write is queued: %v", err)
	}
	waitFor(t, "the socket closed", func() bool { _, _, closed := s.snapshot(); return closed })
	waitFor(t, "a write to fail", func() bool {
		_, err := b.Write([]byte("x"))
		return errors.Is(err, boom)
	})
}

// Close sends what is queued before it closes the socket.
func TestBatchConnCloseFlushes(t *testing.T) {
	s := newFakeSock()
	s.gate = make(chan struct{})
	b := newBatchConn(s)
	b.start()
	b.Write([]byte("a"))
	<-s.entered
	b.Write([]byte("b"))
	b.Write([]byte("c"))
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	close(s.gate)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if got, _, sockClosed := s.snapshot(); got != "abc" || !sockClosed {
		t.Fatalf("after Close the socket holds %q (closed %v), want \"abc\" and closed", got, sockClosed)
	}
}

// A writer that finds maxPending bytes queued waits, as on a full socket
// buffer, and gets an error when the conn is closed meanwhile.
func TestBatchConnBackPressure(t *testing.T) {
	s := newFakeSock()
	s.gate = make(chan struct{})
	b := newBatchConn(s)
	b.start()
	b.Write([]byte("x"))
	<-s.entered
	big := make([]byte, maxPending)
	if _, err := b.Write(big); err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := b.Write([]byte("over"))
		blocked <- err
	}()
	select {
	case err := <-blocked:
		t.Fatalf("a write past maxPending returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	// Release the socket only after Close has begun: Close flushes, the
	// blocked write either gets in before the flush or fails after it.
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for !closing(b) {
			<-tick.C
		}
		close(s.gate)
	}()
	b.Close()
	if err := <-blocked; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the blocked write: %v", err)
	}
}

func closing(b *batchConn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}
