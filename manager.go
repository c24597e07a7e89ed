package omqs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/omqs-go/omqs/internal/ring"
	"github.com/omqs-go/omqs/internal/spool"
	"github.com/omqs-go/omqs/internal/transport"
)

// Manager hands messages from the caller to two background workers, one for
// logs and one for events, through two bounded buffers. Send* methods copy
// nothing but the message into the buffer and never wait on the network.
//
// A Manager is safe for concurrent use. Its life is NewManager, Start, any
// number of Send* calls, Stop; it cannot be started again after Stop.
type Manager struct {
	s        *settings
	name     string
	log      *slog.Logger
	ownLog   *LogManager
	rep      *reporter
	eventKey string
	overflow Overflow

	lanes [2]*lane

	state atomic.Int32 // managerState
	// now is the time in Unix nanoseconds, refreshed every clockTick while
	// messages flow: Send* stamps messages from it instead of reading the
	// clock. AMQP carries timestamps in whole seconds. When no message came
	// for clockIdle the clock goroutine sleeps (clockAsleep), so that an idle
	// Manager costs no CPU; the first Send* after that reads the clock itself
	// and wakes it.
	now         atomic.Int64
	clockAsleep atomic.Bool
	clockWake   chan struct{} // cap 1
	// startCancel cancels a Start under way; startDone is closed when Start
	// returns.
	startCancel  atomic.Pointer[context.CancelFunc]
	startDone    chan struct{}
	lanesRunning bool // set by Start before it closes startDone
	stopping     chan struct{}
	runCtx       context.Context
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	clockWG      sync.WaitGroup
	stopOnce     sync.Once
	releaseOnce  sync.Once
	stopErr      error
}

type managerState int32

const (
	mgrNew managerState = iota
	mgrStarting
	mgrRunning
	mgrStopping
	mgrStopped
)

const (
	logLane   = 0
	eventLane = 1
)

// lane is one buffer and the worker that drains it. The buffer is a
// lock-free queue, so that a sender never waits for the worker's goroutine;
// the worker sleeps on wake when the buffer is empty, and senders waiting
// for room (Send*Context, OverflowWait) sleep on room.
//
// Besides the buffer's capacity in messages, a lane has a budget in bytes
// (BUFFER_BYTES): bytes counts the bodies Send* accepted that are not yet
// resolved, wherever they are: in the buffer, with the worker, or in the
// built-in worker's engine waiting for a confirm or a reconnect. Send* adds
// a body's length (one atomic add); the lane gives it back (release) when
// the message is confirmed, spooled or dropped, or, for a custom worker,
// when MsgDidReceive returns. So the bodies a lane keeps alive never add up
// to more than budget.
type lane struct {
	name     string // "log" or "event"
	q        *ring.Queue[item]
	bytes    atomic.Int64  // bodies accepted and not yet resolved
	budget   int64         // BUFFER_BYTES
	maxBody  int           // the largest body Send* takes: budget, at most MaxBodySize
	sleeping atomic.Bool   // the worker sleeps on wake
	wake     chan struct{} // cap 1
	closed   atomic.Bool   // no more pushes: the worker ends once q is empty
	waiters  atomic.Int32  // senders waiting on room
	room     chan struct{} // cap 1
	senders  atomic.Int64  // Send* calls between their state check and their buffer write
	worker   MsgWorker
	spool    *spool.Spool
	st       counters    // accepted (taken by the worker), confirmed (custom workers), spooled, dropped
	busy     atomic.Bool // the worker holds a message (a built-in worker's engine clears it once it counts the message)
	full     error       // returned when the buffer is full

	jr  atomic.Pointer[laneJournal] // the lane's journal (WithJournal, set by Start), or nil: Send* pushes to q
	obs ComponentObserver           // nil: no WithObserver
}

// item is one buffered message; it holds the caller's strings as they are.
// A message of SendEventMessage carries its id and content type in body,
// before the body itself (see parts), so that one allocation holds all
// three: idLen is not 0 for it.
type item struct {
	key   string
	body  string
	ts    int64
	tc    *traceCtx      // the caller's trace context (Send*Context with a span), or nil
	hdr   map[string]any // SendEventMessage's copy of the headers, trace context included, or nil
	idLen uint8
	ctLen uint8
}

