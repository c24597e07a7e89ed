package membroker

import (
	"context"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// notifyTimeout bounds how long one notification waits for one full listener,
// as amqp091's reader does; the notification is then dropped for that
// listener.
const notifyTimeout = 5 * time.Second

// maxPendingEvents bounds the notifications a channel queues for slow
// listeners: a publish waits (see notifier.waitRoom) while that many are
// queued, as a publisher of amqp091 waits on TCP when its reader is stuck.
const maxPendingEvents = 4096

type eventKind uint8

const (
	evConfirm eventKind = iota
	evReturn
	evBlock
)

type event struct {
	kind  eventKind
	from  int // first listener not yet served
	conf  amqp.Confirmation
	block amqp.Blocking
	ret   *amqp.Return
}

// notifier holds the Notify* listeners of a channel or connection and hands
// them events in order, the way amqp091's reader goroutine does: an event is
// sent to each listener in turn, waiting at most notifyTimeout for each.
//
// emit never blocks. When every listener takes the event at once it is
// delivered in the caller's goroutine; otherwise it is queued and a drain
// goroutine, owned by the notifier and tracked by wg, delivers the queue and
// exits when it is empty. No broker lock is held while a listener is waited for.
type notifier struct {
	mu       sync.Mutex
	closes   []chan *amqp.Error
	confirms []chan amqp.Confirmation
	returns  []chan amqp.Return
	blocks   []chan amqp.Blocking
	pending  deque[event]
	room     chan struct{} // closed when pending drops below maxPendingEvents
	running  bool
	stopped  bool // no more events are accepted
	finished bool // listeners are closed; new ones are closed at once
	wg       sync.WaitGroup
}

// addListener registers c in list, one of n's listener slices, and returns
// it; on a finished notifier c is closed at once.
func addListener[T any](n *notifier, list *[]chan T, c chan T) chan T {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.finished {
		close(c)
	} else {
		*list = append(*list, c)
	}
	return c
}

// listenerCount returns how many listeners of kind there are. n.mu is held.
func (n *notifier) listenerCount(k eventKind) int {
	switch k {
	case evConfirm:
		return len(n.confirms)
	case evReturn:
		return len(n.returns)
	default:
		return len(n.blocks)
	}
}

// offer tries to hand ev to listener i without waiting. n.mu is held or the
// listener slices are a snapshot that cannot be closed meanwhile.
func offer(confirms []chan amqp.Confirmation, returns []chan amqp.Return, blocks []chan amqp.Blocking, ev *event, i int) bool {
	switch ev.kind {
	case evConfirm:
		select {
		case confirms[i] <- ev.conf:
			return true
		default:
		}
	case evReturn:
		select {
		case returns[i] <- *ev.ret:
			return true
		default:
		}
	default:
		select {
		case blocks[i] <- ev.block:
			return true
		default:
		}
	}
	return false
}

// emit delivers ev to the listeners of its kind, in order after every earlier
// event. It does not block.
func (n *notifier) emit(ev event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped {
		return
	}
	if n.running {
		n.pending.pushBack(ev)
		return
	}
	count := n.listenerCount(ev.kind)
	for ev.from < count {
		if !offer(n.confirms, n.returns, n.blocks, &ev, ev.from) {
			break
		}
		ev.from++
	}
	if ev.from == count {
		return
	}
	n.pending.pushBack(ev)
	n.running = true
	n.wg.Add(1)
	go n.drain()
}

// drain delivers queued events until none is left.
func (n *notifier) drain() {
	defer n.wg.Done()
	t := time.NewTimer(notifyTimeout)
	t.Stop()
	for {
		n.mu.Lock()
		if n.pending.len() == 0 {
			n.running = false
			n.mu.Unlock()
			return
		}
		ev := n.pending.popFront()
		if n.room != nil && n.pending.len() < maxPendingEvents {
			close(n.room)
			n.room = nil
		}
		confirms, returns, blocks := n.confirms, n.returns, n.blocks
		count := n.listenerCount(ev.kind)
		n.mu.Unlock()

		for i := ev.from; i < count; i++ {
			if offer(confirms, returns, blocks, &ev, i) {
				continue
			}
			t.Reset(notifyTimeout)
			switch ev.kind {
			case evConfirm:
				select {
				case confirms[i] <- ev.conf:
				case <-t.C:
				}
			case evReturn:
				select {
				case returns[i] <- *ev.ret:
				case <-t.C:
				}
			default:
				select {
				case blocks[i] <- ev.block:
				case <-t.C:
				}
			}
			t.Stop()
		}
	}
}

// waitRoom returns once fewer than maxPendingEvents events are queued, or
// with ctx.Err() or amqp.ErrClosed when ctx ends or done is closed first.
func (n *notifier) waitRoom(ctx context.Context, done <-chan struct{}) error {
	for {
		n.mu.Lock()
		if n.pending.len() < maxPendingEvents {
			n.mu.Unlock()
			return nil
		}
		if n.room == nil {
			n.room = make(chan struct{})
		}
		room := n.room
		n.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return amqp.ErrClosed
		}
	}
}

// stop refuses further events and waits until the queued ones are delivered.
func (n *notifier) stop() {
	n.mu.Lock()
	n.stopped = true
	n.mu.Unlock()
	n.wg.Wait()
}

// sendError offers err to every close listener that can take it at once, as
// amqp091 v1.16 does; a listener that is neither waiting nor buffered with
// room does not get it.
func (n *notifier) sendError(err *amqp.Error) {
	if err == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.closes {
		select {
		case c <- err:
		default:
		}
	}
}

// finish closes every listener; listeners registered later are closed at once.
func (n *notifier) finish() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.finished {
		return
	}
	n.finished = true
	for _, c := range n.closes {
		close(c)
	}
	for _, c := range n.confirms {
		close(c)
	}
	for _, c := range n.returns {
		close(c)
	}
	for _, c := range n.blocks {
		close(c)
	}
	n.closes, n.confirms, n.returns, n.blocks = nil, nil, nil, nil
}
