// Package fakeamqp is an AMQP 0-9-1 server for tests that stalls: it
// completes the connection handshake, sends heartbeats so that the client
// keeps the connection, and then leaves a chosen request unanswered. It
// listens on loopback only, and every connection ends when the server is
// closed or after MaxLifetime.
//
// Frames are encoded by hand (see the AMQP 0-9-1 specification, section
// 4.2.3, and amqp091-go's read.go and write.go); it speaks just enough of
// the protocol for a client to reach the request it stalls on.
package fakeamqp

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Stall is the request the server never answers.
type Stall int

const (
	// ChannelOpen leaves Channel.Open unanswered.
	ChannelOpen Stall = iota
	// ExchangeDeclare answers Channel.Open but leaves every other channel
	// request (Exchange.Declare, Queue.Declare, Confirm.Select, Basic.Qos,
	// ...) unanswered.
	ExchangeDeclare
)

// MaxLifetime bounds a connection's life, so that a test that forgets to
// close the server does not keep a client waiting forever.
const MaxLifetime = time.Minute

// Heartbeat is the heartbeat interval the server proposes in Connection.Tune.
// It sends a heartbeat frame every half of it.
const Heartbeat = time.Second

const (
	frameMethod    = 1
	frameHeartbeat = 8
	frameEnd       = 0xCE
)

// Server is a listening fake broker.
type Server struct {
	ln    net.Listener
	stall Stall

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	accepted int
	requests []string // "class.method" of the stalled requests received
	closed   bool
	done     chan struct{}
	wg       sync.WaitGroup
}

// Start listens on a loopback port and serves until Close.
func Start(stall Stall) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, stall: stall, conns: make(map[net.Conn]struct{}), done: make(chan struct{})}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// URL is an amqp:// URL for the server.
func (s *Server) URL() string { return "amqp://guest:guest@" + s.ln.Addr().String() + "/" }

// Accepted is how many connections the server accepted.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Stalled lists the requests left unanswered so far, as "class.method"
// numbers ("20.10" is Channel.Open, "40.10" Exchange.Declare).
func (s *Server) Stalled() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// Close stops listening, closes every connection and waits for the
// server's goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.done)
		for c := range s.conns {
			c.Close()
		}
	}
	s.mu.Unlock()
	s.ln.Close()
	s.wg.Wait()
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.accepted++
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	_ = c.SetDeadline(time.Now().Add(MaxLifetime))
	cn := &conn{c: c, r: bufio.NewReader(c)}
	if err := cn.handshake(); err != nil {
		return
	}
	stop := make(chan struct{})
	defer close(stop)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(Heartbeat / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if cn.write(frameHeartbeat, 0, nil) != nil {
					return
				}
			case <-stop:
				return
			case <-s.done:
				return
			}
		}
	}()
	for {
		typ, ch, payload, err := cn.read()
		if err != nil {
			return
		}
		if typ != frameMethod || len(payload) < 4 {
			continue
		}
		class, method := binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:])
		switch {
		case class == 10 && method == 50: // Connection.Close
			_ = cn.method(0, 10, 51, nil)
			return
		case class == 20 && method == 40: // Channel.Close
			_ = cn.method(ch, 20, 41, nil)
		case class == 20 && method == 10 && s.stall == ExchangeDeclare: // Channel.Open
			_ = cn.method(ch, 20, 11, longstr("")) // Channel.Open-Ok
		default:
			s.mu.Lock()
			s.requests = append(s.requests, fmt.Sprintf("%d.%d", class, method))
			s.mu.Unlock()
		}
	}
}

// conn is one client connection. Writes come from two goroutines.
type conn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

func (c *conn) handshake() error {
	header := make([]byte, 8)
	if _, err := io.ReadFull(c.r, header); err != nil {
		return err
	}
	if string(header) != "AMQP\x00\x00\x09\x01" {
		return errors.New("fakeamqp: not AMQP 0-9-1")
	}
	// Connection.Start: version 0-9, no server properties, PLAIN, en_US.
	args := []byte{0, 9}
	args = append(args, 0, 0, 0, 0)
	args = append(args, longstr("PLAIN")...)
	args = append(args, longstr("en_US")...)
	if err := c.method(0, 10, 10, args); err != nil {
		return err
	}
	if err := c.expect(10, 11); err != nil { // Start-Ok
		return err
	}
	// Connection.Tune: channel-max, frame-max, heartbeat (seconds).
	args = binary.BigEndian.AppendUint16(nil, 2047)
	args = binary.BigEndian.AppendUint32(args, 131072)
	args = binary.BigEndian.AppendUint16(args, uint16(Heartbeat/time.Second))
	if err := c.method(0, 10, 30, args); err != nil {
		return err
	}
	if err := c.expect(10, 31); err != nil { // Tune-Ok
		return err
	}
	if err := c.expect(10, 40); err != nil { // Open
		return err
	}
	return c.method(0, 10, 41, []byte{0}) // Open-Ok, reserved shortstr
}

// expect reads frames up to the method class.method, skipping heartbeats.
func (c *conn) expect(class, method uint16) error {
	for {
		typ, _, p, err := c.read()
		if err != nil {
			return err
		}
		if typ == frameHeartbeat {
			continue
		}
		if typ != frameMethod || len(p) < 4 || binary.BigEndian.Uint16(p) != class || binary.BigEndian.Uint16(p[2:]) != method {
			return fmt.Errorf("fakeamqp: want method %d.%d", class, method)
		}
		return nil
	}
}

func (c *conn) read() (typ byte, ch uint16, payload []byte, err error) {
	var h [7]byte
	if _, err = io.ReadFull(c.r, h[:]); err != nil {
		return
	}
	typ, ch = h[0], binary.BigEndian.Uint16(h[1:])
	size := binary.BigEndian.Uint32(h[3:])
	if size > 1<<20 {
		return 0, 0, nil, errors.New("fakeamqp: frame too large")
	}
	payload = make([]byte, size+1)
	if _, err = io.ReadFull(c.r, payload); err != nil {
		return
	}
	if payload[size] != frameEnd {
		return 0, 0, nil, errors.New("fakeamqp: bad frame end")
	}
	return typ, ch, payload[:size], nil
}

func (c *conn) method(ch, class, method uint16, args []byte) error {
	p := binary.BigEndian.AppendUint16(nil, class)
	p = binary.BigEndian.AppendUint16(p, method)
	return c.write(frameMethod, ch, append(p, args...))
}

func (c *conn) write(typ byte, ch uint16, payload []byte) error {
	f := []byte{typ}
	f = binary.BigEndian.AppendUint16(f, ch)
	f = binary.BigEndian.AppendUint32(f, uint32(len(payload)))
	f = append(f, payload...)
	f = append(f, frameEnd)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err := c.c.Write(f)
	return err
}

func longstr(s string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
}