// parts returns the message id and content type SendEventMessage gave it
// ("" for other messages) and its body.
func (it *item) parts() (id, ct, body string) {
	i, c := int(it.idLen), int(it.idLen)+int(it.ctLen)
	return it.body[:i], it.body[i:c], it.body[c:]
}

// size is the length of its body, which the lane's byte budget counts.
func (it *item) size() int { return len(it.body) - int(it.idLen) - int(it.ctLen) }

var (
	errLogBufferFull   = errorOf("Manager", fmt.Errorf("%w: log buffer", ErrBufferFull))
	errEventBufferFull = errorOf("Manager", fmt.Errorf("%w: event buffer", ErrBufferFull))
	// Send*'s state errors, made once: Send* does not allocate.
	errManagerNotStarted = errorOf("Manager", ErrNotStarted)
	errManagerStopped    = errorOf("Manager", ErrStopped)
)

// NewManager builds a Manager from options, OMQS.cfg and defaults. It does
// not connect and starts no goroutine: call Start. Its own log lines go to
// WithLogger's logger, or to a LogManager built from the [Log] section, which
// Stop closes.
func NewManager(opts ...Option) (*Manager, error) {
	s, err := buildSettings("NewManager", opts)
	if err != nil {
		return nil, err
	}
	eps, err := transport.ParseURLs(s.cfg.Global.MQURL)
	if err != nil {
		return nil, invalidConfig("NewManager", "MQURL: %v", err)
	}
	for _, t := range []topology{workerTopology(s.cfg.LogWorker), workerTopology(s.cfg.EventWorker)} {
		if err := checkQueue("NewManager", t); err != nil {
			return nil, err
		}
	}
	m := &Manager{s: s, name: s.name, overflow: s.overflow, stopping: make(chan struct{}), startDone: make(chan struct{}), clockWake: make(chan struct{}, 1)}
	if m.name == "" {
		m.name = "OMQS"
	}
	if m.ownLog, err = s.ownLogger("NewManager", m.name); err != nil {
		return nil, err
	}
	m.log = s.logger
	m.eventKey = DefaultEventKey
	if len(s.cfg.EventWorker.Keys) > 0 {
		m.eventKey = s.cfg.EventWorker.Keys[0]
	}
	dir := s.spoolDir
	if dir == "" {
		dir = s.cfg.Log.Folder
	}
	m.rep = newReporter(m.log, m.name, s.onError, 1024)
	m.runCtx, m.cancel = context.WithCancel(context.Background())
	size, budget := s.cfg.Global.BufferSize, s.cfg.Global.BufferBytes
	logs := newLane("log", size, budget, s.logWorker, spool.New(spoolPath(dir, "backup.log")), errLogBufferFull)
	events := newLane("event", size, budget, s.eventWorker, spool.New(spoolPath(dir, "backup.evt")), errEventBufferFull)
	if logs.worker == nil {
		logs.worker = NewLogMsgWorker()
	}
	if events.worker == nil {
		events.worker = NewEventMsgWorker()
	}
	m.lanes[logLane], m.lanes[eventLane] = logs, events
	m.observeLanes()
	// Configure the built-in workers, and those embedded in custom ones.
	for i, l := range m.lanes {
		if b, ok := l.worker.(builtinBinder); ok {
			d := builtinDeps{endpoints: eps, rep: m.rep, spool: l.spool, busy: &l.busy, obs: l.obs}
			if sharesBody(l.worker) {
				// A bare built-in worker gives a message's bytes back once
				// the message is resolved. One wrapped in a custom worker
				// may change or drop the message: the lane takes its bytes
				// back when MsgDidReceive returns, as for any custom worker.
				d.free = l.release
			}
			if err := b.bindLane(i, s, m.name, d); err != nil {
				m.release()
				return nil, errorOf("NewManager", fmt.Errorf("%w: %s worker: %v", ErrInvalidConfig, l.name, err))
			}
		}
	}
	return m, nil
}

