package omqs

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBuiltinWorkerOutsideManager: a built-in worker no Manager has taken
// (a zero value or a new one) returns ErrNotStarted from every hook instead
// of panicking.
func TestBuiltinWorkerOutsideManager(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t, 5*time.Second)
	for name, w := range map[string]MsgWorker{
		"zero LogMsgWorker":   &LogMsgWorker{},
		"NewLogMsgWorker":     NewLogMsgWorker(),
		"zero EventMsgWorker": &EventMsgWorker{},
		"NewEventMsgWorker":   NewEventMsgWorker(),
	} {
		for hook, err := range map[string]error{
			"WorkerWillRun":  w.WorkerWillRun(ctx),
			"MsgDidReceive":  w.MsgDidReceive(ctx, Message{Key: "k", Body: []byte("b")}),
			"WorkerWillStop": w.WorkerWillStop(ctx),
		} {
			if !errors.Is(err, ErrNotStarted) {
				t.Errorf("%s: %s = %v, want ErrNotStarted", name, hook, err)
			}
		}
	}
}

// stampingWorker wraps the built-in event worker: it stamps a header on
// every event and rewrites its body in place before passing it on.
type stampingWorker struct {
	*EventMsgWorker
	mu    sync.Mutex
	hooks []string
}

func (w *stampingWorker) WorkerWillRun(ctx context.Context) error {
	w.hook("run")
	return w.EventMsgWorker.WorkerWillRun(ctx)
}

func (w *stampingWorker) MsgDidReceive(ctx context.Context, msg Message) error {
	msg.Headers = map[string]any{"x-stamp": "stamped"}
	for i, b := range msg.Body {
		if 'a' <= b && b <= 'z' {
			msg.Body[i] = b - 'a' + 'A'
		}
	}
	return w.EventMsgWorker.MsgDidReceive(ctx, msg)
}

func (w *stampingWorker) WorkerWillStop(ctx context.Context) error {
	w.hook("stop")
	return w.EventMsgWorker.WorkerWillStop(ctx)
}

func (w *stampingWorker) hook(h string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hooks = append(w.hooks, h)
}

// TestManagerCustomWorkerWrapsBuiltin: a custom worker that embeds the
// built-in event worker gets it configured by the Manager: its events reach
// the event exchange with the custom worker's changes, and the Manager's
// Stats and Pending count them as the built-in worker's. The body the custom
// worker rewrites in place is its own copy (the sent string is a constant).
func TestManagerCustomWorkerWrapsBuiltin(t *testing.T) {
	t.Parallel()
	forEachBackend(t, testManagerCustomWorkerWrapsBuiltin)
}

func testManagerCustomWorkerWrapsBuiltin(t *testing.T, url string) {
	cfg, _ := backendConfig(t, url)
	w := &stampingWorker{EventMsgWorker: NewEventMsgWorker()}
	m := startManager(t, WithConfig(cfg), WithURL(url), WithLogger(testLogger(t)), WithEventWorker(w))
	events := collect(t, url, cfg.EventWorker.Exchange, "#")
	for _, body := range []string{"signup", "email"} {
		if err := m.SendEvent(body, "user."+body); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Stop(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	events.waitCount(t, 2, 10*time.Second)
	var got []string
	for _, d := range events.all() {
		got = append(got, d.RoutingKey+"="+string(d.Body)+"/"+d.Headers["x-stamp"].(string))
	}
	if want := "user.signup=SIGNUP/stamped,user.email=EMAIL/stamped"; strings.Join(got, ",") != want {
		t.Fatalf("received %v, want %s", got, want)
	}
	if st := m.Stats().Events; st.Accepted != 2 || st.Published != 2 || st.Confirmed != 2 {
		t.Fatalf("event stats %+v, want 2 accepted, published and confirmed", st)
	}
	if _, e := m.Pending(); e != 0 {
		t.Fatalf("%d events pending after Stop", e)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if strings.Join(w.hooks, ",") != "run,stop" {
		t.Fatalf("hooks %v, want run,stop", w.hooks)
	}
}

// TestNewManagerRefusesMisplacedBuiltinWorker: a built-in worker in the
// other lane, or one that already serves a Manager, is refused by NewManager.
func TestNewManagerRefusesMisplacedBuiltinWorker(t *testing.T) {
	t.Parallel()
	url := memoryURL(t)
	newManager := func(opts ...Option) (*Manager, error) {
		return NewManager(append([]Option{WithURL(url), WithLogger(testLogger(t)), WithSpoolDir(t.TempDir())}, opts...)...)
	}
	for name, opt := range map[string]Option{
		"event worker as log worker":         WithLogWorker(NewEventMsgWorker()),
		"log worker as event worker":         WithEventWorker(NewLogMsgWorker()),
		"wrapped event worker as log worker": WithLogWorker(&stampingWorker{EventMsgWorker: NewEventMsgWorker()}),
	} {
		if m, err := newManager(opt); !errors.Is(err, ErrInvalidConfig) || m != nil {
			t.Errorf("%s: NewManager = %v, %v; want an error wrapping ErrInvalidConfig", name, m, err)
		}
	}

	w := NewLogMsgWorker()
	first, err := newManager(WithLogWorker(w))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Stop(context.Background()) })
	if m, err := newManager(WithLogWorker(w)); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "already serves another Manager") {
		t.Fatalf("second Manager with the same worker: %v, %v; want ErrInvalidConfig", m, err)
	}
}
