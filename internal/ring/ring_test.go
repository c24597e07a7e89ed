package ring

import (
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestOrderAndCapacity(t *testing.T) {
	for _, capacity := range []int{1, 3, 4, 5, 1000} {
		q := New[int](capacity)
		for i := 0; i < capacity; i++ {
			if !q.TryPush(i) {
				t.Fatalf("cap %d: push %d refused", capacity, i)
			}
		}
		if q.TryPush(-1) {
			t.Fatalf("cap %d: push beyond capacity accepted", capacity)
		}
		if q.Len() != capacity {
			t.Fatalf("cap %d: Len %d", capacity, q.Len())
		}
		for lap := 0; lap < 3; lap++ {
			for i := 0; i < capacity; i++ {
				v, ok := q.Pop()
				if !ok || v != lap*capacity+i {
					t.Fatalf("cap %d lap %d: pop %d = %d, %v", capacity, lap, i, v, ok)
				}
				if !q.TryPush((lap+1)*capacity + i) {
					t.Fatalf("cap %d: push after pop refused", capacity)
				}
			}
		}
	}
	q := New[int](2)
	if _, ok := q.Pop(); ok {
		t.Fatal("pop from an empty queue")
	}
}

func TestManyProducers(t *testing.T) {
	const producers, each = 8, 20000
	q := New[[2]int](256)
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; {
				if q.TryPush([2]int{p, i}) {
					i++
				}
			}
		}()
	}
	next := make([]int, producers)
	for got := 0; got < producers*each; {
		v, ok := q.Pop()
		if !ok {
			continue
		}
		if v[1] != next[v[0]] {
			t.Fatalf("producer %d: got %d, want %d (per-producer order lost)", v[0], v[1], next[v[0]])
		}
		next[v[0]]++
		got++
	}
	wg.Wait()
	if q.Len() != 0 {
		t.Fatalf("Len = %d after draining", q.Len())
	}
}

func BenchmarkTryPushPop(b *testing.B) {
	q := New[int](1024)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.TryPush(i)
		q.Pop()
	}
}
