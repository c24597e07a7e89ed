package transport

import "github.com/omqs-go/omqs/internal/membroker"

// The in-process broker's channel implements Channel.
var _ Channel = (*membroker.Channel)(nil)

func dialMemory(name string) (Conn, error) {
	c, err := membroker.Dial(name)
	if err != nil {
		return nil, err
	}
	return memConn{c}, nil
}

// memConn adapts *membroker.Connection to Conn.
type memConn struct{ *membroker.Connection }

func (c memConn) Channel() (Channel, error) {
	ch, err := c.Connection.Channel()
	if err != nil {
		return nil, err
	}
	return ch, nil
}
