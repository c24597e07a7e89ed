package omqs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A journal entry's metadata (journal.Entry.Meta) carries what a message
// has besides its key, id, time stamp and body: its content type and
// headers. It is written only for a message that has either, so that the
// entries of SendEvent without a trace context stay as they were. Values
// keep their Go type, so that a message published from the journal goes
// out exactly as it would have from memory:
//
//	version  1 byte (metaVersion)
//	content type: length (1 byte), bytes
//	headers: a table
//
// A table is a count (uvarint) and that many entries, each a name (length,
// 1 byte, and bytes) and a value; a value is a tag byte and its data
// (little-endian; lengths as uvarints):
//
//	V nil   t bool (1 byte)   B uint8   b int8   s int16   u uint16
//	I int32   i uint32   l int64   f float32   d float64
//	D amqp.Decimal (scale 1 byte, value int32)
//	S string, x []byte (length, bytes)
//	T time.Time (Unix seconds int64, nanoseconds uint32)
//	A []any (count, values)   F amqp.Table (a table)
const metaVersion = 1

// appendMeta appends the metadata of a message with content type ct and
// headers h (as headerTable made them; nil: none) to b.
func appendMeta(b []byte, ct string, h map[string]any) ([]byte, error) {
	b = append(b, metaVersion, byte(len(ct)))
	b = append(b, ct...)
	return appendMetaTable(b, h)
}

// appendTraceMeta appends the metadata of a message with content type ct
// whose only headers are those of the trace context tc (nil: none) to b.
// Unlike appendMeta it leaves b where the caller has it, so that a stack
// buffer stays there.
func appendTraceMeta(b []byte, ct string, tc *traceCtx) []byte {
	b = append(b, metaVersion, byte(len(ct)))
	b = append(b, ct...)
	switch {
	case tc == nil:
		return append(b, 0)
	case tc.state == "":
		b = append(b, 1)
	default:
		b = append(b, 2)
	}
	b = append(b, byte(len(HeaderTraceparent)))
	b = appendMetaString(append(b, HeaderTraceparent...), tc.parent)
	if tc.state != "" {
		b = append(b, byte(len(HeaderTracestate)))
		b = appendMetaString(append(b, HeaderTracestate...), tc.state)
	}
	return b
}

