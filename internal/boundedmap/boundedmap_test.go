package boundedmap

import (
	"sync"
	"testing"
)

func TestMap(t *testing.T) {
	m := New[int, string](3)
	if _, ok := m.Get(1); ok {
		t.Fatal("empty map returned a value")
	}
	m.Put(1, "a")
	m.Put(1, "b") // a replace never evicts
	if v, ok := m.Get(1); !ok || v != "b" {
		t.Fatalf("Get(1) = %q, %v", v, ok)
	}
	for i := 2; i <= 10; i++ {
		m.Put(i, "x")
		if m.Len() > 3 {
			t.Fatalf("%d entries, bound 3", m.Len())
		}
		if _, ok := m.Get(i); !ok {
			t.Fatalf("the entry just put (%d) was evicted", i)
		}
	}
	if v, ok := m.Take(10); !ok || v != "x" {
		t.Fatalf("Take(10) = %q, %v", v, ok)
	}
	if _, ok := m.Take(10); ok {
		t.Fatal("Take left the entry")
	}
	m.Put(11, "y")
	m.Delete(11)
	if _, ok := m.Get(11); ok {
		t.Fatal("Delete left the entry")
	}
	if New[int, int](0).max != 1 {
		t.Fatal("a bound below one was kept")
	}
}

func TestMapConcurrent(t *testing.T) {
	m := New[int, int](64)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				m.Put(g*1000+i, i)
				m.Get(i)
				m.Take(i - 1)
			}
		})
	}
	wg.Wait()
	if m.Len() > 64 {
		t.Fatalf("%d entries, bound 64", m.Len())
	}
}
