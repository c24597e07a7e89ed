package omqs

import (
	"context"
	"encoding/json"
	"fmt"
	"unsafe"
)

// ContentTypeJSON is the content type SendEventJSON sets.
const ContentTypeJSON = "application/json"

// SendEventMessage buffers msg as an event, as SendEvent does, and returns
// its message id. It is SendEvent for a Go program: the body is bytes (any
// bytes; it need not be UTF-8 text), and the message can carry a content
// type and AMQP headers, which consumers find in Delivery.ContentType and
// Delivery.Headers. The id is the Delivery.MessageID its consumers see,
// also after a republish, the spool or the journal: log it to correlate
// the request with the event. On an error the id is "" and nothing was
// sent.
//
// Of msg:
//
//   - Key "" means the default event key, as for SendEvent.
//   - MessageID "" makes a new unique id; an id of the caller's is kept
//     (at most 255 bytes, UTF-8).
//   - A zero Timestamp means now.
//   - ContentType "" lets the worker choose (text/plain; charset=utf-8
//     for UTF-8 text, application/octet-stream otherwise); at most 255
//     bytes, UTF-8.
//   - Headers are checked now: a value AMQP cannot carry, a field name
//     longer than 255 bytes, or nesting a consumer could not read (deeper
//     than 32 levels, more than 8192 entries) returns an error wrapping
//     ErrInvalidMessage that names the header.
//
// The call copies what it keeps, so the caller may reuse Body and Headers
// at once. It never waits on the network. The id, the content type and
// the body take one allocation (0 with WithJournal, but for the returned
// id when the call makes it); headers add a copy of the map.
//
// A full buffer (or byte budget, or journal) returns an error wrapping
// ErrBufferFull at once, as SendEvent does, counted in Stats().Refused:
// unlike SendEventContext, ctx does not make the call wait. Under
// WithOverflow(OverflowWait) it waits for room until ctx ends or Stop
// begins. With WithObserver, a span in ctx gives the message its trace
// context (the traceparent and tracestate headers), as SendEventContext
// does, unless msg.Headers has a traceparent already. The other errors are
// SendEvent's: ErrNotStarted, ErrStopped, and ErrInvalidMessage for a key
// AMQP cannot carry or a body larger than BUFFER_BYTES or MaxBodySize.
func (m *Manager) SendEventMessage(ctx context.Context, msg Message) (id string, err error) {
	return m.sendMessage(ctx, m.lanes[eventLane], msg)
}

// SendEventJSON sends v, encoded with encoding/json, as an event with
// content type application/json under key ("" means the default event
// key), and returns its message id; see SendEventMessage. A value
// encoding/json cannot encode returns an error wrapping ErrInvalidMessage.
// For headers with a JSON body, call SendEventMessage with json.Marshal's
// result and ContentType ContentTypeJSON.
func (m *Manager) SendEventJSON(ctx context.Context, key string, v any) (id string, err error) {
	if err := m.stateErr(); err != nil {
		return "", err
	}
	body, err := json.Marshal(v)
	if err != nil {
		return "", errorOf("Manager", fmt.Errorf("%w: JSON: %w", ErrInvalidMessage, err))
	}
	return m.sendMessage(ctx, m.lanes[eventLane], Message{Key: key, Body: body, ContentType: ContentTypeJSON})
}

// sendMessage validates and buffers msg, an event of SendEventMessage;
// see send for the protocol with Stop.
func (m *Manager) sendMessage(ctx context.Context, l *lane, msg Message) (string, error) {
	if err := m.stateErr(); err != nil {
		return "", err
	}
	key := msg.Key
	if key == "" {
		key = m.eventKey
	}
	if err := checkKey(key); err != nil {
		return "", errorOf("Manager", err)
	}
	if len(msg.Body) > l.maxBody {
		return "", bodyTooLarge(l, len(msg.Body))
	}
	if err := checkShortstr("message id", msg.MessageID); err != nil {
		return "", errorOf("Manager", err)
	}
	if err := checkShortstr("content type", msg.ContentType); err != nil {
		return "", errorOf("Manager", err)
	}
	var hdr map[string]any
	if len(msg.Headers) > 0 {
		t, err := headerTable(msg.Headers)
		if err != nil {
			return "", errorOf("Manager", err)
		}
		hdr = t
	}
	l.senders.Add(1)
	if err := m.stateErr(); err != nil {
		l.senders.Add(-1)
		return "", err
	}
	var ts int64
	if msg.Timestamp.IsZero() {
		ts = m.clock()
	} else {
		ts = msg.Timestamp.UnixNano()
	}
	tc := l.inject(ctx, key)
	if tc != nil && hdr != nil {
		// The trace context joins the caller's headers, which win.
		if _, ok := hdr[HeaderTraceparent]; !ok {
			hdr[HeaderTraceparent] = tc.parent
			if tc.state != "" {
				hdr[HeaderTracestate] = tc.state
			}
		}
		tc = nil
	}
	if jr := l.jr.Load(); jr != nil {
		id, err := m.sendJournalMessage(ctx, l, jr, key, msg, hdr, tc, ts)
		l.senders.Add(-1)
		return id, err
	}
	it, id := messageItem(key, msg)
	it.ts, it.tc, it.hdr = ts, tc, hdr
	err := m.enqueue(ctx, false, m.overflow, l, it)
	l.senders.Add(-1)
	if err != nil {
		return "", err
	}
	return id, nil
}

// messageItem returns the item of msg under key, with msg's id (or a new
// one), content type and body copied into one allocation, and its id.
func messageItem(key string, msg Message) (item, string) {
	var buf [40]byte
	idb := buf[:0]
	if msg.MessageID == "" {
		idb = appendMessageID(idb)
	}
	idLen := len(idb) + len(msg.MessageID) // one of them is empty
	b := make([]byte, idLen+len(msg.ContentType)+len(msg.Body))
	n := copy(b, idb)
	n += copy(b[n:], msg.MessageID)
	n += copy(b[n:], msg.ContentType)
	copy(b[n:], msg.Body)
	s := unsafe.String(unsafe.SliceData(b), len(b)) // b is not written again
	it := item{key: key, body: s, idLen: uint8(idLen), ctLen: uint8(len(msg.ContentType))}
	return it, s[:idLen]
}

// sendJournalMessage writes msg to the lane's journal; see sendMessage. It
// allocates only the id it returns, when it makes one, and the metadata of
// large headers.
func (m *Manager) sendJournalMessage(ctx context.Context, l *lane, jr *laneJournal, key string, msg Message, hdr map[string]any, tc *traceCtx, ts int64) (string, error) {
	var buf [40]byte
	idb := buf[:0]
	if msg.MessageID == "" {
		idb = appendMessageID(idb)
	}
	var mb [256]byte
	var meta []byte
	switch {
	case hdr != nil:
		var err error
		if meta, err = appendMeta(nil, msg.ContentType, hdr); err != nil {
			return "", errorOf("Manager", err)
		}
	case msg.ContentType != "" || tc != nil:
		meta = appendTraceMeta(mb[:0], msg.ContentType, tc)
	}
	// The journal copies the body and the id before AppendMeta returns.
	body := unsafe.String(unsafe.SliceData(msg.Body), len(msg.Body))
	id := msg.MessageID
	if id == "" {
		id = unsafe.String(unsafe.SliceData(idb), len(idb))
	}
	if err := m.appendJournal(ctx, false, m.overflow, l, jr, key, bytesString(meta), body, id, ts); err != nil {
		return "", err
	}
	if msg.MessageID != "" {
		return msg.MessageID, nil
	}
	return string(idb), nil
}
