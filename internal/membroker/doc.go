// Package membroker is an in-process message broker that behaves like
// RabbitMQ 3.10 for everything OMQS uses, so that the memory:// URL runs the
// same publisher and consumer code without a RabbitMQ server.
package membroker
