package reconnect

import (
	"testing"
	"time"
)

func TestBackoffAfterYoungSessions(t *testing.T) {
	b := Backoff{Interval: time.Second}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30}
	for i, w := range want {
		wait, streak := b.Ended(10*time.Millisecond, true)
		if wait != w*time.Second || streak != i+1 {
			t.Fatalf("young session %d: wait %v streak %d, want %v and %d", i+1, wait, streak, w*time.Second, i+1)
		}
	}
	if wait, streak := b.Ended(Young, true); wait != 0 || streak != 0 {
		t.Fatalf("after a long session: wait %v streak %d, want 0 and 0", wait, streak)
	}
	if wait, streak := b.Ended(0, true); wait != time.Second || streak != 1 {
		t.Fatalf("young again: wait %v streak %d, want 1s and 1", wait, streak)
	}
}

func TestBackoffNoGrowth(t *testing.T) {
	b := Backoff{Interval: 200 * time.Millisecond}
	b.Ended(0, true)
	for range 3 {
		if wait, streak := b.Ended(0, false); wait != 200*time.Millisecond || streak != 1 {
			t.Fatalf("wait %v streak %d, want the interval and 1", wait, streak)
		}
	}
}

func TestBackoffLimits(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		first    time.Duration
		limit    time.Duration
	}{
		{"no interval", 0, minInterval, MaxBackoff},
		{"interval above the cap", time.Minute, time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Backoff{Interval: tt.interval}
			if wait, _ := b.Ended(0, true); wait != tt.first {
				t.Fatalf("first wait %v, want %v", wait, tt.first)
			}
			var wait time.Duration
			for range 40 {
				wait, _ = b.Ended(0, true)
			}
			if wait != tt.limit {
				t.Fatalf("wait after many %v, want %v", wait, tt.limit)
			}
		})
	}
}
