package topic

import "testing"

func TestTopicMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, key string
		match        bool
	}{
		{"#", "", true},
		{"#", "a", true},
		{"#", "a.b.c", true},
		{"*", "", false},
		{"*", "a", true},
		{"*", "a.b", false},
		{"*.debug", "app.debug", true},
		{"*.debug", "debug", false},
		{"*.debug", "a.b.debug", false},
		{"*.debug", "app.info", false},
		{"a.#.z", "a.z", true},
		{"a.#.z", "a.b.z", true},
		{"a.#.z", "a.b.c.z", true},
		{"a.#.z", "a.b.c", false},
		{"a.#.z", "b.a.z", false},
		{"#.x", "x", true},
		{"#.x", "a.b.x", true},
		{"#.x", "a.x.b", false},
		{"#.x", "", false},
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
		{"a.b", "a", false},
		{"", "", true},
		{"", "a", false},
		{"a.*.#", "a.b", true},
		{"a.*.#", "a", false},
		{"#.#", "a.b", true},
		{"#.*.#", "", false},
		{"#.b.#", "a.b.c", true},
		{"a..b", "a..b", true},
		{"a.*.b", "a..b", true},
		{"omqs.key.#", "omqs.key.log", true},
	} {
		if got := Match(Words(c.pattern, nil), Words(c.key, nil)); got != c.match {
			t.Errorf("Match: pattern %q key %q: %v, want %v", c.pattern, c.key, got, c.match)
		}
		if got := Matches(c.pattern, c.key); got != c.match {
			t.Errorf("Matches: pattern %q key %q: %v, want %v", c.pattern, c.key, got, c.match)
		}
	}
}

func TestMatchesDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { Matches("omqs.#.event.*", "omqs.a.b.event.c") }); n != 0 {
		t.Errorf("Matches allocates %v times", n)
	}
}
