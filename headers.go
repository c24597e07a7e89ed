package omqs

import (
	"math"

	amqp "github.com/rabbitmq/amqp091-go"
)

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
