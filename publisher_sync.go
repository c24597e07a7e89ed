package omqs

import (
	"context"
	"errors"
	"fmt"
)

// SyncPublisher publishes a message and waits for its confirm: Publish
// returns once the broker has confirmed the message (nil), refused it (an
// error wrapping ErrNacked), or the message was written to the spool because
// the broker stayed unreachable (an error wrapping ErrSpooled). Reconnects,
// republishing and the spool work as for AsyncPublisher.
//
// A SyncPublisher is safe for concurrent use. One goroutine calling Publish
// has one message in flight at a time; Publish calls from several goroutines
// are pipelined on the one connection (up to MAX_IN_FLIGHT unconfirmed, as
// for AsyncPublisher), and each waits only for its own confirm.
type SyncPublisher struct {
	e *engine
}

// NewSyncPublisher builds a SyncPublisher. Its topology defaults come from
// the [SyncPublisher] section (or WithSection, naming another publisher
// section), overridden by WithExchange, WithQueue, WithQueueDurable,
// WithQueueType and WithKeys. Publishes are not mandatory unless
// WithMandatory(true). Its log lines go to WithLogger's logger, or to a
// LogManager built from the [Log] section, which Stop closes. It does not
// connect and starts no goroutine: call Start.
func NewSyncPublisher(opts ...Option) (*SyncPublisher, error) {
	s, err := buildSettings("NewSyncPublisher", opts)
	if err != nil {
		return nil, err
	}
	e, err := newEngineFromSettings(s, "SyncPublisher", false)
	if err != nil {
		return nil, err
	}
	return &SyncPublisher{e: e}, nil
}

// Start connects and declares the topology; see AsyncPublisher.Start.
// Calling it again returns an error wrapping ErrRunning, and after Stop (or
// a Start that failed) ErrStopped.
func (p *SyncPublisher) Start(ctx context.Context) error { return p.e.start(ctx, false) }

// Publish sends body under key ("" means the first configured key) and waits
// for the broker's confirm. If ctx ends first there are two cases, told apart
// with errors.Is: an error wrapping ErrNotConfirmed (and ctx's error) means
// the message was taken and the publisher still confirms or spools it; any
// other error wrapping ctx's error means it was not taken (the in-flight
// window was full or the broker blocked the connection) and the caller still
// owns it.
func (p *SyncPublisher) Publish(ctx context.Context, key string, body []byte) error {
	m, err := p.e.newMsg(key, body)
	if err != nil {
		return err
	}
	return p.wait(ctx, m)
}

// PublishMessage is Publish with a Message's id, timestamp and headers kept.
func (p *SyncPublisher) PublishMessage(ctx context.Context, msg Message) error {
	m, err := p.e.fromMessage(msg, false)
	if err != nil {
		return err
	}
	return p.wait(ctx, m)
}

func (p *SyncPublisher) wait(ctx context.Context, m *outMsg) error {
	m.done = make(chan error, 1)
	if err := p.e.publish(ctx, m); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return errorOf(p.e.who, fmt.Errorf("message not taken: %w", err))
		}
		return err
	}
	select {
	case err := <-m.done:
		if err != nil {
			return errorOf(p.e.who, fmt.Errorf("message %s: %w", m.id, err))
		}
		return nil
	case <-ctx.Done():
		return errorOf(p.e.who, fmt.Errorf("%w: message %s is taken and waits for its confirm: %w", ErrNotConfirmed, m.id, ctx.Err()))
	}
}

// Stop refuses new publishes, waits for outstanding confirms and closes the
// connection; see AsyncPublisher.Stop. Stop is idempotent.
func (p *SyncPublisher) Stop(ctx context.Context) error { return p.e.stop(ctx) }

// Stats returns the publisher's counters.
func (p *SyncPublisher) Stats() LaneStats { return p.e.st.snapshot() }
