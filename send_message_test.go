package omqs

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/omqs-go/omqs/internal/journal"
)

// A Manager's SendEventMessage and SendEventJSON reach a consumer with their
// body, content type, headers (trace context included) and the id they
// returned, through memory and through the journal.
func TestSendEventMessageArrives(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		t.Run("memory lane", func(t *testing.T) { testSendEventMessageArrives(t, url, false) })
		t.Run("journal", func(t *testing.T) { testSendEventMessageArrives(t, url, true) })
	})
}

func testSendEventMessageArrives(t *testing.T, url string, journal bool) {
	cfg, n := backendConfig(t, url)
	if journal {
		cfg.Global.Journal = t.TempDir()
		cfg.Global.JournalMaxBytes = journalQuota
	}
	cfg.EventConsumer.Exchange, cfg.EventConsumer.Queue, cfg.EventConsumer.Keys = cfg.EventWorker.Exchange, n.Queue, []string{n.Key}
	rec := &recorder{}
	l, _ := consumerLogger(t)
	runConsumer(t, NewEventMsgConsumer, WithConfig(cfg), WithURL(url), WithLogger(l), WithCallback(rec.callback))
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithObserver(&fakeObserver{}))
	ctx := testCtx(t, 30*time.Second)
	traced := context.WithValue(ctx, fakeSpan{}, true)

	type want struct {
		body        string
		contentType string
		headers     map[string]any
	}
	wants := map[string]want{}
	send := func(ctx context.Context, msg Message, w want) {
		t.Helper()
		id, err := m.SendEventMessage(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if id == "" || (msg.MessageID != "" && id != msg.MessageID) {
			t.Fatalf("SendEventMessage returned id %q for MessageID %q", id, msg.MessageID)
		}
		if _, dup := wants[id]; dup {
			t.Fatalf("id %q returned twice", id)
		}
		wants[id] = w
	}

	body := []byte{0xff, 0x00, 'b', 'i', 'n'}
	headers := map[string]any{
		"tenant": "acme", "n": 7, "big": int64(1) << 40, "wide": 1 << 40,
		"nested": map[string]any{"a": []any{"x", true}},
	}
	send(ctx, Message{Key: n.Key, Body: body, ContentType: "application/x-thing", Headers: headers}, want{
		body: "\xff\x00bin", contentType: "application/x-thing",
		headers: map[string]any{"tenant": "acme", "n": int32(7), "big": int64(1) << 40, "wide": int64(1) << 40,
			"nested": map[string]any{"a": []any{"x", true}}},
	})
	// The call copied what it keeps: changing the caller's body and headers
	// afterwards changes nothing.
	copy(body, "XXXXX")
	headers["tenant"] = "changed"
	headers["nested"].(map[string]any)["a"] = "changed"

	send(ctx, Message{Body: []byte("caller's id, default key"), MessageID: "order-42"}, want{
		body: "caller's id, default key", contentType: "",
	})
	send(traced, Message{Key: n.Key, Body: []byte("traced"), Headers: map[string]any{"tenant": "acme"}}, want{
		body: "traced", contentType: "",
		headers: map[string]any{"tenant": "acme", HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", HeaderTracestate: "k=v"},
	})
	send(traced, Message{Key: n.Key, Body: []byte("own traceparent"), Headers: map[string]any{HeaderTraceparent: "mine"}}, want{
		body: "own traceparent", contentType: "",
		headers: map[string]any{HeaderTraceparent: "mine"},
	})
	send(traced, Message{Key: n.Key, Body: []byte("traced, no headers"), ContentType: "text/x-note"}, want{
		body: "traced, no headers", contentType: "text/x-note",
		headers: map[string]any{HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", HeaderTracestate: "k=v"},
	})
	id, err := m.SendEventJSON(ctx, n.Key, struct {
		Email string `json:"email"`
	}{"someone@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	wants[id] = want{body: `{"email":"someone@example.com"}`, contentType: ContentTypeJSON}
	// The plain call still works beside them, without a content type.
	if err := m.SendEvent("plain", n.Key); err != nil {
		t.Fatal(err)
	}

	if err := m.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "every event", func() bool { return rec.len() == len(wants)+1 })
	for _, d := range rec.all() {
		if string(d.Body) == "plain" {
			if d.ContentType != "" || d.MessageID == "" || len(d.Headers) != 0 {
				t.Errorf("SendEvent's message: content type %q, id %q, headers %v", d.ContentType, d.MessageID, d.Headers)
			}
			continue
		}
		w, ok := wants[d.MessageID]
		if !ok {
			t.Errorf("delivery %q has id %q, which no call returned", d.Body, d.MessageID)
			continue
		}
		if string(d.Body) != w.body || d.ContentType != w.contentType {
			t.Errorf("message %s: body %q content type %q, want %q and %q", d.MessageID, d.Body, d.ContentType, w.body, w.contentType)
		}
		if len(w.headers) == 0 && len(d.Headers) == 0 {
			continue
		}
		if !reflect.DeepEqual(d.Headers, w.headers) {
			t.Errorf("message %s (%q): headers %#v, want %#v", d.MessageID, d.Body, d.Headers, w.headers)
		}
	}
	if st := m.Stats().Events; st.Accepted != uint64(len(wants)+1) || st.Confirmed != st.Accepted {
		t.Errorf("event stats %+v, want %d accepted and confirmed", st, len(wants)+1)
	}
}

// What AMQP cannot carry is refused at the call, with an error that says
// what was wrong, and nothing is sent.
func TestSendEventMessageInvalid(t *testing.T) {
	t.Parallel()
	for _, journal := range []bool{false, true} {
		name := "memory lane"
		if journal {
			name = "journal"
		}
		t.Run(name, func(t *testing.T) {
			w := &blockingWorker{release: closedChan()}
			cfg, _ := testConfig(t)
			cfg.Global.BufferBytes = 1 << 20
			if journal {
				cfg.Global.Journal = t.TempDir()
				cfg.Global.JournalMaxBytes = journalQuota
			}
			m := startManager(t, WithConfig(cfg), WithURL(memoryURL(t)), WithLogger(testLogger(t)), WithEventWorker(w))
			testSendEventMessageInvalid(t, m)
			if st := m.Stats().Events; st.Accepted != 0 {
				t.Errorf("%d events accepted, want none", st.Accepted)
			}
		})
	}
}

func testSendEventMessageInvalid(t *testing.T, m *Manager) {
	deep := map[string]any{}
	for i, h := 0, deep; i < 40; i++ {
		next := map[string]any{}
		h["d"] = next
		h = next
	}
	deepArray := []any{}
	for range 40 {
		deepArray = []any{deepArray}
	}
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	many := map[string]any{}
	for i := range maxHeaderEntries + 1 {
		many["k"+strconv.Itoa(i)] = i
	}
	long := strings.Repeat("x", 256)
	for _, c := range []struct {
		name string
		msg  Message
		says string
	}{
		{"key too long", Message{Key: long}, "routing key is 256 bytes"},
		{"key not UTF-8", Message{Key: "\xff"}, "not valid UTF-8"},
		{"id too long", Message{MessageID: long}, "message id is 256 bytes"},
		{"id not UTF-8", Message{MessageID: "\xff"}, "message id"},
		{"content type too long", Message{ContentType: long}, "content type is 256 bytes"},
		{"content type not UTF-8", Message{ContentType: "\xfe"}, "content type"},
		{"body larger than BUFFER_BYTES", Message{Body: make([]byte, 2<<20)}, "larger than the event lane's BUFFER_BYTES"},
		{"header of an unknown type", Message{Headers: map[string]any{"ok": 1, "bad": struct{}{}}}, `"bad": a value of type struct {}`},
		{"nested header of an unknown type", Message{Headers: map[string]any{"a": map[string]any{"b": []any{1, make(chan int)}}}}, `"a": "b": [1]: a value of type chan int`},
		{"header name too long", Message{Headers: map[string]any{long: 1}}, "field name"},
		{"uint64 beyond int64", Message{Headers: map[string]any{"u": uint64(math.MaxUint64)}}, `"u": 18446744073709551615 is larger`},
		{"headers nested too deep", Message{Headers: deep}, "nested deeper than 32 levels"},
		{"arrays nested too deep", Message{Headers: map[string]any{"a": deepArray}}, "nested deeper than 32 levels"},
		{"headers that contain themselves", Message{Headers: cyclic}, "nested deeper than 32 levels"},
		{"too many headers", Message{Headers: many}, "more than 8192"},
	} {
		id, err := m.SendEventMessage(context.Background(), c.msg)
		if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), c.says) || id != "" {
			t.Errorf("%s: id %q, error %v; want ErrInvalidMessage saying %q", c.name, id, err, c.says)
		}
	}
	id, err := m.SendEventJSON(context.Background(), "", map[string]any{"c": make(chan int)})
	if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), "JSON") || id != "" {
		t.Errorf("SendEventJSON of a channel: id %q, error %v; want ErrInvalidMessage about JSON", id, err)
	}
}

