package membroker

import (
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// channelMax is RabbitMQ's default channel_max, the most channels a
// connection may have open at once.
const channelMax = 2047

// Connection is a connection to a Broker, with the methods OMQS uses of
// *amqp091.Connection and the same semantics.
type Connection struct {
	b *Broker

	mu        sync.Mutex
	channels  map[*Channel]struct{}
	closed    atomic.Bool
	closeOnce sync.Once

	n notifier // NotifyClose and NotifyBlocked listeners

	blockEpoch uint64 // the last alarm c was told of; guarded by b.blockMu
}

// Channel opens a channel. It returns amqp.ErrClosed when the connection is
// closed and amqp.ErrChannelMax when channelMax channels are open.
func (c *Connection) Channel() (*Channel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return nil, amqp.ErrClosed
	}
	if len(c.channels) >= channelMax {
		return nil, amqp.ErrChannelMax
	}
	ch := newChannel(c)
	c.channels[ch] = struct{}{}
	return ch, nil
}

func (c *Connection) removeChannel(ch *Channel) {
	c.mu.Lock()
	delete(c.channels, ch)
	c.mu.Unlock()
}

// NotifyClose registers r to receive the error that closes the connection
// when the broker closes it; r is then closed. On Close, r is closed without
// an error. Registering on a closed connection closes r at once. As with
// amqp091, r should be buffered: an error r cannot take at once is dropped.
func (c *Connection) NotifyClose(r chan *amqp.Error) chan *amqp.Error {
	return addListener(&c.n, &c.n.closes, r)
}

// NotifyBlocked registers r for connection.blocked and connection.unblocked
// notices (see Broker.SetBlocked). r is closed when the connection closes.
func (c *Connection) NotifyBlocked(r chan amqp.Blocking) chan amqp.Blocking {
	return addListener(&c.n, &c.n.blocks, r)
}

// Close closes the connection and its channels. It returns amqp.ErrClosed if
// the connection was already closed.
func (c *Connection) Close() error {
	if !c.shutdown(nil) {
		return amqp.ErrClosed
	}
	return nil
}

// CloseDeadline is Close; there is no network round trip to bound.
func (c *Connection) CloseDeadline(time.Time) error {
	return c.Close()
}

// IsClosed reports whether the connection is closed.
func (c *Connection) IsClosed() bool {
	return c.closed.Load()
}

// shutdown closes c, reporting err (nil for a client close) to its listeners
// and to those of its channels, in amqp091's order. It returns false if c was
// already closed. No lock may be held by the caller.
func (c *Connection) shutdown(err *amqp.Error) bool {
	first := false
	c.closeOnce.Do(func() {
		first = true
		c.mu.Lock()
		c.closed.Store(true)
		chans := make([]*Channel, 0, len(c.channels))
		for ch := range c.channels {
			chans = append(chans, ch)
		}
		c.mu.Unlock()

		c.n.stop()
		c.n.sendError(err)
		for _, ch := range chans {
			ch.shutdown(err)
		}
		c.b.connectionClosed(c)
		c.n.finish()
	})
	return first
}
