package textdist

import "testing"

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "abc", 0}, {"RECONECT_TIMES", "RECONNECT_TIMES", 1},
		{"kitten", "sitting", 3}, {"", "abc", 3}, {"PREFECH", "PREFETCH", 1},
	} {
		if got := Distance(c.a, c.b); got != c.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
	long := string(make([]byte, 65))
	if Distance(long, "x") < 1<<20 {
		t.Error("a string over 64 bytes is compared")
	}
}