// Start runs each worker's WorkerWillRun (the built-in workers connect and
// declare their exchanges and queue) and starts draining the buffers. It
// returns once both workers are ready. A bad URL, wrong credentials or a
// refused declaration fail at once; an unreachable broker is retried every
// RECONNECT_INTERVAL up to RECONNECT_TIMES or until ctx ends. With
// WithRetryOnFailedConnect(true) Start returns at once and the workers
// connect in the background.
//
// When Start fails, the workers that ran WorkerWillRun get WorkerWillStop and
// the Manager is stopped. Calling Start again returns an error wrapping
// ErrRunning, and after Stop (or a Start that failed) ErrStopped.
func (m *Manager) Start(ctx context.Context) error {
	if !m.state.CompareAndSwap(int32(mgrNew), int32(mgrStarting)) {
		if managerState(m.state.Load()) >= mgrStopping {
			return errorOf("Manager", ErrStopped)
		}
		return errorOf("Manager", fmt.Errorf("%w: Start was called twice", ErrRunning))
	}
	// Stop cancels a Start under way (startCancel) and waits for startDone.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.startCancel.Store(&cancel)
	if managerState(m.state.Load()) != mgrStarting {
		// Stop began before startCancel was stored, so it found nothing to
		// cancel: give up here.
		cancel()
	}
	err := m.start(sctx)
	close(m.startDone)
	return err
}

func (m *Manager) start(ctx context.Context) error {
	for _, l := range m.lanes {
		if err := l.spool.CheckFolder(); err != nil {
			m.state.Store(int32(mgrStopped))
			m.release()
			return errorOf("Manager", fmt.Errorf("%w: Start: [Log] FOLDER (or WithSpoolDir): %w", ErrInvalidConfig, err))
		}
	}
	if err := m.openJournals(); err != nil {
		m.state.Store(int32(mgrStopped))
		m.release()
		return err
	}
	for i, l := range m.lanes {
		if err := l.worker.WorkerWillRun(ctx); err != nil {
			// Every worker that WorkerWillRun was called on, the failing one
			// included, gets WorkerWillStop.
			for _, r := range m.lanes[:i+1] {
				if serr := r.worker.WorkerWillStop(ctx); serr != nil {
					m.log.Warn("omqs: worker stop after failed start", "lane", r.name, "error", serr.Error())
				}
			}
			m.state.Store(int32(mgrStopped))
			m.release()
			return errorOf("Manager", fmt.Errorf("start %s worker: %w", l.name, err))
		}
	}
	m.now.Store(time.Now().UnixNano())
	m.clockWG.Add(1)
	go m.tick()
	for _, l := range m.lanes {
		m.wg.Add(1)
		if l.jr.Load() != nil {
			go m.drainJournal(l)
			continue
		}
		go m.drain(l)
	}
	m.lanesRunning = true
	if !m.state.CompareAndSwap(int32(mgrStarting), int32(mgrRunning)) {
		// Stop began meanwhile; it drains and stops what was started.
		return errorOf("Manager", ErrStopped)
	}
	return nil
}

// clockTick is how often the send clock is refreshed while messages flow;
// after clockIdle without one it sleeps until the next.
const (
	clockTick = 5 * time.Millisecond
	clockIdle = 100 * time.Millisecond
)

// tick refreshes m.now until the Manager stops, and sleeps while no message
// comes.
func (m *Manager) tick() {
	defer m.clockWG.Done()
	t := time.NewTicker(clockTick)
	defer t.Stop()
	last, quiet := m.accepted(), time.Duration(0)
	for {
		select {
		case now := <-t.C:
			m.now.Store(now.UnixNano())
			if n := m.accepted(); n != last {
				last, quiet = n, 0
				continue
			}
			if quiet += clockTick; quiet < clockIdle {
				continue
			}
			// Sleep. A Send* that sees clockAsleep reads the clock itself.
			t.Stop()
			m.clockAsleep.Store(true)
			select {
			case <-m.clockWake:
			case <-m.stopping:
				return
			}
			m.now.Store(time.Now().UnixNano())
			t.Reset(clockTick)
			last, quiet = m.accepted(), 0
		case <-m.stopping:
			return
		}
	}
}