// The states and a full buffer return what SendEvent returns, and a
// refusal counts in Stats and in the observer's snapshot.
func TestSendEventMessageStatesAndFullBuffer(t *testing.T) {
	t.Parallel()
	obs := &fakeObserver{}
	w := &blockingWorker{release: make(chan struct{})}
	cfg, _ := testConfig(t)
	cfg.Global.BufferSize = 2
	m, err := NewManager(WithConfig(cfg), WithURL(memoryURL(t)), WithLogger(testLogger(t)), WithEventWorker(w), WithObserver(obs))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	msg := Message{Body: []byte("b"), ContentType: "text/x"}
	if _, err := m.SendEventMessage(ctx, msg); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("before Start: %v, want ErrNotStarted", err)
	}
	if _, err := m.SendEventJSON(ctx, "", 1); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("SendEventJSON before Start: %v, want ErrNotStarted", err)
	}
	if err := m.Start(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// The worker holds one message; the buffer holds two more.
	accepted, refused := 0, 0
	for range 10 {
		_, err := m.SendEventMessage(ctx, msg)
		switch {
		case err == nil:
			accepted++
		case errors.Is(err, ErrBufferFull):
			refused++
		default:
			t.Fatal(err)
		}
	}
	if accepted > 3 || refused < 7 {
		t.Fatalf("%d accepted, %d refused by a buffer of 2", accepted, refused)
	}
	// A context does not make it wait for room...
	short, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	if _, err := m.SendEventMessage(short, msg); !errors.Is(err, ErrBufferFull) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("full buffer with a context: %v, want ErrBufferFull at once", err)
	}
	refused++
	if got := m.Stats().Events.Refused; got != uint64(refused) {
		t.Errorf("Stats().Events.Refused = %d, want %d", got, refused)
	}
	if s := obs.component("Manager", "event").Snapshot(); s.Refused != uint64(refused) {
		t.Errorf("Snapshot().Refused = %d, want %d", s.Refused, refused)
	}
	close(w.release)
	if err := m.Stop(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := m.SendEventMessage(ctx, msg); !errors.Is(err, ErrStopped) {
		t.Fatalf("after Stop: %v, want ErrStopped", err)
	}
	if got := len(w.bodies()); got != accepted {
		t.Errorf("the worker got %d messages, want the %d accepted", got, accepted)
	}
}

