package membroker

// deque is a double-ended queue on a power-of-two ring buffer. The zero value
// is an empty deque. It shrinks again when it becomes mostly empty, so a
// backlog that drained does not pin its memory.
type deque[T any] struct {
	buf  []T
	head int
	n    int
}

const dequeMinCap = 16

func (d *deque[T]) len() int { return d.n }

func (d *deque[T]) at(i int) *T { return &d.buf[(d.head+i)&(len(d.buf)-1)] }

func (d *deque[T]) front() *T { return d.at(0) }

func (d *deque[T]) resize(c int) {
	nb := make([]T, c)
	if d.n > 0 {
		if d.head+d.n <= len(d.buf) {
			copy(nb, d.buf[d.head:d.head+d.n])
		} else {
			k := copy(nb, d.buf[d.head:])
			copy(nb[k:], d.buf[:d.n-k])
		}
	}
	d.buf = nb
	d.head = 0
}

func (d *deque[T]) grow() {
	if d.n == len(d.buf) {
		c := 2 * len(d.buf)
		if c < dequeMinCap {
			c = dequeMinCap
		}
		d.resize(c)
	}
}

func (d *deque[T]) maybeShrink() {
	if c := len(d.buf); c > 4*dequeMinCap && d.n < c/4 {
		d.resize(c / 2)
	}
}

func (d *deque[T]) pushBack(v T) {
	d.grow()
	d.buf[(d.head+d.n)&(len(d.buf)-1)] = v
	d.n++
}

func (d *deque[T]) pushFront(v T) {
	d.grow()
	d.head = (d.head - 1) & (len(d.buf) - 1)
	d.buf[d.head] = v
	d.n++
}

func (d *deque[T]) popFront() T {
	var zero T
	v := d.buf[d.head]
	d.buf[d.head] = zero
	d.head = (d.head + 1) & (len(d.buf) - 1)
	d.n--
	d.maybeShrink()
	return v
}

// pushFrontAll puts vs, in order, before the current front.
func (d *deque[T]) pushFrontAll(vs []T) {
	for i := len(vs) - 1; i >= 0; i-- {
		d.pushFront(vs[i])
	}
}

// drain removes every element and returns them in order, appended to dst.
func (d *deque[T]) drain(dst []T) []T {
	for i := 0; i < d.n; i++ {
		dst = append(dst, *d.at(i))
	}
	d.buf = nil
	d.head = 0
	d.n = 0
	return dst
}
