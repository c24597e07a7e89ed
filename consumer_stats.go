package omqs

import "sync/atomic"

// ConsumerStats counts what a consumer did with its deliveries since it was
// built.
type ConsumerStats struct {
	Deliveries uint64 // received from the broker
	Acks       uint64 // acknowledged (duplicates and retries included)
	Rejects    uint64 // rejected without requeue (dead-lettered where the queue has a dead-letter exchange)
	Requeues   uint64 // sent back to the queue
	Duplicates uint64 // acknowledged without calling the callback: handled within the de-duplication window (WithDedup)
	Retries    uint64 // copied to a retry queue and acknowledged, to run again later (RetryAfter)
}

// consumerCounters are the live, atomically updated ConsumerStats.
type consumerCounters struct {
	deliveries, acks, rejects, requeues, duplicates, retries atomic.Uint64
}

// Stats returns a snapshot of the consumer's counters. It is safe for
// concurrent use, during and after Run.
func (c *consumer) Stats() ConsumerStats {
	if c == nil {
		return ConsumerStats{}
	}
	return ConsumerStats{
		Deliveries: c.st.deliveries.Load(),
		Acks:       c.st.acks.Load(),
		Rejects:    c.st.rejects.Load(),
		Requeues:   c.st.requeues.Load(),
		Duplicates: c.st.duplicates.Load(),
		Retries:    c.st.retries.Load(),
	}
}

// settledCount is how many deliveries the consumer acknowledged, rejected
// or requeued so far.
func (c *consumer) settledCount() uint64 {
	return c.st.acks.Load() + c.st.rejects.Load() + c.st.requeues.Load()
}
