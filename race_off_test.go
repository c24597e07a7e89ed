//go:build !race

package omqs

// raceEnabled reports whether the tests were built with -race, under which
// sync.Pool drops some of what it is given: allocation counts are higher.
const raceEnabled = false
