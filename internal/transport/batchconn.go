package transport

import (
	"net"
	"sync"
	"time"
)

// batchConn is the socket under an AMQP connection once it is open. Its
// writes are queued and sent by one goroutine of its own: what the
// publishers (and acknowledging consumers) write while that goroutine is in
// a system call goes out together in its next one. A publisher that writes
// message after message therefore does not pay one system call per message,
// and neither does the broker, which reads them in fewer, larger reads.
//
// Before start (the AMQP handshake) writes go straight to the socket.
//
// A write that returns nil is queued, not yet sent: a later failure of the
// socket closes it, so that the connection's reader fails and the
// connection shuts down as it would after a failed write; the publishers
// learn of it by the missing confirms, as they do for anything written
// just before a connection fails. A write waits while maxPending bytes are
// queued, as a write to a socket whose send buffer is full does.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	room    sync.Cond // signalled when the queue is taken or the conn fails
	pending []byte    // queued, not yet taken by the writer
	spare   []byte    // the buffer the writer gave back, for reuse
	writing bool      // the writer holds a batch or is about to look
	err     error     // the first failure, or net.ErrClosed after Close
	started bool
	closed  bool
	wake    chan struct{} // cap 1: the queue has something for the writer
	quit    chan struct{} // closed by Close
	done    chan struct{} // closed when the writer ends
}

const (
	// maxPending is how many bytes may wait for the writer before a
	// write waits.
	maxPending = 512 << 10
	// maxSpare bounds the buffer kept for reuse after a large batch.
	maxSpare = 1 << 20
	// finalFlush bounds how long Close waits to send what is queued
	// (a connection.close-ok, typically) when the peer does not read.
	finalFlush = 2 * time.Second
)

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	b.room.L = &b.mu
	return b
}

// start hands further writes to the writer goroutine.
func (b *batchConn) start() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return
	}
	b.started = true
	go b.writer()
}

// Write queues p for the writer, or writes it at once before start.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	if !b.started {
		defer b.mu.Unlock()
		if b.err != nil {
			return 0, b.err
		}
		return b.Conn.Write(p)
	}
	for b.err == nil && !b.closed && len(b.pending) >= maxPending {
		b.room.Wait()
	}
	if b.err != nil || b.closed {
		err := b.err
		if err == nil {
			err = net.ErrClosed
		}
		b.mu.Unlock()
		return 0, err
	}
	b.pending = append(b.pending, p...)
	idle := !b.writing
	b.writing = true
	b.mu.Unlock()
	if idle {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// writer sends the queue in as few writes as it can until Close or a
// failure.
func (b *batchConn) writer() {
	defer close(b.done)
	for {
		select {
		case <-b.wake:
		case <-b.quit:
			b.flushOnClose()
			return
		}
		if !b.drain() {
			return
		}
	}
}

// drain writes batches until the queue is empty; false when the socket
// failed.
func (b *batchConn) drain() bool {
	for {
		b.mu.Lock()
		if len(b.pending) == 0 || b.err != nil {
			b.writing = false
			ok := b.err == nil
			b.mu.Unlock()
			return ok
		}
		out := b.pending
		b.pending = b.spare[:0]
		b.spare = nil
		b.room.Broadcast()
		b.mu.Unlock()

		_, err := b.Conn.Write(out)

		b.mu.Lock()
		if cap(out) <= maxSpare {
			b.spare = out[:0]
		}
		if err != nil && b.err == nil {
			b.err = err
			b.room.Broadcast()
		}
		b.mu.Unlock()
		if err != nil {
			// Make the connection's reader fail too.
			b.Conn.Close()
			return false
		}
	}
}

// flushOnClose sends what is queued, within the deadline Close set.
func (b *batchConn) flushOnClose() {
	b.mu.Lock()
	out := b.pending
	b.pending = nil
	failed := b.err != nil
	b.mu.Unlock()
	if failed || len(out) == 0 {
		return
	}
	b.Conn.Write(out) //nolint:errcheck // the socket is closed next either way
}

// Close sends what is queued (within finalFlush), closes the socket and
// returns once the writer has ended. Writes after it fail.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return net.ErrClosed
	}
	b.closed = true
	b.room.Broadcast()
	started := b.started
	b.mu.Unlock()
	if started {
		// Bound a write the writer may be in on a stalled network, and
		// the final flush.
		b.Conn.SetWriteDeadline(time.Now().Add(finalFlush)) //nolint:errcheck // closed next either way
		close(b.quit)
		<-b.done
	}
	err := b.Conn.Close()
	b.mu.Lock()
	if b.err == nil {
		b.err = net.ErrClosed
	}
	b.room.Broadcast()
	b.mu.Unlock()
	return err
}
