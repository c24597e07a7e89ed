package omqs

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/brokertest"
)

func TestSmokeEventRoundTrip(t *testing.T) {
	url := brokertest.URL(t)
	n := brokertest.NewNames(t)
	cfg := DefaultConfig()
	cfg.EventWorker.Exchange = n.Exchange
	cfg.EventWorker.Queue = n.Queue
	cfg.EventWorker.Keys = []string{n.Key}
	cfg.LogWorker.Exchange = n.Exchange + ".log"
	brokertest.Cleanup(t, []string{n.Exchange + ".log"}, nil)
	m, err := NewManager(WithConfig(cfg), WithURL(url), WithSpoolDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	const N = 10000
	for i := 0; i < N; i++ {
		if err := m.SendEvent("hello", ""); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	st := m.Stats()
	t.Logf("%+v", st)
	ch := brokertest.Channel(t)
	q, err := ch.QueueDeclarePassive(n.Queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != N {
		t.Fatalf("queue has %d messages, want %d", q.Messages, N)
	}
	_ = amqp.Persistent
}
