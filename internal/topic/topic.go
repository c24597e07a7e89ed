// Package topic matches AMQP topic routing keys against binding patterns as
// RabbitMQ does: words are separated by ".", "*" in a pattern stands for
// exactly one word and "#" for zero or more; "" has no words.
package topic

import "strings"

// Words appends the words of a topic key or pattern to dst; "" has none.
func Words(s string, dst []string) []string {
	if s == "" {
		return dst
	}
	for {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return append(dst, s)
		}
		dst = append(dst, s[:i])
		s = s[i+1:]
	}
}

// Match reports whether key words k match pattern words p.
func Match(p, k []string) bool {
	pi, ki := 0, 0
	starP, starK := -1, 0
	for ki < len(k) {
		switch {
		case pi < len(p) && p[pi] == "#":
			starP, starK = pi, ki
			pi++
		case pi < len(p) && (p[pi] == "*" || p[pi] == k[ki]):
			pi++
			ki++
		case starP >= 0:
			pi = starP + 1
			starK++
			ki = starK
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == "#" {
		pi++
	}
	return pi == len(p)
}

// Matches reports whether key matches pattern. It does not allocate for keys
// and patterns of up to 32 words.
func Matches(pattern, key string) bool {
	if pattern == key {
		return true
	}
	var pb, kb [32]string
	return Match(Words(pattern, pb[:0]), Words(key, kb[:0]))
}
