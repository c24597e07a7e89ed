package fakeamqp

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The handshake completes, the connection outlives several heartbeat
// intervals, and the stalled request stays unanswered until Close.
func TestStalls(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stall Stall
		want  string
	}{
		{"channel open", ChannelOpen, "20.10"},
		{"exchange declare", ExchangeDeclare, "40.10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(tc.stall)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			c, err := amqp.DialConfig(s.URL(), amqp.Config{Heartbeat: Heartbeat})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			done := make(chan error, 1)
			go func() {
				ch, err := c.Channel()
				if err == nil {
					err = ch.ExchangeDeclare("x", "topic", false, false, false, false, nil)
				}
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("the stalled request was answered: %v", err)
			case <-time.After(3 * Heartbeat): // the client would give up on missed heartbeats by now
			}
			if got := s.Stalled(); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("stalled requests %v, want [%s]", got, tc.want)
			}
			if c.IsClosed() {
				t.Fatal("the client closed the connection: heartbeats missing")
			}
			s.Close()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("request succeeded after Close")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the request did not end when the server closed")
			}
			if s.Accepted() != 1 {
				t.Fatalf("accepted %d connections, want 1", s.Accepted())
			}
		})
	}
}
