// Package benchkit holds the raw amqp091-go baselines and the helpers that
// the Go benchmarks and the omqs-bench program share, so that OMQS and raw
// amqp091-go are measured the same way in the same run.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Body is a message of about one hundred bytes, like a log line or an event.
const Body = "a benchmark message of about one hundred bytes, as a typical log line or event would be....."

// Topology is an exchange with one queue bound to it by Key.
type Topology struct {
	Exchange string
	Kind     string // default "topic"
	Durable  bool   // exchange and queue
	Queue    string
	Key      string
}

// Declare declares t on the broker at url.
func Declare(url string, t Topology) error {
	return withChannel(url, func(ch *amqp.Channel) error {
		kind := t.Kind
		if kind == "" {
			kind = "topic"
		}
		if err := ch.ExchangeDeclare(t.Exchange, kind, t.Durable, false, false, false, nil); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(t.Queue, t.Durable, false, false, false, nil); err != nil {
			return err
		}
		return ch.QueueBind(t.Queue, t.Key, t.Exchange, false, nil)
	})
}

// Delete removes t's queue and exchange.
func Delete(url string, t Topology) error {
	return withChannel(url, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDelete(t.Queue, false, false, false); err != nil {
			return err
		}
		return ch.ExchangeDelete(t.Exchange, false, false)
	})
}

// Purge empties t's queue.
func Purge(url string, t Topology) error {
	return withChannel(url, func(ch *amqp.Channel) error {
		_, err := ch.QueuePurge(t.Queue, false)
		return err
	})
}

func withChannel(url string, f func(*amqp.Channel) error) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return f(ch)
}

// Props says what each message of RawPublishProps carries besides a
// persistent body: the plain client a user writes sets none of them.
type Props struct {
	Mandatory   bool
	MessageID   bool
	AppID       bool
	Timestamp   bool
	ContentType bool
}

// Plain is what a user's own amqp091-go publisher sends: persistent bodies.
var Plain = Props{}

// AsOMQS is what an OMQS message carries when the sender gives no content
// type and no app id and the publisher's own queue is bound to receive it
// (so it goes without the mandatory flag): an id of the same form and a
// timestamp.
var AsOMQS = Props{MessageID: true, Timestamp: true}

// PlainWindow is the number of unconfirmed messages the plain client keeps,
// as the raw amqp091-go driver of the independent peers harness does.
const PlainWindow = 1000

// AllProps is every property the benchmark knows: AsOMQS with a content
// type and an app id (what every OMQS message carried before).
var AllProps = Props{Mandatory: true, MessageID: true, AppID: true, Timestamp: true, ContentType: true}

// RawPublish publishes n persistent messages carrying what OMQS's do
// (AsOMQS) to t; see RawPublishProps.
func RawPublish(url string, t Topology, n, window int) (time.Duration, error) {
	return RawPublishProps(url, t, n, window, AsOMQS)
}

// RawPublishProps publishes n persistent messages with props to t with raw
// amqp091-go in confirm mode, pipelined with at most window unconfirmed, and
// returns the time from the first publish to the last confirm.
func RawPublishProps(url string, t Topology, n, window int, props Props) (time.Duration, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, window+16))
	slots := make(chan struct{}, window)
	done := make(chan error, 1)
	go func() {
		acked := 0
		for c := range confirms {
			<-slots
			if !c.Ack {
				done <- errors.New("nacked")
				return
			}
			if acked++; acked == n {
				done <- nil
				return
			}
		}
		done <- errors.New("channel closed")
	}()
	if props.Mandatory {
		returns := ch.NotifyReturn(make(chan amqp.Return, window+16))
		go func() {
			for range returns {
			}
		}()
	}
	body := []byte(Body)
	prefix := fmt.Sprintf("%016x-", time.Now().UnixNano())
	start := time.Now()
	for i := 1; i <= n; i++ {
		slots <- struct{}{}
		msg := amqp.Publishing{DeliveryMode: amqp.Persistent, Body: body}
		if props.ContentType {
			msg.ContentType = "text/plain; charset=utf-8"
		}
		if props.MessageID {
			msg.MessageId = prefix + strconv.Itoa(i)
		}
		if props.Timestamp {
			msg.Timestamp = time.Now()
		}
		if props.AppID {
			msg.AppId = "raw-amqp091"
		}
		if err := ch.PublishWithContext(context.Background(), t.Exchange, t.Key, props.Mandatory, false, msg); err != nil {
			return 0, err
		}
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Fill publishes n messages to t and waits for their confirms.
func Fill(url string, t Topology, n int) error {
	_, err := RawPublish(url, t, n, 1000)
	return err
}

// RawConsume consumes n messages from queue with raw amqp091-go, manual ack
// per message and the given prefetch, and returns the time from connecting
// to the last ack.
func RawConsume(url, queue string, n, prefetch int) (time.Duration, error) {
	start := time.Now()
	conn, err := amqp.Dial(url)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return 0, err
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	for i := 0; i < n; i++ {
		d, ok := <-deliveries
		if !ok {
			return 0, fmt.Errorf("deliveries closed after %d", i)
		}
		if err := d.Ack(false); err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// Percentile returns the p-th percentile (0 < p < 100) of samples, sorting
// them in place.
func Percentile(samples []int64, p float64) int64 {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	i := int(float64(len(samples)) * p / 100)
	if i >= len(samples) {
		i = len(samples) - 1
	}
	return samples[i]
}

// Median returns the median of xs (sorting a copy).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TimerOverhead returns the median and 99th percentile cost of timing an
// empty region with time.Now and time.Since on this machine, to subtract from
// per-call timings (on some virtual machines a clock read costs tens of
// nanoseconds).
func TimerOverhead(samples int) (p50, p99 int64) {
	lat := make([]int64, samples)
	for i := range lat {
		t0 := time.Now()
		lat[i] = int64(time.Since(t0))
	}
	return Percentile(lat, 50), Percentile(slices.Clone(lat), 99)
}

// Net subtracts the timer's cost from a timed figure, never going below zero.
func Net(timed, overhead int64) int64 { return max(timed-overhead, 0) }
