package gateway

import (
	"slices"
	"testing"

	"k8s.io/client-go/tools/cache"

	"github.com/baregate/baregate/internal/cluster"
)

// TestChangesTake: keys are noted once however often they change, taken per kind, and kinds
// without a ready source (MetalLB's before their first list) stay noted for a later snapshot.
func TestChangesTake(t *testing.T) {
	var c changes
	for _, key := range []string{"ns/a", "ns/b", "ns/a"} {
		c.note(cluster.KindService, key)
	}
	c.note(cluster.KindPool, "metallb/p1")
	got, since := c.take(map[cluster.Kind][]cache.SharedIndexInformer{cluster.KindService: nil})
	keys := got[cluster.KindService]
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"ns/a", "ns/b"}) || len(got) != 1 {
		t.Errorf("took %v, want Services ns/a and ns/b only", got)
	}
	if since.IsZero() {
		t.Error("no time for the oldest change")
	}
	got, since = c.take(map[cluster.Kind][]cache.SharedIndexInformer{cluster.KindPool: nil})
	if !slices.Equal(got[cluster.KindPool], []string{"metallb/p1"}) || since.IsZero() {
		t.Errorf("the pool change left for later: took %v at %v", got, since)
	}
	if got, since = c.take(map[cluster.Kind][]cache.SharedIndexInformer{cluster.KindPool: nil, cluster.KindService: nil}); len(got) != 0 || !since.IsZero() {
		t.Errorf("nothing noted, yet took %v at %v", got, since)
	}
}