// clock returns the time to stamp a message with: the clock goroutine's, or
// the system clock's while that goroutine sleeps (then it is woken).
func (m *Manager) clock() int64 {
	if !m.clockAsleep.Load() {
		return m.now.Load()
	}
	now := time.Now().UnixNano()
	if m.clockAsleep.CompareAndSwap(true, false) {
		m.now.Store(now)
		select {
		case m.clockWake <- struct{}{}:
		default:
		}
	}
	return now
}

// accepted is how many messages the lanes' workers have taken in.
func (m *Manager) accepted() uint64 {
	var n uint64
	for _, l := range m.lanes {
		n += l.st.accepted.Load()
	}
	return n
}

// drain feeds the lane's messages to its worker until the buffer is closed,
// then stops the worker.
func (m *Manager) drain(l *lane) {
	defer m.wg.Done()
	_, builtin := l.worker.(laneWorker)
	share := sharesBody(l.worker)
	for {
		it, ok := l.next()
		if !ok {
			return
		}
		l.st.accepted.Add(1)
		l.busy.Store(true)
		id, ct, text := it.parts()
		if id == "" {
			id = newMessageID()
		}
		var body []byte
		if share {
			// The built-in workers only read the body (to publish or spool
			// it): share the string's bytes instead of copying them.
			body = unsafe.Slice(unsafe.StringData(text), len(text))
		} else {
			body = []byte(text)
		}
		msg := Message{Key: it.key, Body: body, MessageID: id, ContentType: ct, Timestamp: messageTime(it.ts), Headers: it.hdr}
		if it.tc != nil {
			msg.Headers = it.tc.headers()
		}
		err := l.worker.MsgDidReceive(m.runCtx, msg)
		if err != nil {
			m.keep(l, msg, err)
		} else if !builtin {
			l.st.confirmed.Add(1)
		}
		if err != nil || !share {
			// A bare built-in worker that took the message gives its
			// bytes back once it is confirmed, spooled or dropped.
			l.release(len(text))
		}
		l.busy.Store(false)
	}
}

func newLane(name string, size, budget int, w MsgWorker, sp *spool.Spool, full error) *lane {
	return &lane{
		name: name, q: ring.New[item](size), wake: make(chan struct{}, 1), room: make(chan struct{}, 1),
		budget: int64(budget), maxBody: min(budget, MaxBodySize),
		worker: w, spool: sp, full: full,
	}
}

// idleSpins is how many times the worker goroutine yields, when the buffer
// is empty, before it sleeps: waking it makes a sender pay for a system call
// (microseconds), and while a stream of messages flows the next one usually
// comes meanwhile. It costs about 7 µs of CPU per idle period.
const idleSpins = 64

