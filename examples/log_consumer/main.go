// Command log_consumer prints the log records that Managers send, as they
// arrive. Keys are topic patterns over the levels: "#" (everything, the
// default), "error,fatal", "*".
//
//	go run ./examples/log_consumer -keys error,fatal -url amqp://guest:guest@localhost:5672/
//
// Without -queue it reads a server-named queue of its own, deleted when it
// exits: it sees a copy of every record and takes nothing from other
// readers. -queue names a queue to share instead (each record then goes to
// one of the readers of that queue), such as "omqs.queue.log".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/omqs-go/omqs"
)

func main() {
	keys := flag.String("keys", "#", "comma-separated topic patterns to bind (error, *.debug, #)")
	queue := flag.String("queue", "", "queue to share with other readers (default: a queue of its own, deleted on exit)")
	url := flag.String("url", os.Getenv("OMQS_MQURL"), "broker URL (default: $OMQS_MQURL, else MQURL of OMQS.cfg)")
	flag.Parse()

	var patterns []string
	for _, k := range strings.Split(*keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			patterns = append(patterns, k)
		}
	}
	opts := []omqs.Option{
		omqs.WithName("log_consumer"),
		omqs.WithCallback(func(ctx context.Context, d omqs.Delivery) error {
			fmt.Printf("%s [%s] %s\n", d.Timestamp.Format("2006-01-02 15:04:05"), d.RoutingKey, d.Body)
			return nil
		}),
	}
	opts = append(opts, omqs.WithQueue(*queue))
	if *url != "" {
		opts = append(opts, omqs.WithURL(*url))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	consumer, err := omqs.NewLogMsgConsumer(patterns, opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "log_consumer:", err)
		os.Exit(1)
	}
	if err := consumer.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "log_consumer:", err)
		os.Exit(1)
	}
}