func appendMetaString(b []byte, s string) []byte {
	b = append(b, 'S')
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendMetaTable(b []byte, t map[string]any) ([]byte, error) {
	b = binary.AppendUvarint(b, uint64(len(t)))
	for k, v := range t {
		b = append(b, byte(len(k)))
		b = append(b, k...)
		var err error
		if b, err = appendMetaValue(b, v); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendMetaValue(b []byte, v any) ([]byte, error) {
	le := binary.LittleEndian
	switch x := v.(type) {
	case nil:
		return append(b, 'V'), nil
	case bool:
		c := byte(0)
		if x {
			c = 1
		}
		return append(b, 't', c), nil
	case uint8:
		return append(b, 'B', x), nil
	case int8:
		return append(b, 'b', byte(x)), nil
	case int16:
		return le.AppendUint16(append(b, 's'), uint16(x)), nil
	case uint16:
		return le.AppendUint16(append(b, 'u'), x), nil
	case int32:
		return le.AppendUint32(append(b, 'I'), uint32(x)), nil
	case uint32:
		return le.AppendUint32(append(b, 'i'), x), nil
	case int64:
		return le.AppendUint64(append(b, 'l'), uint64(x)), nil
	case float32:
		return le.AppendUint32(append(b, 'f'), math.Float32bits(x)), nil
	case float64:
		return le.AppendUint64(append(b, 'd'), math.Float64bits(x)), nil
	case amqp.Decimal:
		return le.AppendUint32(append(b, 'D', x.Scale), uint32(x.Value)), nil
	case string:
		return appendMetaString(b, x), nil
	case []byte:
		b = binary.AppendUvarint(append(b, 'x'), uint64(len(x)))
		return append(b, x...), nil
	case time.Time:
		b = le.AppendUint64(append(b, 'T'), uint64(x.Unix()))
		return le.AppendUint32(b, uint32(x.Nanosecond())), nil
	case []any:
		b = binary.AppendUvarint(append(b, 'A'), uint64(len(x)))
		for _, e := range x {
			var err error
			if b, err = appendMetaValue(b, e); err != nil {
				return nil, err
			}
		}
		return b, nil
	case amqp.Table:
		return appendMetaTable(append(b, 'F'), x)
	case map[string]any:
		return appendMetaTable(append(b, 'F'), x)
	}
	return nil, fmt.Errorf("%w: header value of type %T", ErrInvalidMessage, v)
}

var errMeta = errors.New("malformed message metadata in the journal")

// parseMeta reads metadata appendMeta wrote. Strings and byte slices are
// copied out of b. Headers are nil when there are none.
func parseMeta(b []byte) (ct string, h map[string]any, err error) {
	r := metaReader{b: b}
	if r.u8() != metaVersion {
		return "", nil, errMeta
	}
	ct = string(r.bytes(int(r.u8())))
	t := r.table(0)
	if r.err != nil || len(r.b) != 0 {
		return "", nil, errMeta
	}
	if len(t) > 0 {
		h = map[string]any(t)
	}
	return ct, h, nil
}

// metaReader reads metadata; after the first error every read returns a
// zero value and err stays set.
type metaReader struct {
	b   []byte
	err error
}

func (r *metaReader) fail() { r.err, r.b = errMeta, nil }

func (r *metaReader) bytes(n int) []byte {
	if n < 0 || n > len(r.b) {
		r.fail()
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}

func (r *metaReader) u8() byte {
	if s := r.bytes(1); s != nil {
		return s[0]
	}
	return 0
}

func (r *metaReader) uvarint() int {
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > uint64(len(r.b)) {
		// No count or length in metadata exceeds its size.
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

func (r *metaReader) table(depth int) amqp.Table {
	n := r.uvarint()
	if depth > maxHeaderDepth || n > maxHeaderEntries {
		r.fail()
	}
	if r.err != nil {
		return nil
	}
	t := make(amqp.Table, n)
	for range n {
		k := string(r.bytes(int(r.u8())))
		v := r.value(depth)
		if r.err != nil {
			return nil
		}
		t[k] = v
	}
	return t
}

func (r *metaReader) value(depth int) any {
	le := binary.LittleEndian
	switch r.u8() {
	case 'V':
		return nil
	case 't':
		return r.u8() != 0
	case 'B':
		return r.u8()
	case 'b':
		return int8(r.u8())
	case 's':
		if s := r.bytes(2); s != nil {
			return int16(le.Uint16(s))
		}
	case 'u':
		if s := r.bytes(2); s != nil {
			return le.Uint16(s)
		}
	case 'I':
		if s := r.bytes(4); s != nil {
			return int32(le.Uint32(s))
		}
	case 'i':
		if s := r.bytes(4); s != nil {
			return le.Uint32(s)
		}
	case 'l':
		if s := r.bytes(8); s != nil {
			return int64(le.Uint64(s))
		}
	case 'f':
		if s := r.bytes(4); s != nil {
			return math.Float32frombits(le.Uint32(s))
		}
	case 'd':
		if s := r.bytes(8); s != nil {
			return math.Float64frombits(le.Uint64(s))
		}
	case 'D':
		if s := r.bytes(5); s != nil {
			return amqp.Decimal{Scale: s[0], Value: int32(le.Uint32(s[1:]))}
		}
	case 'S':
		return string(r.bytes(r.uvarint()))
	case 'x':
		return append([]byte{}, r.bytes(r.uvarint())...)
	case 'T':
		if s := r.bytes(12); s != nil {
			return time.Unix(int64(le.Uint64(s)), int64(le.Uint32(s[8:])))
		}
	case 'A':
		n := r.uvarint()
		if depth+1 > maxHeaderDepth || n > maxHeaderEntries {
			r.fail()
			return nil
		}
		a := make([]any, 0, n)
		for range n {
			v := r.value(depth + 1)
			if r.err != nil {
				return nil
			}
			a = append(a, v)
		}
		return a
	case 'F':
		return r.table(depth + 1)
	default:
		r.fail()
	}
	return nil
}
