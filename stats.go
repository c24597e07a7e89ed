package omqs

import (
	"sync/atomic"
	"time"
)

// LaneStats counts what happened to the messages of one path.
type LaneStats struct {
	Accepted    uint64        // taken in by Send* or Publish
	Refused     uint64        // Send* calls refused with ErrBufferFull (the lane's buffer was full)
	Published   uint64        // written to a connection (republishes included)
	Confirmed   uint64        // acknowledged by the broker
	Nacked      uint64        // refused by the broker (then spooled or failed)
	Returned    uint64        // returned by the broker as unroutable
	Republished uint64        // published again after a reconnect
	Spooled     uint64        // written to the spool file
	Replayed    uint64        // read back from the spool file and published
	Dropped     uint64        // failed with no spool to keep them (each reported)
	SetAside    uint64        // spool lines not replayed (unreadable, for another exchange, too large): moved to FILE.unreadable and reported
	Quarantined uint64        // refused by the broker, which closed the channel (404, 406, 403): moved to FILE.quarantine (dropped without a spool), reported, not retried
	Reconnects  uint64        // successful reconnections
	Blocked     time.Duration // time the broker kept the connection blocked
}

func (a LaneStats) add(b LaneStats) LaneStats {
	return LaneStats{
		Accepted: a.Accepted + b.Accepted, Refused: a.Refused + b.Refused, Published: a.Published + b.Published,
		Confirmed: a.Confirmed + b.Confirmed, Nacked: a.Nacked + b.Nacked,
		Returned: a.Returned + b.Returned, Republished: a.Republished + b.Republished,
		Spooled: a.Spooled + b.Spooled, Replayed: a.Replayed + b.Replayed,
		Dropped: a.Dropped + b.Dropped, SetAside: a.SetAside + b.SetAside, Quarantined: a.Quarantined + b.Quarantined, Reconnects: a.Reconnects + b.Reconnects,
		Blocked: a.Blocked + b.Blocked,
	}
}

// counters are the live, atomically updated LaneStats.
type counters struct {
	accepted, refused, published, confirmed, nacked, returned, republished,
	spooled, replayed, dropped, setAside, quarantined, reconnects atomic.Uint64
	blockedNanos atomic.Int64
	blockedSince atomic.Int64 // unix nanos, 0 when not blocked
}

func (c *counters) snapshot() LaneStats {
	blocked := time.Duration(c.blockedNanos.Load())
	if since := c.blockedSince.Load(); since != 0 {
		blocked += time.Since(time.Unix(0, since))
	}
	return LaneStats{
		Accepted: c.accepted.Load(), Refused: c.refused.Load(), Published: c.published.Load(),
		Confirmed: c.confirmed.Load(), Nacked: c.nacked.Load(),
		Returned: c.returned.Load(), Republished: c.republished.Load(),
		Spooled: c.spooled.Load(), Replayed: c.replayed.Load(),
		Dropped: c.dropped.Load(), SetAside: c.setAside.Load(), Quarantined: c.quarantined.Load(), Reconnects: c.reconnects.Load(),
		Blocked: blocked,
	}
}

// Stats is a snapshot of the Manager's counters: the totals, and each lane's.
type Stats struct {
	LaneStats
	Logs   LaneStats
	Events LaneStats
}
