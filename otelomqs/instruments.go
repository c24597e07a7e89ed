package otelomqs

import (
	"errors"

	"go.opentelemetry.io/otel/metric"

	"github.com/omqs-go/omqs"
)

// counterDef is one observable counter read from a Snapshot.
type counterDef struct {
	name, unit, desc string
	consumer         bool // a consumer's count (else a publisher's)
	read             func(s *omqs.Snapshot) uint64
}

// counterDefs are the counters, in the order of instruments.counters.
var counterDefs = []counterDef{
	{"omqs.messages.accepted", "{message}", "Messages taken in by Send* or Publish.", false, func(s *omqs.Snapshot) uint64 { return s.Accepted }},
	{"omqs.messages.refused", "{message}", "Messages refused by Send* because the buffer was full.", false, func(s *omqs.Snapshot) uint64 { return s.Refused }},
	{"messaging.client.sent.messages", "{message}", "Messages written to a connection, republishes included.", false, func(s *omqs.Snapshot) uint64 { return s.Published }},
	{"omqs.messages.confirmed", "{message}", "Messages confirmed by the broker.", false, func(s *omqs.Snapshot) uint64 { return s.Confirmed }},
	{"omqs.messages.nacked", "{message}", "Messages refused (nacked) by the broker.", false, func(s *omqs.Snapshot) uint64 { return s.Nacked }},
	{"omqs.messages.returned", "{message}", "Messages returned by the broker as unroutable.", false, func(s *omqs.Snapshot) uint64 { return s.Returned }},
	{"omqs.messages.republished", "{message}", "Messages published again after a reconnect.", false, func(s *omqs.Snapshot) uint64 { return s.Republished }},
	{"omqs.messages.spooled", "{message}", "Messages written to the spool file.", false, func(s *omqs.Snapshot) uint64 { return s.Spooled }},
	{"omqs.messages.replayed", "{message}", "Messages read back from the spool file and confirmed.", false, func(s *omqs.Snapshot) uint64 { return s.Replayed }},
	{"omqs.messages.quarantined", "{message}", "Messages the broker refused by closing the channel, set aside and not retried.", false, func(s *omqs.Snapshot) uint64 { return s.Quarantined }},
	{"omqs.messages.dropped", "{message}", "Messages lost: neither confirmed nor spooled.", false, func(s *omqs.Snapshot) uint64 { return s.Dropped }},
	{"messaging.client.consumed.messages", "{message}", "Deliveries received by a consumer.", true, func(s *omqs.Snapshot) uint64 { return s.Deliveries }},
	{"omqs.consumer.acks", "{message}", "Deliveries acknowledged.", true, func(s *omqs.Snapshot) uint64 { return s.Acks }},
	{"omqs.consumer.rejects", "{message}", "Deliveries rejected without requeue (panics included).", true, func(s *omqs.Snapshot) uint64 { return s.Rejects }},
	{"omqs.consumer.requeues", "{message}", "Deliveries given back to the queue.", true, func(s *omqs.Snapshot) uint64 { return s.Requeues }},
	{"omqs.consumer.panics", "{message}", "Callbacks that panicked.", true, func(s *omqs.Snapshot) uint64 { return s.Panics }},
	{"omqs.consumer.delayed_retries", "{message}", "Deliveries copied to a retry queue to run again later (RetryAfter).", true, func(s *omqs.Snapshot) uint64 { return s.Retries }},
	{"omqs.consumer.deduplicated", "{message}", "Deliveries acknowledged without a callback: seen within the de-duplication window.", true, func(s *omqs.Snapshot) uint64 { return s.Duplicates }},
}

type instruments struct {
	counters   []metric.Int64ObservableCounter
	reconnects metric.Int64ObservableCounter
	blockedFor metric.Float64ObservableCounter
	depth      metric.Int64ObservableGauge
	inFlight   metric.Int64ObservableGauge
	up         metric.Int64ObservableGauge
	blocked    metric.Int64ObservableGauge
	confirm    metric.Float64Histogram
	process    metric.Float64Histogram
}

func (in *instruments) create(m metric.Meter) error {
	var errs []error
	keep := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range counterDefs {
		c, err := m.Int64ObservableCounter(d.name, metric.WithUnit(d.unit), metric.WithDescription(d.desc))
		keep(err)
		in.counters = append(in.counters, c)
	}
	var err error
	in.reconnects, err = m.Int64ObservableCounter("omqs.connection.reconnects", metric.WithUnit("{reconnect}"),
		metric.WithDescription("Successful reconnections."))
	keep(err)
	in.blockedFor, err = m.Float64ObservableCounter("omqs.connection.blocked.duration", metric.WithUnit("s"),
		metric.WithDescription("Time the broker kept the connection blocked."))
	keep(err)
	in.depth, err = m.Int64ObservableGauge("omqs.buffer.depth", metric.WithUnit("{message}"),
		metric.WithDescription("Messages waiting in a Manager lane's buffer."))
	keep(err)
	in.inFlight, err = m.Int64ObservableGauge("omqs.messages.in_flight", metric.WithUnit("{message}"),
		metric.WithDescription("Messages published and not yet confirmed; for a consumer, callbacks running."))
	keep(err)
	in.up, err = m.Int64ObservableGauge("omqs.connection.up",
		metric.WithDescription("1 while connected (a consumer: subscribed), else 0."))
	keep(err)
	in.blocked, err = m.Int64ObservableGauge("omqs.connection.blocked",
		metric.WithDescription("1 while the broker blocks the connection, else 0."))
	keep(err)
	in.confirm, err = m.Float64Histogram("messaging.client.operation.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from writing a message to the broker's confirm (or nack)."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	keep(err)
	in.process, err = m.Float64Histogram("messaging.process.duration", metric.WithUnit("s"),
		metric.WithDescription("Time a consumer's callback ran."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	keep(err)
	return errors.Join(errs...)
}

func (in *instruments) observables() []metric.Observable {
	obs := []metric.Observable{in.reconnects, in.blockedFor, in.depth, in.inFlight, in.up, in.blocked}
	for _, c := range in.counters {
		obs = append(obs, c)
	}
	return obs
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// observe reports one component's counters and gauges.
func (in *instruments) observe(r metric.Observer, c *component) {
	s := c.c.Snapshot()
	for i, d := range counterDefs {
		if d.consumer == c.c.Consumer {
			r.ObserveInt64(in.counters[i], int64(d.read(&s)), c.attrs)
		}
	}
	r.ObserveInt64(in.reconnects, int64(s.Reconnects), c.attrs)
	r.ObserveInt64(in.inFlight, int64(s.InFlight), c.attrs)
	r.ObserveInt64(in.up, b2i(s.Connected), c.attrs)
	if !c.c.Consumer {
		r.ObserveFloat64(in.blockedFor, s.Blocked.Seconds(), c.attrs)
		r.ObserveInt64(in.blocked, b2i(s.BlockedNow), c.attrs)
	}
	if c.c.Lane != "" {
		r.ObserveInt64(in.depth, int64(s.Depth), c.attrs)
	}
}
