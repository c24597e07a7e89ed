// Package interop tests OMQS for Go beside the Python original on one
// RabbitMQ broker. peer.py, the project's own Python client (pika), behaves
// on the wire and on disk as the original does; the tests in this package
// drive it against a Go Manager and Go consumers in both directions.
//
// The original's names are fixed and shared by every program on a broker
// ("omqs.queue.event", "omqs.exchange.log", "omqs.default.…"), so the tests
// here identify their messages by a unique marker in the body, never purge
// nor delete what they did not create, put back what is not theirs, run one
// at a time, and hold brokertest.LockLegacyNames while they use those names.
//
// They need RabbitMQ (see brokertest) and a python3 that can import pika
// (Debian's python3-pika; $OMQS_PYTHON names another interpreter). Without
// them the tests skip, or fail under OMQS_REQUIRE_BROKER=1.
package interop
