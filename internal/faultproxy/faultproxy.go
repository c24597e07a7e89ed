// Package faultproxy is a TCP proxy for tests that injects network faults
// between a client and a broker: refusing connections, cutting them,
// stalling them (bytes stop flowing, sockets stay open) and slowing them.
package faultproxy

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections from Addr() to a target address.
type Proxy struct {
	target string
	ln     net.Listener
	tls    *tls.Config // when set, the proxy terminates TLS

	mu      sync.Mutex
	refuse  bool
	stalled bool
	delay   time.Duration // added before each forwarded chunk
	cond    *sync.Cond    // signalled when stalled or closed change
	conns   map[*pipe]struct{}
	closed  bool
	accepts int

	wg sync.WaitGroup
}

type pipe struct {
	client, server net.Conn
	stalled        bool // guarded by Proxy.mu; see StallOpen
}

// New starts a proxy on a random local port forwarding to target.
func New(target string) (*Proxy, error) { return NewTLS(target, nil) }

// NewTLS starts a proxy that accepts TLS connections with cfg (nil: plain
// TCP) and forwards the decrypted stream to target.
func NewTLS(target string, cfg *tls.Config) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, tls: cfg, conns: make(map[*pipe]struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepts returns how many connections the proxy accepted and forwarded.
func (p *Proxy) Accepts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		if p.tls != nil {
			tc := tls.Server(c, p.tls)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				tc.Close()
				continue
			}
			tc.SetDeadline(time.Time{})
			c = tc
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		pp := &pipe{client: c, server: s}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		p.conns[pp] = struct{}{}
		p.accepts++
		p.mu.Unlock()
		p.wg.Add(2)
		go p.copy(pp, s, c)
		go p.copy(pp, c, s)
	}
}

func (p *Proxy) copy(pp *pipe, dst, src net.Conn) {
	defer p.wg.Done()
	defer p.drop(pp)
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		// While stalled nothing goes through, not even a close.
		if !p.wait(pp, n > 0) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// wait blocks while the proxy or pp is stalled and, for data, applies the
// delay; false when the proxy closed.
func (p *Proxy) wait(pp *pipe, data bool) bool {
	p.mu.Lock()
	for (p.stalled || pp.stalled) && !p.closed {
		p.cond.Wait()
	}
	d, closed := p.delay, p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	if d > 0 && data {
		time.Sleep(d)
	}
	return true
}

func (p *Proxy) drop(pp *pipe) {
	pp.client.Close()
	pp.server.Close()
	p.mu.Lock()
	delete(p.conns, pp)
	p.mu.Unlock()
}

// Refuse makes the proxy close new connections at once (as if the broker
// were down) while on is true.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Cut closes every open connection (a network cut).
func (p *Proxy) Cut() {
	p.mu.Lock()
	conns := make([]*pipe, 0, len(p.conns))
	for pp := range p.conns {
		conns = append(conns, pp)
	}
	p.mu.Unlock()
	for _, pp := range conns {
		pp.client.Close()
		pp.server.Close()
	}
}

// Stall stops (true) or resumes (false) forwarding bytes in both directions
// without closing anything. Stall(false) also resumes the connections
// StallOpen stalled.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	p.stalled = on
	if !on {
		for pp := range p.conns {
			pp.stalled = false
		}
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// StallOpen stops forwarding bytes on the connections open now, in both
// directions, without closing them, while connections accepted later flow
// normally: a peer that goes silent on an established connection, which only
// heartbeats (or a read timeout) can detect, while the network still lets a
// new connection through. It returns how many connections it stalled.
// Stall(false) resumes them.
func (p *Proxy) StallOpen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pp := range p.conns {
		pp.stalled = true
	}
	return len(p.conns)
}

// Open returns how many connections the proxy is forwarding now.
func (p *Proxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Slow delays every forwarded chunk by d (0 for none).
func (p *Proxy) Slow(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

var _ io.Closer = (*Proxy)(nil)
