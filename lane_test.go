package omqs

import "testing"

// A sender waiting for room is woken once a share of the buffer is free,
// not by a push that failed (which freed nothing) and not by every take:
// otherwise a sender waiting on a full buffer spins, and a buffer kept full
// by a steady stream costs a wake-up per message.
func TestLaneWakesWaitingSendersInBatches(t *testing.T) {
	const size = 16
	l := newLane("event", size, 1<<20, nil, nil, errEventBufferFull)
	for i := range size {
		if !l.push(item{key: "k", body: "body"}) {
			t.Fatalf("push %d of %d refused", i+1, size)
		}
	}
	l.waiters.Add(1) // a sender waits for room
	if l.push(item{key: "k", body: "body"}) {
		t.Fatal("a push into a full buffer succeeded")
	}
	if len(l.room) != 0 {
		t.Fatal("a failed push woke the waiting sender")
	}
	// A body that does not fit in the byte budget is refused without
	// holding any of it, so it cannot make another push fail.
	if l.push(item{key: "k", body: string(make([]byte, 1<<20))}) {
		t.Fatal("a body over the byte budget was taken")
	}
	if got := l.bytes.Load(); got != size*int64(len("body")) {
		t.Fatalf("after the failed push the lane counts %d bytes, want %d", got, size*len("body"))
	}
	if _, ok := l.take(); !ok {
		t.Fatal("take from a full buffer failed")
	}
	if len(l.room) != 0 {
		t.Fatal("one free slot of 16 woke the waiting sender")
	}
	if _, ok := l.take(); !ok {
		t.Fatal("take failed")
	}
	if len(l.room) != 1 {
		t.Fatal("an eighth of the buffer free did not wake the waiting sender")
	}
}
