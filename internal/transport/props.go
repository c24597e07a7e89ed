package transport

import amqp "github.com/rabbitmq/amqp091-go"

// ServerProperties returns the properties the broker announced when c was
// opened ("product", "version", "cluster_name", ...), or nil for a connection
// to the in-process broker, which announces none.
func ServerProperties(c Conn) amqp.Table {
	if a, ok := c.(amqpConn); ok && a.Connection != nil {
		return a.Properties
	}
	return nil
}
