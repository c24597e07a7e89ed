package faultproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer accepts connections and echoes what it reads until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads it back within timeout.
func roundTrip(c net.Conn, msg string, timeout time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo differs: " + string(buf))
	}
	return nil
}

func TestStallOpenStallsOnlyOpenConnections(t *testing.T) {
	p := newProxy(t)
	old := dial(t, p)
	if err := roundTrip(old, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.StallOpen(); n != 1 {
		t.Fatalf("StallOpen stalled %d connections, want 1", n)
	}
	// The stalled connection forwards nothing, and stays open.
	err := roundTrip(old, "stalled", 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("round trip on a stalled connection: %v, want a timeout", err)
	}
	// A new connection flows.
	fresh := dial(t, p)
	if err := roundTrip(fresh, "fresh", 5*time.Second); err != nil {
		t.Fatalf("new connection during StallOpen: %v", err)
	}
	if p.Open() != 2 {
		t.Fatalf("Open = %d, want 2", p.Open())
	}
	// Stall(false) releases what the stalled connection held.
	p.Stall(false)
	if err := old.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("stalled"))
	if _, err := io.ReadFull(old, buf); err != nil || string(buf) != "stalled" {
		t.Fatalf("after resume read %q, %v; want the stalled bytes", buf, err)
	}
}

func TestStalledConnectionDoesNotForwardClose(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "x", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.StallOpen()
	c.Close()
	// The proxy keeps the pipe while stalled: the far side sees no close.
	fresh := dial(t, p)
	if err := roundTrip(fresh, "y", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Open() != 2 {
		t.Fatalf("Open = %d while stalled, want 2 (the closed client's pipe is kept)", p.Open())
	}
	p.Stall(false)
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for p.Open() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Open = %d after resume, want 1", p.Open())
		}
		<-tick.C
	}
}

func TestCutAndRefuse(t *testing.T) {
	p := newProxy(t)
	c := dial(t, p)
	if err := roundTrip(c, "a", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Refuse(true)
	p.Cut()
	if err := roundTrip(c, "b", 5*time.Second); err == nil {
		t.Fatal("round trip after Cut succeeded")
	}
	r := dial(t, p)
	if err := roundTrip(r, "c", 5*time.Second); err == nil {
		t.Fatal("round trip on a refused connection succeeded")
	}
	p.Refuse(false)
	if err := roundTrip(dial(t, p), "d", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Accepts() != 2 {
		t.Fatalf("Accepts = %d, want 2", p.Accepts())
	}
}
