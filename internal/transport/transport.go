// Package transport is the one seam between OMQS and a broker. Publishers and
// consumers talk to Conn and Channel; Dial returns an implementation backed by
// amqp091-go for amqp:// and amqps:// URLs and by the in-process broker of
// package membroker for memory:// URLs.
//
// The seam uses amqp091's value types (Publishing, Delivery, Confirmation,
// Return, Blocking, *Error, Table, Queue) so that the amqp091 implementation
// adds no copies or goroutines: *amqp091.Channel satisfies Channel as it is.
package transport

import (
	"context"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Conn is a broker connection.
type Conn interface {
	// Channel opens a new channel.
	Channel() (Channel, error)
	// NotifyClose registers c to receive the error that closed the
	// connection; c is closed when the connection closes, after the error (if
	// any) was sent. c must be buffered or drained.
	NotifyClose(c chan *amqp.Error) chan *amqp.Error
	// NotifyBlocked registers c for connection.blocked/unblocked notices.
	NotifyBlocked(c chan amqp.Blocking) chan amqp.Blocking
	// CloseDeadline closes the connection, waiting for the broker's close-ok
	// at most until deadline.
	CloseDeadline(deadline time.Time) error
	// IsClosed reports whether the connection is closed.
	IsClosed() bool
}

// Channel is the subset of *amqp091.Channel that OMQS uses: every method
// is called by the publishing engine or the consumer. Tests that inspect or
// clean up a broker through the seam (passive declarations, unbind, purge,
// delete) assert the channel to an interface of their own with those
// methods, which both implementations also have.
type Channel interface {
	ExchangeDeclare(name, kind string, durable, autoDelete, internal, noWait bool, args amqp.Table) error
	QueueDeclare(name string, durable, autoDelete, exclusive, noWait bool, args amqp.Table) (amqp.Queue, error)
	QueueBind(name, key, exchange string, noWait bool, args amqp.Table) error

	Qos(prefetchCount, prefetchSize int, global bool) error
	Confirm(noWait bool) error
	PublishWithContext(ctx context.Context, exchange, key string, mandatory, immediate bool, msg amqp.Publishing) error
	GetNextPublishSeqNo() uint64
	NotifyPublish(c chan amqp.Confirmation) chan amqp.Confirmation
	NotifyReturn(c chan amqp.Return) chan amqp.Return
	NotifyClose(c chan *amqp.Error) chan *amqp.Error

	Consume(queue, consumer string, autoAck, exclusive, noLocal, noWait bool, args amqp.Table) (<-chan amqp.Delivery, error)
	Cancel(consumer string, noWait bool) error
	Ack(tag uint64, multiple bool) error
	Nack(tag uint64, multiple, requeue bool) error
	Reject(tag uint64, requeue bool) error

	Close() error
	IsClosed() bool
}

var _ Channel = (*amqp.Channel)(nil)
