package membroker

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// normalizeTable returns t as a consumer would read it back from the wire
// after amqp091 encoded it: Go int becomes int32, time.Time loses its
// sub-second part and is in the local zone, byte slices and nested tables are
// copied. An empty table becomes nil, as amqp091 does not send one. t must
// have passed Table.Validate.
func normalizeTable(t amqp.Table) amqp.Table {
	if len(t) == 0 {
		return nil
	}
	out := make(amqp.Table, len(t))
	for k, v := range t {
		out[k] = normalizeValue(v)
	}
	return out
}

func normalizeValue(v any) any {
	switch x := v.(type) {
	case int:
		return int32(x) // amqp091 writes an int as a 32-bit 'I' field
	case time.Time:
		return time.Unix(x.Unix(), 0)
	case []byte:
		return append([]byte{}, x...)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalizeValue(e)
		}
		return out
	case amqp.Table:
		// A nested table is sent even when empty.
		out := make(amqp.Table, len(x))
		for k, e := range x {
			out[k] = normalizeValue(e)
		}
		return out
	}
	return v
}

// copyTable deep-copies a normalized table so a consumer may change what it
// received.
func copyTable(t amqp.Table) amqp.Table {
	if t == nil {
		return nil
	}
	out := make(amqp.Table, len(t))
	for k, v := range t {
		out[k] = copyValue(v)
	}
	return out
}

func copyValue(v any) any {
	switch x := v.(type) {
	case []byte:
		return append([]byte{}, x...)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyValue(e)
		}
		return out
	case amqp.Table:
		return copyTable(x)
	}
	return v
}

// checkTableKeys returns amqp091's shortstr error for a field name longer than
// 255 bytes, at any depth.
func checkTableKeys(t amqp.Table) error {
	for k, v := range t {
		if len(k) > 255 {
			return errShortstr(k)
		}
		if err := checkValueKeys(v); err != nil {
			return err
		}
	}
	return nil
}

func checkValueKeys(v any) error {
	switch x := v.(type) {
	case amqp.Table:
		return checkTableKeys(x)
	case []any:
		for _, e := range x {
			if err := checkValueKeys(e); err != nil {
				return err
			}
		}
	}
	return nil
}

// typeName is RabbitMQ's name of the AMQP field type a normalized value is
// sent as.
func typeName(v any) string {
	switch v.(type) {
	case bool:
		return "bool"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int64:
		return "long"
	case float32:
		return "float"
	case float64:
		return "double"
	case amqp.Decimal:
		return "decimal"
	case string:
		return "longstr"
	case []any:
		return "array"
	case time.Time:
		return "timestamp"
	case amqp.Table:
		return "table"
	case []byte:
		return "binary"
	case nil:
		return "void"
	}
	return fmt.Sprintf("%T", v)
}

// asInt returns an integer-typed value as int64.
func asInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

func asFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// typeClass groups field types as rabbit_misc:type_class does: all integers
// are one class, both floats another.
func typeClass(v any) string {
	if _, ok := asInt(v); ok {
		return "int"
	}
	if _, ok := asFloat(v); ok {
		return "float"
	}
	return typeName(v)
}

// valuesEqual compares two normalized values the way RabbitMQ compares
// argument and header values: same type class and equal value.
func valuesEqual(a, b any) bool {
	if typeClass(a) != typeClass(b) {
		return false
	}
	if x, ok := asInt(a); ok {
		y, _ := asInt(b)
		return x == y
	}
	if x, ok := asFloat(a); ok {
		y, _ := asFloat(b)
		return x == y
	}
	if x, ok := a.(time.Time); ok {
		return x.Unix() == b.(time.Time).Unix()
	}
	return reflect.DeepEqual(a, b)
}

// tablesEqual compares two normalized tables.
func tablesEqual(a, b amqp.Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !valuesEqual(v, w) {
			return false
		}
	}
	return true
}

// formatValue prints a value as RabbitMQ's val/1 does in equivalence errors:
// strings with ~ts, everything else with ~tp, both in single quotes.
func formatValue(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + x + "'"
	case bool:
		return "'" + strconv.FormatBool(x) + "'"
	case float32:
		return "'" + strconv.FormatFloat(float64(x), 'g', -1, 32) + "'"
	case float64:
		return "'" + strconv.FormatFloat(x, 'g', -1, 64) + "'"
	}
	if n, ok := asInt(v); ok {
		return "'" + strconv.FormatInt(n, 10) + "'"
	}
	return fmt.Sprintf("'%v'", v)
}

// formatTyped prints a present-on-one-side argument: "the value 'x' of type 't'".
func formatTyped(v any) string {
	return fmt.Sprintf("the value %s of type '%s'", formatValue(v), typeName(v))
}

// inequivalent is RabbitMQ's 406 for a redeclare that differs from the
// existing entity. cur and req are nil when the argument is absent.
func inequivalent(kind, name, field string, cur, req any, curSet, reqSet bool) *amqp.Error {
	format := func(v any, set bool, typed bool) string {
		if !set {
			return "none"
		}
		if typed {
			return formatTyped(v)
		}
		return formatValue(v)
	}
	typed := curSet != reqSet
	return serverError(amqp.PreconditionFailed, "inequivalent arg '%s' for %s: received %s but current is %s",
		field, rs(kind, name), format(req, reqSet, typed), format(cur, curSet, typed))
}

// assertArgs checks keys of two argument tables for equivalence.
func assertArgs(kind, name string, cur, req amqp.Table, keys []string) *amqp.Error {
	for _, k := range keys {
		c, cok := cur[k]
		r, rok := req[k]
		if !cok && !rok {
			continue
		}
		if cok && rok && valuesEqual(c, r) {
			continue
		}
		if k == "x-queue-type" && (!cok || c == "classic") && (!rok || r == "classic") {
			continue // RabbitMQ 3.10 takes an absent type as classic here
		}
		return inequivalent(kind, name, k, c, r, cok, rok)
	}
	return nil
}

// parseExpiration checks a message's expiration property as RabbitMQ's
// rabbit_basic:parse_expiration does; it returns the TTL or -1 for none.
func parseExpiration(s string) (time.Duration, *amqp.Error) {
	if s == "" {
		return -1, nil
	}
	i := 0
	if s[0] == '+' || s[0] == '-' {
		i++
	}
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == i {
		return 0, serverError(amqp.PreconditionFailed, "invalid expiration '%s': no_integer", s)
	}
	if j < len(s) {
		return 0, serverError(amqp.PreconditionFailed, "invalid expiration '%s': {leftover_string,%q}", s, s[j:])
	}
	n, err := strconv.ParseInt(s[:j], 10, 64)
	if err != nil || n > maxExpiry {
		return 0, serverError(amqp.PreconditionFailed, "invalid expiration '%s': {value_too_large,%s}", s, s[i:j])
	}
	if n < 0 {
		return 0, serverError(amqp.PreconditionFailed, "invalid expiration '%s': {value_negative,%d}", s, n)
	}
	return time.Duration(n) * time.Millisecond, nil
}

// maxExpiry is RabbitMQ's largest TTL in milliseconds.
const maxExpiry = math.MaxUint32
