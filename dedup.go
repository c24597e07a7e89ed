package omqs

import (
	"sync"
	"time"
)

// dedupWindow remembers the message ids a consumer handled, to recognise a
// message delivered again. It holds at most size ids, forgetting the oldest
// first, and (when window > 0) treats an id handled longer than window ago
// as forgotten. seen and add are O(1); it is safe for concurrent use.
type dedupWindow struct {
	window time.Duration // 0: ids are forgotten only to make room
	now    func() time.Time

	mu   sync.Mutex // guards what follows
	ids  map[string]int
	ring []dedupEntry // the ids in the order they were added
	next int          // the slot the next id takes
}

type dedupEntry struct {
	id string
	at time.Time // when the message was last handled
}

func newDedupWindow(size int, window time.Duration) *dedupWindow {
	return &dedupWindow{
		window: window,
		now:    time.Now,
		ids:    make(map[string]int, size),
		ring:   make([]dedupEntry, size),
	}
}

// seen reports whether id was handled within the window.
func (w *dedupWindow) seen(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot, ok := w.ids[id]
	if !ok {
		return false
	}
	if w.window > 0 && w.now().Sub(w.ring[slot].at) > w.window {
		delete(w.ids, id)
		w.ring[slot] = dedupEntry{}
		return false
	}
	return true
}

// add records that id was handled now. An id already held keeps its slot
// (and is forgotten when that slot is reused) with its time renewed.
func (w *dedupWindow) add(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if slot, ok := w.ids[id]; ok {
		w.ring[slot].at = now
		return
	}
	if old := w.ring[w.next]; old.id != "" {
		delete(w.ids, old.id)
	}
	w.ring[w.next] = dedupEntry{id: id, at: now}
	w.ids[id] = w.next
	w.next = (w.next + 1) % len(w.ring)
}