// Under OverflowWait a full buffer makes the call wait until ctx ends.
func TestSendEventMessageOverflowWait(t *testing.T) {
	t.Parallel()
	w := &blockingWorker{release: make(chan struct{})}
	cfg, _ := testConfig(t)
	cfg.Global.BufferSize = 1
	m := startManager(t, WithConfig(cfg), WithURL(memoryURL(t)), WithLogger(testLogger(t)), WithEventWorker(w), WithOverflow(OverflowWait))
	defer close(w.release)
	msg := Message{Body: []byte("b")}
	// The worker takes the first and holds it; the second fills the buffer.
	for i := range 2 {
		if _, err := m.SendEventMessage(context.Background(), msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if i == 0 {
			waitUntil(t, 10*time.Second, "the worker to take the first message", func() bool { return m.lanes[eventLane].size() == 0 })
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	id, err := m.SendEventMessage(ctx, msg)
	if !errors.Is(err, ErrBufferFull) || !errors.Is(err, context.DeadlineExceeded) || id != "" {
		t.Fatalf("id %q, error %v; want ErrBufferFull and the context's deadline", id, err)
	}
}

// Without headers, a call makes one allocation (the id, the content type
// and the copy of the body together); with the journal none but the id.
// The worker holds the first message, so that only the calls allocate.
func TestSendEventMessageAllocs(t *testing.T) {
	body := make([]byte, 256)
	msg := Message{Body: body, ContentType: ContentTypeJSON}
	for _, c := range []struct {
		name    string
		journal bool
		msg     Message
		max     float64
	}{
		{"memory lane", false, msg, 1},
		{"memory lane, caller's id", false, Message{Body: body, MessageID: "id-1", ContentType: ContentTypeJSON}, 1},
		{"journal", true, msg, 1},
		{"journal, caller's id", true, Message{Body: body, MessageID: "id-1", ContentType: ContentTypeJSON}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			url := memoryURL(t)
			cfg, _, _ := journalConfig(t, url)
			cfg.Global.JournalMaxBytes = 64 << 20
			if !c.journal {
				cfg.Global.Journal = ""
				cfg.Global.BufferSize = 4096
			}
			w := &blockingWorker{release: make(chan struct{})}
			m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithEventWorker(w))
			t.Cleanup(func() { close(w.release) }) // before Stop
			ctx := context.Background()
			if n := testing.AllocsPerRun(1000, func() {
				if _, err := m.SendEventMessage(ctx, c.msg); err != nil && !errors.Is(err, ErrBufferFull) {
					t.Fatal(err)
				}
			}); n > c.max {
				t.Errorf("%v allocations per call, want at most %v", n, c.max)
			}
		})
	}
}

// A message its worker could not take is spooled with its content type and
// headers, and the next Manager replays it with them; a record written
// before records kept a content type replays with the one chosen from its
// body.
func TestSendEventMessageSpoolAndReplay(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		cfg, n := backendConfig(t, url)
		first := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithEventWorker(refusingWorker{}))
		id, err := first.SendEventMessage(context.Background(), Message{Body: []byte(`{"a":1}`), ContentType: ContentTypeJSON,
			Headers: map[string]any{"tenant": "acme"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := first.Stop(testCtx(t, 10*time.Second)); !errors.Is(err, ErrSpooled) {
			t.Fatalf("Stop: %v, want ErrSpooled", err)
		}
		recs := spoolRecords(t, cfg.Log.Folder, "backup.evt")
		if len(recs) != 1 || recs[0].MessageID != id || recs[0].ContentType != ContentTypeJSON || recs[0].Headers["tenant"] != "acme" {
			t.Fatalf("spooled %+v, want message %s with its content type and headers", recs, id)
		}
		// A record as versions without content types wrote it.
		old := `{"exchange":"` + cfg.EventWorker.Exchange + `","key":"` + n.Key + `","id":"old-1","ts":"2024-05-01T10:00:00Z","body":"old record"}` + "\n"
		f, err := os.OpenFile(filepath.Join(cfg.Log.Folder, "backup.evt"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(old); err != nil {
			t.Fatal(err)
		}
		f.Close()

		second := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
		got := consumeQueue(t, backendChannel(t, url), n.Queue) // declared by Start
		got.waitCount(t, 2, 10*time.Second)
		if err := second.Stop(testCtx(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		ds := got.all()
		if d := ds[0]; d.MessageId != id || string(d.Body) != `{"a":1}` || d.ContentType != ContentTypeJSON || d.Headers["tenant"] != "acme" {
			t.Errorf("replayed %s %q, content type %q, headers %v", d.MessageId, d.Body, d.ContentType, d.Headers)
		}
		if d := ds[1]; d.MessageId != "old-1" || string(d.Body) != "old record" || d.ContentType != "" {
			t.Errorf("replayed old record %s %q, content type %q", d.MessageId, d.Body, d.ContentType)
		}
	})
}

// Entries with content types and headers that a Manager left unconfirmed
// in its journal are published again with them by the next Manager.
func TestManagerJournalRedeliversMeta(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, url string) {
		cfg, dir, key := journalConfig(t, url)
		j, err := journal.Open(filepath.Join(dir, "event"), journal.Options{SegmentSize: journalSegment(journalQuota), MaxBytes: journalQuota})
		if err != nil {
			t.Fatal(err)
		}
		h, err := headerTable(map[string]any{"tenant": "acme", "n": 7})
		if err != nil {
			t.Fatal(err)
		}
		meta, err := appendMeta(nil, "application/x-before", h)
		if err != nil {
			t.Fatal(err)
		}
		ts := time.Now().Add(-time.Hour).Truncate(time.Second)
		if _, err := j.AppendMeta(key, string(meta), "with meta", "id-meta", ts.UnixNano(), eventLane); err != nil {
			t.Fatal(err)
		}
		if _, err := j.Append(key, "without", "id-plain", ts.UnixNano(), eventLane); err != nil {
			t.Fatal(err)
		}
		if err := j.Close(); err != nil { // not confirmed
			t.Fatal(err)
		}
		startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)))
		got := consumeQueue(t, backendChannel(t, url), cfg.EventWorker.Queue)
		got.waitCount(t, 2, 10*time.Second)
		ds := got.all()
		if d := ds[0]; d.MessageId != "id-meta" || d.ContentType != "application/x-before" ||
			!reflect.DeepEqual(map[string]any(d.Headers), map[string]any{"tenant": "acme", "n": int32(7)}) {
			t.Errorf("recovered %s: content type %q, headers %#v", d.MessageId, d.ContentType, d.Headers)
		}
		if d := ds[1]; d.MessageId != "id-plain" || d.ContentType != "" || len(d.Headers) != 0 {
			t.Errorf("recovered %s: content type %q, headers %v", d.MessageId, d.ContentType, d.Headers)
		}
	})
}

