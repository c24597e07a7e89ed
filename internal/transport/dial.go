package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DialOptions tune Dial.
type DialOptions struct {
	// Name is sent to the broker as the connection_name client property.
	Name string
	// TLS, when not nil, is used for amqps:// instead of the URL's
	// cacertfile, certfile, keyfile and server_name_indication parameters.
	TLS *tls.Config
	// Timeout bounds the TCP connect and the AMQP handshake (default 30s);
	// ctx's deadline bounds it too.
	Timeout time.Duration
}

// DialError is returned by Dial. Permanent is true when trying the same
// address again cannot help (wrong credentials, missing vhost, untrusted
// certificate); Err is the underlying error, often an *amqp091.Error.
type DialError struct {
	Endpoint  string // redacted address
	Permanent bool
	Err       error
}

func (e *DialError) Error() string {
	return Redact(fmt.Sprintf("dial %s: %v", e.Endpoint, e.Err))
}

func (e *DialError) Unwrap() error { return e.Err }

// Dial connects to ep.
func Dial(ctx context.Context, ep Endpoint, o DialOptions) (Conn, error) {
	if ep.Memory {
		c, err := dialMemory(ep.Name)
		if err != nil {
			return nil, &DialError{Endpoint: ep.String(), Permanent: true, Err: err}
		}
		return c, nil
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	if ep.URI.ConnectionTimeout > 0 {
		timeout = time.Duration(ep.URI.ConnectionTimeout) * time.Millisecond
	}
	props := amqp.NewConnectionProperties()
	if o.Name != "" {
		props.SetClientConnectionName(o.Name)
	}
	// amqp091 calls Dial once, on this goroutine, before DialConfig returns
	// (it redials on its own only with Config.Recovery, which is not set), so
	// stopAbort and sock need no lock.
	var (
		stopAbort func() bool
		sock      net.Conn
		batch     *batchConn
	)
	tlsCfg := o.TLS.Clone() // amqp091 sets ServerName on it
	if tlsCfg == nil && ep.URI.Scheme == "amqps" {
		// Read the URL's certificate files here, through a size limit,
		// rather than let amqp091 read them whole at each dial.
		var err error
		if tlsCfg, err = tlsConfigFor(ep.URI); err != nil {
			return nil, &DialError{Endpoint: ep.String(), Err: err}
		}
	}
	cfg := amqp.Config{
		Properties:      props,
		TLSClientConfig: tlsCfg,
		FrameSize:       ep.FrameSize,
		Locale:          ep.Locale,
		Dial: func(network, addr string) (net.Conn, error) {
			dctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			var d net.Dialer
			conn, err := d.DialContext(dctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake must finish in time; amqp091 clears the deadline once open.
			if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
				conn.Close()
				return nil, err
			}
			// Abort a handshake that is still going when ctx ends.
			stopAbort = context.AfterFunc(ctx, func() { conn.Close() })
			sock = conn
			batch = newBatchConn(conn)
			return batch, nil
		},
	}
	c, err := amqp.DialConfig(ep.URL, cfg)
	aborted := stopAbort != nil && !stopAbort()
	if aborted || (err != nil && ctx.Err() != nil) {
		if c != nil {
			c.Close()
		}
		return nil, &DialError{Endpoint: ep.String(), Err: ctx.Err()}
	}
	if err != nil {
		return nil, &DialError{Endpoint: ep.String(), Permanent: permanent(err), Err: err}
	}
	if batch != nil {
		batch.start()
	}
	closeSocketWhenDead(c, sock)
	return amqpConn{Connection: c, sock: sock}, nil
}

// closeSocketWhenDead closes sock as soon as c fails (a missed heartbeat, a
// read or write error, the broker closing it).
//
// amqp091 tells close listeners why a connection failed before it shuts the
// connection's channels down, and shutting a channel down waits for a
// publish that is writing to the socket. When the peer stopped reading (a
// stalled network that drops packets without a reset, a proxy that hangs)
// and the socket's send buffer is full, that write would wait for the
// kernel to give up on the connection (many minutes), and so would the
// publisher that owns it. Closing the socket makes the write fail at once.
func closeSocketWhenDead(c *amqp.Connection, sock net.Conn) {
	if sock == nil {
		return
	}
	failed := c.NotifyClose(make(chan *amqp.Error, 1))
	go func() {
		// The channel is closed without a value when the connection is
		// closed on purpose; it is closed in every case.
		if e := <-failed; e != nil {
			sock.Close()
		}
	}()
}

// permanent reports whether a dial error will not go away by retrying.
func permanent(err error) bool {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.AccessRefused, amqp.NotAllowed, amqp.InvalidPath:
			return true
		}
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	var re tls.RecordHeaderError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &ve) || errors.As(err, &re)
}

// amqpConn adapts *amqp.Connection to Conn.
type amqpConn struct {
	*amqp.Connection
	sock net.Conn // the socket under it, or nil
}

// CloseDeadline closes the connection, waiting for the broker's answer
// until deadline. A deadline that has passed (an abort) closes the socket
// first: amqp091 sets the deadline only when its close is the first one, so
// a close already under way (after a failure, waiting for a write stuck on a
// stalled network) would otherwise keep that write, and whoever waits for
// it, stuck until the kernel gives up on the connection.
func (c amqpConn) CloseDeadline(deadline time.Time) error {
	if c.sock != nil && !time.Now().Before(deadline) {
		c.sock.Close()
	}
	return c.Connection.CloseDeadline(deadline)
}

func (c amqpConn) Channel() (Channel, error) {
	ch, err := c.Connection.Channel()
	if err != nil {
		return nil, err
	}
	return ch, nil
}