// push adds it to the buffer without waiting, and wakes the worker if it
// sleeps. It fails when the buffer is full or it.body does not fit in what
// is left of the byte budget.
func (l *lane) push(it item) bool {
	n := it.size()
	// The bytes are reserved only if they fit, so that a push that fails
	// for bytes never makes another fail. One that fails on a full buffer
	// gives them back without waking a waiting sender: it freed nothing
	// that was there before it, and the full buffer wakes the waiters as
	// the worker takes messages.
	if n > 0 && !l.reserve(int64(n)) {
		return false
	}
	if !l.q.TryPush(it) {
		if n > 0 {
			l.bytes.Add(-int64(n))
		}
		return false
	}
	if l.sleeping.Load() {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// next returns the lane's next message, or false when the buffer is closed
// and empty. Only the lane's worker goroutine calls it.
func (l *lane) next() (item, bool) {
	for i := 0; ; i++ {
		if it, ok := l.take(); ok {
			return it, true
		}
		if l.closed.Load() {
			// Closed after the last push: one more look, then the end.
			return l.take()
		}
		if i < idleSpins {
			runtime.Gosched()
			continue
		}
		// Sleep. A push after this store sees it; a push before it is seen
		// by the take below.
		l.sleeping.Store(true)
		if it, ok := l.take(); ok {
			l.sleeping.Store(false)
			return it, true
		}
		if !l.closed.Load() {
			<-l.wake
		}
		l.sleeping.Store(false)
		i = 0
	}
}

// take pops the oldest message, if any, and then tells a sender waiting for
// room that there is some.
func (l *lane) take() (item, bool) {
	it, ok := l.q.Pop()
	if ok {
		l.freed()
	}
	return it, ok
}

// release gives back the budget of a body of n bytes that is resolved (or
// was not pushed after all), and tells a sender waiting for room.
func (l *lane) release(n int) {
	l.bytes.Add(-int64(n))
	l.freed()
}

// reserve adds n to the bytes the lane holds if they stay within its
// budget.
func (l *lane) reserve(n int64) bool {
	for {
		cur := l.bytes.Load()
		if cur+n > l.budget {
			return false
		}
		if l.bytes.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// freed tells a sender waiting for room that there is some. While the
// buffer is full it waits until an eighth of it is free, so that senders
// waiting on a full buffer wake once per batch of messages taken, not once
// per message.
func (l *lane) freed() {
	if l.waiters.Load() > 0 && l.roomy() {
		select {
		case l.room <- struct{}{}:
		default:
		}
	}
}

// roomy reports whether an eighth of the lane's buffer is free.
func (l *lane) roomy() bool {
	c := l.q.Cap()
	return l.q.Len() <= c-c/8
}

// close ends the lane once every pushed message is taken. No push may come
// after it.
func (l *lane) close() {
	l.closed.Store(true)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// size returns how many messages wait in the buffer.
func (l *lane) size() int {
	if jr := l.jr.Load(); jr != nil {
		return jr.unread()
	}
	return l.q.Len()
}

// keep writes a message its worker did not take to the lane's spool file.
func (m *Manager) keep(l *lane, msg Message, cause error) {
	rec := spool.NewRecord(m.laneExchange(l), msg.Key, msg.MessageID, msg.Timestamp, msg.Body, msg.Headers)
	rec.ContentType = msg.ContentType
	if err := l.spool.Append(rec); err != nil {
		l.st.dropped.Add(1)
		m.rep.report(errorOf("Manager", fmt.Errorf("%s message %s lost: worker failed (%v) and the spool failed: %w", l.name, msg.MessageID, cause, err)))
		return
	}
	l.st.spooled.Add(1)
	if m.runCtx.Err() == nil {
		m.rep.report(errorOf("Manager", fmt.Errorf("%s worker failed on message %s, written to %s: %w", l.name, msg.MessageID, l.spool.Path(), cause)))
	}
}

func (m *Manager) laneExchange(l *lane) string {
	if l == m.lanes[logLane] {
		return m.s.cfg.LogWorker.Exchange
	}
	return m.s.cfg.EventWorker.Exchange
}

// SendLog buffers a log message under key ("" means "info").
//
// The key is a routing key of the log exchange, as in the original library:
// besides the five levels (KeyFatal ... KeyDebug) any topic key is allowed,
// such as "audit.login", and log consumers bind to it with topic patterns
// ("audit.*", "#"). A consumer bound only to the levels does not receive
// such a record. Keys longer than MaxKeyLen bytes or not valid UTF-8 are
// refused with ErrInvalidMessage.
func (m *Manager) SendLog(msg, key string) error {
	return m.sendLog(context.Background(), false, msg, key)
}

// SendFatal buffers a log message under the key "fatal".
func (m *Manager) SendFatal(msg string) error {
	return m.send(context.Background(), false, m.lanes[logLane], KeyFatal, msg)
}

// SendError buffers a log message under the key "error".
func (m *Manager) SendError(msg string) error {
	return m.send(context.Background(), false, m.lanes[logLane], KeyError, msg)
}

// SendWarning buffers a log message under the key "warning".
func (m *Manager) SendWarning(msg string) error {
	return m.send(context.Background(), false, m.lanes[logLane], KeyWarning, msg)
}

// SendInfo buffers a log message under the key "info".
func (m *Manager) SendInfo(msg string) error {
	return m.send(context.Background(), false, m.lanes[logLane], KeyInfo, msg)
}

// SendDebug buffers a log message under the key "debug".
func (m *Manager) SendDebug(msg string) error {
	return m.send(context.Background(), false, m.lanes[logLane], KeyDebug, msg)
}

// SendEvent buffers an event under key ("" means DefaultEventKey, or the
// first KEYS of [EventWorker]).
func (m *Manager) SendEvent(msg, key string) error {
	return m.sendEvent(context.Background(), false, msg, key)
}

// SendLogContext is SendLog that waits for room in a full buffer until ctx
// ends (then returning an error wrapping ErrBufferFull and ctx's error).
func (m *Manager) SendLogContext(ctx context.Context, msg, key string) error {
	return m.sendLog(ctx, true, msg, key)
}

// SendEventContext is SendEvent that waits for room in a full buffer until
// ctx ends (then returning an error wrapping ErrBufferFull and ctx's error).
func (m *Manager) SendEventContext(ctx context.Context, msg, key string) error {
	return m.sendEvent(ctx, true, msg, key)
}

// sendLog is send on the log lane, with "" meaning "info".
func (m *Manager) sendLog(ctx context.Context, wait bool, msg, key string) error {
	if key == "" {
		key = KeyInfo
	}
	return m.send(ctx, wait, m.lanes[logLane], key, msg)
}

// sendEvent is send on the event lane, with "" meaning the default event key.
func (m *Manager) sendEvent(ctx context.Context, wait bool, msg, key string) error {
	if key == "" {
		key = m.eventKey
	}
	return m.send(ctx, wait, m.lanes[eventLane], key, msg)
}

// send validates and buffers one message. When the buffer is full it fails
// at once, unless wait (a Send*Context call) or the OverflowWait policy make
// it wait for room until ctx ends or Stop begins.
func (m *Manager) send(ctx context.Context, wait bool, l *lane, key, body string) error {
	return m.sendWith(ctx, wait, m.overflow, l, key, body)
}

// sendWith is send under the overflow policy given instead of the Manager's:
// the slog handler sends under OverflowFail, so that logging never waits.
func (m *Manager) sendWith(ctx context.Context, wait bool, overflow Overflow, l *lane, key, body string) error {
	if err := m.stateErr(); err != nil {
		return err
	}
	if len(key) > MaxKeyLen || !utf8.ValidString(key) || !utf8.ValidString(body) || len(body) > l.maxBody {
		return invalidSend(l, key, body)
	}
	l.senders.Add(1)
	if err := m.stateErr(); err != nil {
		l.senders.Add(-1)
		return err
	}
	var tc *traceCtx
	if wait {
		tc = l.inject(ctx, key)
	}
	if jr := l.jr.Load(); jr != nil {
		err := m.sendJournal(ctx, wait, overflow, l, jr, key, body, tc)
		l.senders.Add(-1)
		return err
	}
	err := m.enqueue(ctx, wait, overflow, l, item{key: key, body: body, ts: m.clock(), tc: tc})
	l.senders.Add(-1)
	return err
}

// enqueue pushes it into the lane's buffer. When the buffer is full it fails
// at once (counted as refused), unless wait or the overflow policy
// OverflowWait make it wait for room.
func (m *Manager) enqueue(ctx context.Context, wait bool, overflow Overflow, l *lane, it item) error {
	if l.push(it) {
		return nil
	}
	if !wait && overflow == OverflowFail {
		l.st.refused.Add(1)
		return l.full
	}
	return m.waitRoom(ctx, l, it)
}

// waitRoom pushes it once the buffer has room, or gives up when ctx ends or
// Stop begins.
func (m *Manager) waitRoom(ctx context.Context, l *lane, it item) error {
	// Counted as a waiter before each try: a message taken after a failed
	// try signals room.
	l.waiters.Add(1)
	defer l.waiters.Add(-1)
	for {
		if l.push(it) {
			if l.waiters.Load() > 1 {
				l.freed() // pass the signal on: there may be room for another
			}
			return nil
		}
		select {
		case <-l.room:
		case <-ctx.Done():
			l.st.refused.Add(1)
			return fmt.Errorf("%w: %w", l.full, ctx.Err())
		case <-m.stopping:
			return errorOf("Manager", fmt.Errorf("%w: Stop began while Send waited for room in the buffer", ErrStopped))
		}
	}
}

func (m *Manager) stateErr() error {
	switch managerState(m.state.Load()) {
	case mgrRunning:
		return nil
	case mgrNew, mgrStarting:
		return errManagerNotStarted
	}
	return errManagerStopped
}

func invalidSend(l *lane, key, body string) error {
	if err := checkKey(key); err != nil {
		return errorOf("Manager", err)
	}
	if len(body) > l.maxBody {
		return bodyTooLarge(l, len(body))
	}
	return errorOf("Manager", fmt.Errorf("%w: message text is not valid UTF-8", ErrInvalidMessage))
}

// bodyTooLarge is the error of a body of n bytes, more than l.maxBody.
func bodyTooLarge(l *lane, n int) error {
	if n > MaxBodySize {
		return errorOf("Manager", fmt.Errorf("%w: message is %d bytes, larger than %d", ErrInvalidMessage, n, MaxBodySize))
	}
	return errorOf("Manager", fmt.Errorf("%w: message is %d bytes, larger than the %s lane's BUFFER_BYTES (%d): it could never fit", ErrInvalidMessage, n, l.name, l.budget))
}

// Pending returns how many accepted messages of each lane are not yet
// confirmed by the broker (nor spooled): in the lane, in its worker, and, for
// a built-in worker, those a replay took from the spool (the lane's
// FILE.replay.* files) and has not sent yet, before and after Stop. It is
// safe for concurrent use and does not block on I/O.
func (m *Manager) Pending() (logs, events int) {
	return m.lanePending(m.lanes[logLane]), m.lanePending(m.lanes[eventLane])
}

func (m *Manager) lanePending(l *lane) int {
	if jr := l.jr.Load(); jr != nil {
		return jr.pending()
	}
	n := l.size()
	if l.busy.Load() {
		n++
	}
	if w, ok := l.worker.(laneWorker); ok {
		n += w.pendingMsgs()
	}
	return n
}

// Stats returns the Manager's counters. It is cheap and safe to call at any time.
func (m *Manager) Stats() Stats {
	lg, ev := m.laneStats(m.lanes[logLane]), m.laneStats(m.lanes[eventLane])
	return Stats{LaneStats: lg.add(ev), Logs: lg, Events: ev}
}

func (m *Manager) laneStats(l *lane) LaneStats {
	s := l.st.snapshot()
	s.Accepted += uint64(l.size())
	if w, ok := l.worker.(laneWorker); ok {
		ws := w.laneStats()
		ws.Accepted = 0
		s = s.add(ws)
	}
	if jr := l.jr.Load(); jr != nil {
		s.Recovered = jr.recovered.Load()
	}
	return s
}

// Stop refuses new messages (Send* returns ErrStopped), lets the workers
// deliver every accepted message and waits for the broker's confirms, calls
// each worker's WorkerWillStop once, and closes the connections and the log
// files the Manager opened.
//
// Messages the broker could not take while stopping are written to the
// spool files, and Stop returns an error wrapping ErrSpooled that says how
// many. A built-in worker with no connection up (the broker is unreachable,
// the worker is reconnecting) does not wait for one: it spools what it holds
// and the rest of its buffer at once, so that Stop returns in about the time
// the writes take, whatever ctx allows.
//
// If ctx ends first, the built-in workers stop writing at once (closing
// their connections, even under a publish stuck on a stalled network or a
// blocked broker), what is not yet confirmed is written to the spool files
// and Stop returns an error wrapping ErrNotConfirmed that says how many
// messages that was.
//
// Stop does not start or continue a replay of the spool files: when a
// replay had not sent all of a file, the broker's confirms so far are
// recorded beside it (the next start resumes after them) and Stop returns an
// error wrapping ErrSpooled that says how many messages remain in which
// files. No goroutine of the Manager outlives Stop. Stop is
// idempotent: later calls return the first call's result.
func (m *Manager) Stop(ctx context.Context) error {
	m.stopOnce.Do(func() { m.stopErr = m.doStop(ctx) })
	return m.stopErr
}

func (m *Manager) doStop(ctx context.Context) error {
	prev := managerState(m.state.Swap(int32(mgrStopping)))
	close(m.stopping)
	switch prev {
	case mgrNew, mgrStopped:
		m.state.Store(int32(mgrStopped))
		m.release()
		return nil
	case mgrStarting:
		// Start is connecting: make it give up, and wait for it.
		if c := m.startCancel.Load(); c != nil {
			(*c)()
		}
		<-m.startDone
		if !m.lanesRunning {
			return nil // Start failed and released everything
		}
	}
	var before [2]uint64
	for i, l := range m.lanes {
		before[i] = m.laneStats(l).Spooled
	}
	// No Send* call is between its state check and its buffer write once
	// senders is zero; then the buffers can be closed.
	for _, l := range m.lanes {
		for spins := 0; l.senders.Load() != 0; spins++ {
			if spins < 100 {
				runtime.Gosched()
			} else {
				time.Sleep(50 * time.Microsecond)
			}
		}
		l.close()
		l.sealJournal()
	}
	// When ctx ends, workers must hand back what they hold; the built-in
	// ones stop writing at once, even a publish stuck in the transport.
	aborted := make(chan struct{})
	stopCancel := context.AfterFunc(ctx, func() {
		defer close(aborted)
		m.cancel()
		for _, l := range m.lanes {
			if w, ok := l.worker.(laneWorker); ok {
				w.abort()
			}
		}
	})
	// A built-in worker with no connection up spools the rest of its lane
	// at once instead of waiting for a connection until ctx ends.
	for _, l := range m.lanes {
		if w, ok := l.worker.(laneWorker); ok {
			w.stopSoon()
		}
	}
	m.wg.Wait()
	var errs []error
	for _, l := range m.lanes {
		if err := l.worker.WorkerWillStop(ctx); err != nil {
			// A built-in worker's ErrNotConfirmed is summed up below; a
			// custom worker's is its own report. The rest of a built-in
			// worker's errors (such as what a replay left in its file) are
			// passed on.
			_, builtin := l.worker.(laneWorker)
			parts := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok && builtin {
				parts = j.Unwrap()
			}
			for _, err := range parts {
				if !builtin || !errors.Is(err, ErrNotConfirmed) {
					errs = append(errs, errorOf("Manager", fmt.Errorf("stop %s worker: %w", l.name, err)))
				}
			}
		}
	}
	if !stopCancel() {
		<-aborted // ctx ended: the aborts started, wait for them to finish
	}
	var kept, lost [2]uint64
	for i, l := range m.lanes {
		st := m.laneStats(l)
		// Every message dropped since Start counts (each was reported
		// when dropped): Stop's error is the last word on what was lost.
		kept[i], lost[i] = st.Spooled-before[i], st.Dropped
	}
	if lost[0]+lost[1] > 0 {
		errs = append([]error{errorOf("Manager", fmt.Errorf("%w: %d message(s) could be neither confirmed nor written to the spool since Start (logs %d, events %d); see the log",
			ErrNotConfirmed, lost[0]+lost[1], lost[0], lost[1]))}, errs...)
	}
	// Name only the spool files that received messages.
	var files []string
	for i, l := range m.lanes {
		if kept[i] > 0 {
			files = append(files, l.spool.Path())
		}
	}
	where := strings.Join(files, " and ")
	switch {
	case kept[0]+kept[1] == 0:
	case ctx.Err() != nil:
		errs = append([]error{errorOf("Manager", fmt.Errorf("%w: %d message(s) were not confirmed when the context ended (logs %d, events %d); they were written to %s",
			ErrNotConfirmed, kept[0]+kept[1], kept[0], kept[1], where))}, errs...)
	default:
		errs = append([]error{errorOf("Manager", fmt.Errorf("%w: %d message(s) could not be delivered while stopping (logs %d, events %d); they were written to %s and are sent when a Manager next starts with the broker reachable",
			ErrSpooled, kept[0]+kept[1], kept[0], kept[1], where))}, errs...)
	}
	m.state.Store(int32(mgrStopped))
	m.release()
	m.clockWG.Wait()
	return errors.Join(errs...)
}

// release closes what the Manager owns besides its workers, once.
func (m *Manager) release() {
	m.releaseOnce.Do(func() {
		m.cancel()
		m.closeJournals()
		for _, l := range m.lanes {
			if err := l.spool.Close(); err != nil {
				m.log.Error("omqs: close spool", "file", l.spool.Path(), "error", err.Error())
			}
		}
		m.rep.close()
		m.unobserveLanes()
		if m.ownLog != nil {
			m.ownLog.Close()
		}
	})
}
