package omqs

import (
	"bytes"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Limits of headers that amqp091-go, which most Go consumers use, can read
// back: a table or array nested deeper, or one with more entries, makes the
// consumer's connection fail on the delivery (see the consumer's
// reconnect backoff), so such headers are refused when a message is sent.
const (
	maxHeaderDepth   = 32
	maxHeaderEntries = 8192
)

// headerTable checks h as AMQP headers and returns a copy of it as an
// amqp091 table: nested maps become tables, byte slices are copied, an int
// becomes an int32 when it fits (as amqp091 would send it) and an int64
// otherwise (amqp091 would cut it to 32 bits), a uint or uint64 up to
// math.MaxInt64 an int64. It refuses, with an error naming the header, a
// value of a type AMQP cannot carry, a field name longer than 255 bytes,
// and nesting or sizes a consumer could not read back (maxHeaderDepth,
// maxHeaderEntries). The caller may change h afterwards.
func headerTable(h map[string]any) (amqp.Table, error) {
	t, err := copyHeaderTable(h, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: headers: %w", ErrInvalidMessage, err)
	}
	return t, nil
}

func copyHeaderTable(h map[string]any, depth int) (amqp.Table, error) {
	if depth > maxHeaderDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxHeaderDepth)
	}
	if len(h) > maxHeaderEntries {
		return nil, fmt.Errorf("a table of %d entries, more than %d", len(h), maxHeaderEntries)
	}
	t := make(amqp.Table, len(h))
	for k, v := range h {
		if len(k) > MaxKeyLen {
			return nil, fmt.Errorf("field name %q is %d bytes, longer than %d", cfgClip(k), len(k), MaxKeyLen)
		}
		c, err := copyHeaderValue(v, depth)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", cfgClip(k), err)
		}
		t[k] = c
	}
	return t, nil
}

func copyHeaderValue(v any, depth int) (any, error) {
	switch x := v.(type) {
	case nil, bool, uint8, int8, int16, uint16, int32, uint32, int64, float32, float64, string, amqp.Decimal, time.Time:
		return v, nil
	case int:
		if x >= math.MinInt32 && x <= math.MaxInt32 {
			return int32(x), nil
		}
		return int64(x), nil
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), nil
		}
		return nil, fmt.Errorf("%d is larger than an AMQP integer (int64) holds", x)
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), nil
		}
		return nil, fmt.Errorf("%d is larger than an AMQP integer (int64) holds", x)
	case []byte:
		return bytes.Clone(x), nil
	case map[string]any:
		return copyHeaderTable(x, depth+1)
	case amqp.Table:
		return copyHeaderTable(x, depth+1)
	case []any:
		if depth+1 > maxHeaderDepth {
			return nil, fmt.Errorf("nested deeper than %d levels", maxHeaderDepth)
		}
		if len(x) > maxHeaderEntries {
			return nil, fmt.Errorf("an array of %d entries, more than %d", len(x), maxHeaderEntries)
		}
		out := make([]any, len(x))
		for i, e := range x {
			c, err := copyHeaderValue(e, depth+1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = c
		}
		return out, nil
	}
	return nil, fmt.Errorf("a value of type %T, which AMQP cannot carry (use a string, a number, a bool, []byte, time.Time, []any or map[string]any)", v)
}

// checkShortstr reports a message property (what: "message id", "content
// type") that AMQP cannot carry: longer than 255 bytes, or not UTF-8 (which
// consumers in other languages decode it as).
func checkShortstr(what, s string) error {
	if len(s) > MaxKeyLen {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalidMessage, what, len(s), MaxKeyLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %q is not valid UTF-8", ErrInvalidMessage, what, s)
	}
	return nil
}

// toTable converts headers to an amqp091 table, nested maps and slices
// included (amqp091 accepts only its own Table type for nested tables).
func toTable(m map[string]any) amqp.Table {
	t := make(amqp.Table, len(m))
	for k, v := range m {
		t[k] = toTableValue(v)
	}
	return t
}

func toTableValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return toTable(x)
	case amqp.Table:
		return toTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toTableValue(e)
		}
		return out
	case uint:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x)
		}
	}
	return v
}

// plainHeaders returns t as a map[string]any whose nested tables are
// map[string]any too, copying only when there are nested tables.
func plainHeaders(t amqp.Table) map[string]any {
	if t == nil {
		return nil
	}
	for _, v := range t {
		if hasTable(v) {
			return plainValue(t).(map[string]any)
		}
	}
	return map[string]any(t)
}

func hasTable(v any) bool {
	switch v := v.(type) {
	case amqp.Table:
		return true
	case []any:
		for _, e := range v {
			if hasTable(e) {
				return true
			}
		}
	}
	return false
}

func plainValue(v any) any {
	switch v := v.(type) {
	case amqp.Table:
		m := make(map[string]any, len(v))
		for k, e := range v {
			m[k] = plainValue(e)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, e := range v {
			s[i] = plainValue(e)
		}
		return s
	}
	return v
}