// With the journal, SendEventContext keeps the trace context too.
func TestManagerJournalKeepsTraceContext(t *testing.T) {
	t.Parallel()
	w := &blockingWorker{release: closedChan()}
	url := memoryURL(t)
	cfg, _, _ := journalConfig(t, url)
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithEventWorker(w), WithObserver(&fakeObserver{}))
	traced := context.WithValue(context.Background(), fakeSpan{}, true)
	if err := m.SendEventContext(traced, "traced", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.SendEvent("plain", ""); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "2 messages", func() bool { return len(w.bodies()) == 2 })
	w.mu.Lock()
	defer w.mu.Unlock()
	want := map[string]any{HeaderTraceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", HeaderTracestate: "k=v"}
	if h := w.got[0].Headers; !reflect.DeepEqual(h, want) {
		t.Errorf("traced message's headers %v, want %v", h, want)
	}
	if h := w.got[1].Headers; h != nil {
		t.Errorf("plain message's headers %v, want none", h)
	}
}

// Metadata keeps every header type as it was, and malformed metadata is an
// error, never a panic.
func TestJournalMetaRoundTrip(t *testing.T) {
	h, err := headerTable(map[string]any{
		"nil": nil, "bool": true, "u8": uint8(1), "i8": int8(-2), "i16": int16(-3), "u16": uint16(4),
		"i32": int32(-5), "u32": uint32(6), "i64": int64(-7), "int": 8, "f32": float32(1.5), "f64": 2.25,
		"dec": amqp.Decimal{Scale: 2, Value: -314}, "s": "text", "bin": []byte{0, 1, 2},
		"time": time.Unix(1700000000, 0), "arr": []any{1, "a", []any{}}, "tab": map[string]any{"x": map[string]any{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := appendMeta(nil, "text/x", h)
	if err != nil {
		t.Fatal(err)
	}
	ct, got, err := parseMeta(b)
	if err != nil || ct != "text/x" || !reflect.DeepEqual(got, map[string]any(h)) {
		t.Fatalf("parseMeta: %q %#v %v, want %#v", ct, got, err, h)
	}
	for _, tc := range []*traceCtx{nil, {parent: "p"}, {parent: "p", state: "s"}} {
		ct, got, err := parseMeta(appendTraceMeta(nil, "c", tc))
		var want map[string]any
		if tc != nil {
			want = tc.headers()
		}
		if err != nil || ct != "c" || !reflect.DeepEqual(got, want) {
			t.Errorf("trace context %v: %q %v %v", tc, ct, got, err)
		}
	}
	for i := range b {
		if _, _, err := parseMeta(b[:i]); err == nil {
			t.Fatalf("metadata cut to %d of %d bytes parsed", i, len(b))
		}
	}
	for i := range b {
		c := append([]byte(nil), b...)
		c[i] ^= 0xff
		parseMeta(c) // must not panic
	}
}
