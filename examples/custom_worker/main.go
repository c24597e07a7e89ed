// Command custom_worker replaces the Manager's built-in event worker with one
// of its own: it stamps every event with a header naming the host and
// publishes it through an AsyncPublisher to its own exchange, and a consumer
// prints what arrives.
//
//	go run ./examples/custom_worker                 # in-process broker
//	go run ./examples/custom_worker -url amqp://guest:guest@localhost:5672/
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/omqs-go/omqs"
)

// StampingWorker is a MsgWorker: the Manager calls WorkerWillRun once,
// MsgDidReceive for every event, and WorkerWillStop once.
type StampingWorker struct {
	URL      string
	Exchange string
	host     string
	pub      *omqs.AsyncPublisher
}

// WorkerWillRun sets up the publisher before the first message.
func (w *StampingWorker) WorkerWillRun(ctx context.Context) error {
	w.host, _ = os.Hostname()
	pub, err := omqs.NewAsyncPublisher(
		omqs.WithURL(w.URL),
		omqs.WithName("stamping-worker"),
		omqs.WithExchange(w.Exchange, "topic", true),
		omqs.WithQueue(""), // the consumers declare their own queues
	)
	if err != nil {
		return err
	}
	if err := pub.Start(ctx); err != nil {
		return err
	}
	w.pub = pub
	return nil
}

// MsgDidReceive adds a header and publishes the event.
func (w *StampingWorker) MsgDidReceive(ctx context.Context, msg omqs.Message) error {
	msg.Headers = map[string]any{"x-host": w.host}
	return w.pub.PublishMessage(ctx, msg)
}

// WorkerWillStop waits for the broker's confirms and closes the publisher.
func (w *StampingWorker) WorkerWillStop(ctx context.Context) error {
	if w.pub == nil {
		return nil
	}
	return w.pub.Stop(ctx)
}

func main() {
	url := flag.String("url", envOr("OMQS_MQURL", "memory://"), "broker URL")
	flag.Parse()
	if err := run(*url); err != nil {
		log.Fatal(err)
	}
}

func run(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const exchange = "omqs.example.stamped"

	// The consumer binds its queue first so no event is unroutable.
	var wg sync.WaitGroup
	got := make(chan struct{}, 3)
	consumer, err := omqs.NewSyncConsumer(
		omqs.WithURL(url),
		omqs.WithExchange(exchange, "topic", true),
		omqs.WithQueue(""),
		omqs.WithKeys("#"),
		omqs.WithCallback(func(_ context.Context, d omqs.Delivery) error {
			fmt.Printf("received %q with key %q from host header %v\n", d.Body, d.RoutingKey, d.Headers["x-host"] != nil)
			got <- struct{}{}
			return nil
		}),
	)
	if err != nil {
		return err
	}
	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := consumer.Run(cctx); err != nil {
			log.Print(err)
		}
	}()
	for !consumer.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}

	m, err := omqs.NewManager(omqs.WithURL(url), omqs.WithEventWorker(&StampingWorker{URL: url, Exchange: exchange}))
	if err != nil {
		return err
	}
	if err := m.Start(ctx); err != nil {
		return err
	}
	for _, e := range []string{"signup", "email", "notification"} {
		if err := m.SendEvent(e+" happened", "example."+e); err != nil {
			return err
		}
	}
	if err := m.Stop(ctx); err != nil {
		return err
	}
	for i := 0; i < 3; i++ {
		select {
		case <-got:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	stopConsumer()
	wg.Wait()
	return consumer.Stop(ctx)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
