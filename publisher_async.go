package omqs

import (
	"context"
)

// AsyncPublisher publishes messages pipelined: Publish returns once the
// message is written to the connection (or held for a reconnect), and the
// broker's confirms are tracked in the background. At most MAX_IN_FLIGHT
// messages wait for a confirm; Publish blocks (until its context ends) while
// that many do. Flush waits until every published message is confirmed.
//
// When the connection or channel drops, the publisher reconnects every
// RECONNECT_INTERVAL and republishes every message the broker had not
// confirmed (so a message can reach the broker twice; its MessageID stays the
// same). After RECONNECT_TIMES failed attempts it writes what it holds, and
// what it is given next, to its spool file (if it has one, see WithSpoolDir)
// and replays the spool once the broker is back.
//
// While the broker blocks the connection (a memory or disk alarm) Publish
// waits; it never writes to a blocked connection.
//
// An AsyncPublisher is safe for concurrent use.
type AsyncPublisher struct {
	e *engine
}

// NewAsyncPublisher builds an AsyncPublisher. Its topology defaults come from
// the [AsyncPublisher] section (or WithSection, naming another publisher
// section), overridden by WithExchange, WithQueue, WithQueueDurable,
// WithQueueType and WithKeys. Publishes are mandatory, except those its own
// durable queue is bound to receive, unless WithMandatory says otherwise. Its log lines go to WithLogger's logger, or to a
// LogManager built from the [Log] section, which Stop closes. It does not
// connect and starts no goroutine: call Start.
func NewAsyncPublisher(opts ...Option) (*AsyncPublisher, error) {
	s, err := buildSettings("NewAsyncPublisher", opts)
	if err != nil {
		return nil, err
	}
	e, err := newEngineFromSettings(s, "AsyncPublisher", true)
	if err != nil {
		return nil, err
	}
	return &AsyncPublisher{e: e}, nil
}

// Start connects, declares the topology and starts confirm tracking. A bad
// URL, wrong credentials or a refused declaration return at once; an
// unreachable broker is retried every RECONNECT_INTERVAL up to
// RECONNECT_TIMES or until ctx ends. Calling Start again returns an error
// wrapping ErrRunning, and after Stop (or a Start that failed) ErrStopped.
func (p *AsyncPublisher) Start(ctx context.Context) error { return p.e.start(ctx, false) }

// Publish hands body to the broker under key ("" means the first configured
// key). It returns nil once the message is written or held for a reconnect;
// the confirm arrives later (see Flush and Stats). It blocks while
// MAX_IN_FLIGHT messages are unconfirmed or the broker blocks the connection,
// until ctx ends; it then returns ctx's error and the message was not taken.
func (p *AsyncPublisher) Publish(ctx context.Context, key string, body []byte) error {
	m, err := p.e.newMsg(key, body)
	if err != nil {
		return err
	}
	return p.e.publish(ctx, m)
}

// PublishMessage is Publish with a Message's id, timestamp and headers kept.
func (p *AsyncPublisher) PublishMessage(ctx context.Context, msg Message) error {
	m, err := p.e.fromMessage(msg, false)
	if err != nil {
		return err
	}
	return p.e.publish(ctx, m)
}

// Flush waits until every message published so far is confirmed, spooled or
// failed, or until ctx ends (returning ctx's error).
func (p *AsyncPublisher) Flush(ctx context.Context) error { return p.e.flush(ctx) }

// Stop refuses new publishes, waits for the confirms of what was published,
// and closes the connection. If ctx ends first, the connection is closed at
// once (a Publish stuck writing to a stalled network returns), unconfirmed
// messages are spooled (or reported lost when there is no spool) and the
// error wraps ErrNotConfirmed. With no connection up when Stop runs, or
// once the connection is lost while it waits, Stop does not wait for a
// reconnect: it spools the unconfirmed messages at once and the error wraps
// ErrNotConfirmed and ErrConnection. Stop is idempotent.
func (p *AsyncPublisher) Stop(ctx context.Context) error { return p.e.stop(ctx) }

// Stats returns the publisher's counters.
func (p *AsyncPublisher) Stats() LaneStats { return p.e.st.snapshot() }

// Pending returns how many messages were handed to Publish and are not yet
// confirmed, spooled or failed, plus those a replay took from the spool
// (FILE.replay.* files, left by this or an earlier run) and has not sent yet.
func (p *AsyncPublisher) Pending() int { return p.e.pending() }
