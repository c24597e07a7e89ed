// Package membroker is an in-process message broker that behaves like a
// RabbitMQ 3.10 node for everything OMQS does with amqp091-go, so that the
// URL memory:// (or memory://NAME) runs the same publisher and consumer code,
// and the same tests, without a RabbitMQ server.
//
// Connection and Channel have the methods of *amqp091.Connection and
// *amqp091.Channel that package transport uses, with amqp091's value types
// (Publishing, Delivery, Confirmation, Return, Blocking, *Error, Table, Queue)
// and amqp091's client-side behaviour: a Channel fails with amqp.ErrClosed
// once closed, notification listeners are served in order and closed when
// their channel or connection closes, a short string over 255 bytes is
// refused with amqp091's encoding error and closes the connection.
//
// # Brokers
//
// Dial(name) connects to the broker called name; every connection with the
// same name shares it, and Get(name) returns it to tests. The brokers of the
// process are kept in one registry, the package's only global state, and live
// as long as the process, like a RabbitMQ node: exchanges and queues, durable
// or not, stay until they are deleted (or the broker is Reset). A broker has a
// single virtual host, "/".
//
// # What is modelled
//
// Exchanges: the default exchange (routing to the queue named by the key,
// which cannot be declared, deleted or bound: 403), amq.direct, amq.fanout,
// amq.topic, amq.headers and amq.match; types direct, fanout, topic ("*" is
// one word, "#" zero or more) and headers (x-match all, any, all-with-x,
// any-with-x); internal exchanges; alternate-exchange; auto-delete exchanges
// (deleted when their last binding goes); the CC and BCC routing headers.
// Declaring an unknown type closes the connection with 503 COMMAND_INVALID;
// redeclaring with another type, durability, auto-delete, internal flag or
// alternate exchange fails with 406 and RabbitMQ's text; names starting with
// "amq." are reserved (403).
//
// Queues: durable, auto-delete (deleted when the last consumer goes),
// exclusive (usable only by the declaring connection, 405 RESOURCE_LOCKED
// for others, deleted when it closes), server-named ("amq.gen-..."), passive
// declares, and RabbitMQ's empty-name shortcut for the last queue declared on
// the channel. Arguments are validated as RabbitMQ 3.10 validates them, and
// those RabbitMQ compares on redeclare are compared (406 with RabbitMQ's
// text). The arguments that change behaviour are x-queue-type (classic or
// quorum; quorum queues must be durable, neither exclusive nor auto-delete,
// refuse consumers on a channel with a global prefetch, count redeliveries in
// the x-delivery-count header and honour x-delivery-limit), x-max-length with
// x-overflow drop-head (the default), reject-publish and reject-publish-dlx,
// x-dead-letter-exchange, x-dead-letter-routing-key, x-message-ttl and
// x-single-active-consumer. Messages also expire by their Expiration property.
// Expired messages leave a queue from its head, as in RabbitMQ.
//
// Publishing: publisher confirms (delivery tags from 1, a Confirmation per
// publish, in order; a nack when a queue refuses the message because it is
// full), mandatory returns (312 NO_ROUTE, sent before the confirm), and
// RabbitMQ's asynchronous errors: publishing to a missing exchange (404), to
// an internal exchange (403) or with a bad expiration (406) closes the channel
// after PublishWithContext returned nil; immediate=true closes the connection
// (540). Messages over 128 MiB, RabbitMQ's default max_message_size, are
// refused (406).
//
// Consuming: competing consumers served round-robin, exclusive consumers,
// prefetch per consumer (Qos with global false, for consumers started
// afterwards) and per channel (global true), automatic and manual
// acknowledgement, Ack, Nack and Reject with multiple and requeue (a requeued
// message goes back to the head of its queue marked Redelivered), rejection
// without requeue dead-lettering with an x-death header (queue, reason,
// count, time, exchange, routing-keys) and the x-first-death-* headers,
// 406 "unknown delivery tag" for a tag that is not outstanding, Cancel
// (deliveries in flight are still handed over, then the delivery channel is
// closed), and the requeueing of every unacknowledged delivery, marked
// Redelivered, when a channel or connection closes. Deliveries carry every
// property of the Publishing, with headers as amqp091 decodes them (an int is
// read back as int32, a time.Time to the second).
//
// Faults: Broker.CloseAllConnections closes every connection as
// `rabbitmqctl close_all_connections` does (320 CONNECTION_FORCED);
// Broker.SetBlocked raises a memory alarm: publishes block, and connections
// are notified with connection.blocked and connection.unblocked (a
// connection opened during the alarm when it first publishes, as RabbitMQ
// blocks a connection when it publishes).
// Broker.Reset restores a broker's initial state between tests, and
// Broker.Connections tells a test whether a client closed what it opened.
//
// Two suites hold the broker to RabbitMQ: this package's conformance tests
// run each scenario through transport.Dial on both brokers, and package
// omqs runs its publisher, Manager and consumer behaviour tests on memory://
// and on RabbitMQ alike.
//
// # What differs from RabbitMQ
//
// Nothing is persisted: durable entities and persistent messages last as
// long as the process. Only connections of the same process reach a broker;
// there is no network, TLS, authentication, heartbeat or TCP back-pressure
// (a blocked publish waits in PublishWithContext and returns when its context
// ends), and Dial never fails: a client's reconnect settings come into play
// only when the broker closes its connections (CloseAllConnections, Reset). Exchange-to-exchange bindings, basic.get, transactions, priority
// queues, streams (refused with 406), queue expiry (x-expires), lazy mode,
// x-max-length-bytes and user-id validation are not modelled; the arguments
// of the latter are accepted as RabbitMQ accepts them but have no effect.
// prefetch_size is refused with 540, as by RabbitMQ.
//
// Memory is bounded. A queue declared without x-max-length holds at most
// DefaultMaxQueueLength ready messages; a publish to a queue at that limit is
// rejected (like x-overflow reject-publish): nacked in confirm mode, otherwise
// dropped and counted in Stats.Dropped. A consumer without a prefetch limit
// takes at most 1024 messages off its queue ahead of its receiver; the rest
// wait in the queue and count towards its limit. A queue with an explicit
// x-max-length follows its x-overflow. A channel queues at most 4096
// confirms and returns for NotifyPublish and NotifyReturn listeners that do
// not take them at once; while that many are queued, PublishWithContext on
// the channel waits (returning when its context ends or the channel closes),
// as a publisher whose amqp091 reader is stuck waits on TCP.
//
// # Goroutines and locks
//
// Every goroutine has an owner and ends with it: each consumer has one, which
// hands deliveries to the unbuffered delivery channel and ends when the
// consumer is cancelled and drained or its channel closes; a channel's or a
// connection's notifications are delivered by a goroutine that exists only
// while a listener is slow, and closing waits for it; a queue whose head
// message expires arms a timer. No broker lock is held while a user's channel
// is waited for, so a slow consumer or listener never holds up other queues,
// channels or connections. A notification that a listener does not take
// within 5 seconds is dropped for that listener, as amqp091 does; a close
// error is only given to listeners that can take it at once (buffered
// listeners), as amqp091 v1.16 does.
package membroker
