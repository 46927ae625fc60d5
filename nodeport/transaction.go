package nodeport

import (
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// existingObjects names what a table holds now: chains, sets and maps (a full sync deletes those
// no longer wanted).
type existingObjects struct {
	Chains, Sets, Maps []string
}

func tableObject(f knftables.Family) *knftables.Table {
	comment := "baregate Service forwarding (nodeport)"
	return &knftables.Table{Family: f, Name: TableName, Comment: &comment}
}

// fullTransaction rewrites both tables to d whatever they held: flush every existing chain, set and
// map, delete those d does not have, then add d. (Not "flush table", whose meaning differs between nft
// versions.) Established connections are untouched: conntrack keeps their NAT.
func fullTransaction(tx *knftables.Transaction, d *Desired, existing map[knftables.Family]existingObjects) {
	writeTables(tx, d.Tables(), existing)
}

// coldStart splits the full sync of d into tables that do not exist yet: the transaction tx writes
// every chain, set, map and rule and the skeleton's own elements (pod-cidrs, nodeport-ips), and the
// caller sends the Services' elements (see prepareColdStart) as one netlink batch after it. The
// first step is inert: every way into a Service's rules goes through an element of the second
// (dispatch maps, cluster-ips, masquerade sets, hairpin, endpoint slots), so nothing is forwarded
// until the second step adds all of them at once, which is what one transaction would have done
// from empty tables. nft spends about 6 µs parsing each element, so at 10k Services (150k elements)
// the split takes a full sync from about 4 s to about 1 s of CPU. It returns the tables written.
func coldStart(tx *knftables.Transaction, d *Desired) []*Table {
	tables := make([]*Table, len(d.base))
	for i, b := range d.base {
		t := newTable(b.Family)
		t.merge(b)
		for _, r := range d.services {
			piece := r.tables[i]
			maps.Copy(t.Chains, piece.Chains)
			maps.Copy(t.Sets, piece.Sets)
			maps.Copy(t.Maps, piece.Maps)
		}
		tables[i] = t
	}
	writeTables(tx, tables, nil)
	return tables
}

func writeTables(tx *knftables.Transaction, tables []*Table, existing map[knftables.Family]existingObjects) {
	for _, t := range tables {
		tx.Add(tableObject(t.Family))
		have := existing[t.Family]
		for _, name := range have.Chains {
			tx.Flush(&knftables.Chain{Family: t.Family, Table: TableName, Name: name})
		}
		for _, name := range have.Sets {
			tx.Flush(&knftables.Set{Family: t.Family, Table: TableName, Name: name})
		}
		for _, name := range have.Maps {
			if endpointMap(name) {
				// Deleted and added again, for nft 1.0.6: it cannot add a rule that maps through an
				// existing typeof map whose data has th dport ("conflicting protocols specified"), but
				// can when the map is defined in the same transaction. The pick chains that use them
				// are flushed above.
				tx.Delete(&knftables.Map{Family: t.Family, Table: TableName, Name: name})
				continue
			}
			tx.Flush(&knftables.Map{Family: t.Family, Table: TableName, Name: name})
		}
		for _, name := range have.Chains {
			if t.Chains[name] == nil {
				tx.Delete(&knftables.Chain{Family: t.Family, Table: TableName, Name: name})
			}
		}
		for _, name := range have.Sets {
			if t.Sets[name] == nil {
				tx.Delete(&knftables.Set{Family: t.Family, Table: TableName, Name: name})
			}
		}
		for _, name := range have.Maps {
			if t.Maps[name] == nil && !endpointMap(name) {
				tx.Delete(&knftables.Map{Family: t.Family, Table: TableName, Name: name})
			}
		}
		var ops []op
		ops = appendTableAdds(ops, t, newTable(t.Family), true)
		// appendTableAdds adds every set and map (nft's add of an existing one is a no-op), so the
		// endpoint maps deleted above come back.
		for _, set := range sortedKeys(t.Elements) {
			for _, k := range sortedKeys(t.Elements[set]) {
				ops = append(ops, op{verbAdd, elementObject(t, set, k, t.Elements[set][k].Value)})
			}
		}
		addOps(tx, ops)
	}
}

// groupElements rewrites nft commands so that consecutive "add element <family> <table> <set> { e }"
// lines of one set become one command of up to maxElementsPerMessage elements: nft evaluates and
// sends a command at a time, and a full table's 150k one-element commands cost it about half again
// as much CPU as the same elements in a few hundred commands.
func groupElements(text string) string {
	var b strings.Builder
	b.Grow(len(text))
	prefix, n := "", 0
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		head, elem, ok := strings.Cut(line, " { ")
		if ok && strings.HasPrefix(head, "add element ") && strings.HasSuffix(elem, " }") && !strings.Contains(elem, "{") {
			elem = strings.TrimSuffix(elem, " }")
			if head == prefix && n < maxElementsPerMessage {
				b.WriteString(", " + elem)
				n++
				continue
			}
			if prefix != "" {
				b.WriteString(" }\n")
			}
			b.WriteString(head + " { " + elem)
			prefix, n = head, 1
			continue
		}
		if prefix != "" {
			b.WriteString(" }\n")
			prefix = ""
		}
		b.WriteString(line + "\n")
	}
	if prefix != "" {
		b.WriteString(" }\n")
	}
	return b.String()
}

func endpointMap(name string) bool {
	return name == mapFrontendEndpoints || name == mapNodePortEndpoints
}

// readsEndpointMap reports whether o adds a rule that maps through an endpoint map, which nft 1.0.6
// refuses once the map exists (see fullTransaction); over netlink it is fine.
func readsEndpointMap(o op) bool {
	r, ok := o.obj.(*knftables.Rule)
	return ok && o.verb == verbAdd && (strings.Contains(r.Rule, "@"+mapFrontendEndpoints) || strings.Contains(r.Rule, "@"+mapNodePortEndpoints))
}

// verb is what an op does to its object.
type verb uint8

const (
	verbAdd verb = iota
	verbFlush
	verbDelete
)

// op is one step of a partial sync, applied either through nft (knftables) or straight over netlink.
type op struct {
	verb verb
	obj  knftables.Object
}

func addOps(tx *knftables.Transaction, ops []op) {
	for _, o := range ops {
		switch o.verb {
		case verbAdd:
			tx.Add(o.obj)
		case verbFlush:
			tx.Flush(o.obj)
		case verbDelete:
			tx.Delete(o.obj)
		}
	}
}

// appendTableAdds adds what t has and old lacks: sets, maps, chains, and the rules of chains that are
// new or changed (a changed chain is flushed first). Elements are left to the caller.
func appendTableAdds(ops []op, t, old *Table, flushed bool) []op {
	for _, name := range sortedKeys(t.Sets) {
		if old.Sets[name] == nil {
			ops = append(ops, op{verbAdd, t.Sets[name]})
		}
	}
	for _, name := range sortedKeys(t.Maps) {
		if old.Maps[name] == nil {
			ops = append(ops, op{verbAdd, t.Maps[name]})
		}
	}
	names := sortedKeys(t.Chains)
	for _, name := range names {
		if old.Chains[name] == nil || flushed {
			def := t.Chains[name].Def
			ops = append(ops, op{verbAdd, &def})
		}
	}
	for _, name := range names {
		c, was := t.Chains[name], old.Chains[name]
		if was != nil && !flushed && slices.Equal(was.Rules, c.Rules) {
			continue
		}
		if was != nil && !flushed {
			ops = append(ops, op{verbFlush, &knftables.Chain{Family: t.Family, Table: TableName, Name: name}})
		}
		for _, r := range c.Rules {
			ops = append(ops, op{verbAdd, &knftables.Rule{Family: t.Family, Table: TableName, Chain: name, Rule: r}})
		}
	}
	return ops
}

// appendTableDeletes removes what old has and t lacks: chains (flushed first, since rules of other
// removed chains may jump to them), then sets and maps.
func appendTableDeletes(ops []op, t, old *Table) []op {
	for _, name := range sortedKeys(old.Chains) {
		if t.Chains[name] == nil {
			ops = append(ops, op{verbFlush, &knftables.Chain{Family: t.Family, Table: TableName, Name: name}})
		}
	}
	for _, name := range sortedKeys(old.Chains) {
		if t.Chains[name] == nil {
			ops = append(ops, op{verbDelete, &knftables.Chain{Family: t.Family, Table: TableName, Name: name}})
		}
	}
	for _, name := range sortedKeys(old.Sets) {
		if t.Sets[name] == nil {
			ops = append(ops, op{verbDelete, &knftables.Set{Family: t.Family, Table: TableName, Name: name}})
		}
	}
	for _, name := range sortedKeys(old.Maps) {
		if t.Maps[name] == nil {
			ops = append(ops, op{verbDelete, &knftables.Map{Family: t.Family, Table: TableName, Name: name}})
		}
	}
	return ops
}

func elementObject(t *Table, set, key string, value []string) *knftables.Element {
	el := &knftables.Element{Family: t.Family, Table: TableName, Key: splitKey(key), Value: value}
	if t.Maps[set] != nil || value != nil {
		el.Map = set
	} else {
		el.Set = set
	}
	return el
}

// baseOwner stands for the skeleton among an element's owners; it sorts before every Service.
var baseOwner = types.NamespacedName{}

// kernelState is what the last successful sync left in the tables, with, for each element, who
// wants it: Services may share an element (a pod backing two Services is one hairpin entry), and
// it must stay until the last of them lets go.
type kernelState struct {
	d *Desired
	// elements by table index, set, key.
	elements [2]map[string]map[string]*elementState
}

// elementState is one element key's owners and what the kernel holds for it.
type elementState struct {
	// owners and their wanted values, sorted by owner; the last one wins a clash.
	owners []elementClaim
	// present and value are what the kernel has.
	present bool
	value   []string
}

type elementClaim struct {
	owner types.NamespacedName
	value []string
}

// newKernelState describes the tables a full sync of d leaves.
func newKernelState(d *Desired) *kernelState {
	return buildKernelState(d, nil)
}

// buildKernelState is newKernelState, calling done (when not nil) with each set's elements as soon
// as they are complete, on the goroutine that built them. At 10k Services that is 150k elements on
// a cold start's critical path, so the sets (which do not depend on each other) are built on every
// core, largest first, each map sized up front and its element states and first claims taken from
// two slabs rather than allocated one by one (most elements have one owner).
func buildKernelState(d *Desired, done func(i int, set string, els map[string]*elementState)) *kernelState {
	k := &kernelState{d: d}
	pieces := make([][2]*Table, 0, len(d.services)+1)
	pieces = append(pieces, d.base)
	keys := d.serviceKeys()
	for _, key := range keys {
		pieces = append(pieces, d.services[key].tables)
	}
	type task struct {
		i    int
		set  string
		size int
	}
	var tasks []task
	for i := range k.elements {
		sizes := map[string]int{}
		for _, p := range pieces {
			for set, els := range p[i].Elements {
				sizes[set] += len(els)
			}
		}
		k.elements[i] = make(map[string]map[string]*elementState, len(sizes))
		for set, n := range sizes {
			k.elements[i][set] = make(map[string]*elementState, n)
			tasks = append(tasks, task{i, set, n})
		}
	}
	slices.SortFunc(tasks, func(a, b task) int { return b.size - a.size })
	build := func(t task) {
		m := k.elements[t.i][t.set]
		states := make([]elementState, t.size)
		claims := make([]elementClaim, t.size)
		next := 0
		for pi, p := range pieces {
			owner := baseOwner
			if pi > 0 {
				owner = keys[pi-1]
			}
			for key, e := range p[t.i].Elements[t.set] {
				st := m[key]
				if st == nil {
					st = &states[next]
					st.owners = claims[next : next : next+1]
					next++
					m[key] = st
				}
				st.claim(owner, e.Value)
			}
		}
		for _, st := range m {
			st.present, st.value = true, st.winner()
		}
		if done != nil {
			done(t.i, t.set, m)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(tasks)) {
		wg.Go(func() {
			for t := next.Add(1) - 1; t < int64(len(tasks)); t = next.Add(1) - 1 {
				build(tasks[t])
			}
		})
	}
	wg.Wait()
	return k
}

func (k *kernelState) state(i int, set, key string) *elementState {
	els := k.elements[i][set]
	if els == nil {
		els = map[string]*elementState{}
		k.elements[i][set] = els
	}
	st := els[key]
	if st == nil {
		st = &elementState{}
		els[key] = st
	}
	return st
}

func (st *elementState) claim(owner types.NamespacedName, value []string) {
	// buildKernelState claims in owner order: most claims go last.
	if n := len(st.owners); n == 0 || compareKeys(st.owners[n-1].owner, owner) < 0 {
		st.owners = append(st.owners, elementClaim{owner, value})
		return
	}
	i, found := slices.BinarySearchFunc(st.owners, owner, func(c elementClaim, o types.NamespacedName) int { return compareKeys(c.owner, o) })
	if found {
		st.owners[i].value = value
		return
	}
	st.owners = slices.Insert(st.owners, i, elementClaim{owner, value})
}

func (st *elementState) release(owner types.NamespacedName) {
	st.owners = slices.DeleteFunc(st.owners, func(c elementClaim) bool { return c.owner == owner })
}

func (st *elementState) winner() []string { return st.owners[len(st.owners)-1].value }

// touched names one element key whose owners changed.
type touched struct {
	i        int
	set, key string
}

// diff returns the ops that turn the tables from k's Desired into d's, touching only the skeleton
// where it changed and the Services whose piece is a new pointer, and moves k to d. If the ops then
// fail, k no longer describes the kernel: the caller must fall back to a full sync.
func (k *kernelState) diff(d *Desired) []op {
	var adds, deletes []op
	var changed []touched
	update := func(i int, owner types.NamespacedName, t, old *Table) {
		for set, els := range old.Elements {
			for key, e := range els {
				if n, ok := t.Elements[set][key]; ok && slices.Equal(n.Value, e.Value) {
					continue
				}
				st := k.state(i, set, key)
				st.release(owner)
				changed = append(changed, touched{i, set, key})
			}
		}
		for set, els := range t.Elements {
			for key, e := range els {
				if o, ok := old.Elements[set][key]; ok && slices.Equal(o.Value, e.Value) {
					continue
				}
				k.state(i, set, key).claim(owner, e.Value)
				changed = append(changed, touched{i, set, key})
			}
		}
	}
	for i, b := range d.base {
		old := k.d.base[i]
		adds = appendTableAdds(adds, b, old, false)
		update(i, baseOwner, b, old)
		deletes = appendTableDeletes(deletes, b, old)
	}
	visit := func(key types.NamespacedName, now, was *serviceRules) {
		if now == was {
			return
		}
		for i, f := range families {
			t, old := newTable(f.nft), newTable(f.nft)
			if now != nil {
				t = now.tables[i]
			}
			if was != nil {
				old = was.tables[i]
			}
			adds = appendTableAdds(adds, t, old, false)
			update(i, key, t, old)
			deletes = appendTableDeletes(deletes, t, old)
		}
	}
	if d.parent != nil && d.parent == k.d {
		for _, key := range d.changed {
			visit(key, d.services[key], k.d.services[key])
		}
	} else {
		for key, now := range d.services {
			visit(key, now, k.d.services[key])
		}
		for key, was := range k.d.services {
			if d.services[key] == nil {
				visit(key, nil, was)
			}
		}
	}
	// Element deletes first (a key whose value changes is deleted and re-added), then adds; both
	// after the chains they name exist and before removed chains go.
	var elDeletes, elAdds []op
	slices.SortFunc(changed, func(a, b touched) int {
		if a.i != b.i {
			return a.i - b.i
		}
		if a.set != b.set {
			return compareStrings(a.set, b.set)
		}
		return compareStrings(a.key, b.key)
	})
	changed = slices.Compact(changed)
	for _, c := range changed {
		st := k.elements[c.i][c.set][c.key]
		t := d.base[c.i]
		var want []string
		wanted := len(st.owners) > 0
		if wanted {
			want = st.winner()
		}
		if st.present && (!wanted || !slices.Equal(st.value, want)) {
			elDeletes = append(elDeletes, op{verbDelete, elementObject(t, c.set, c.key, st.value)})
			st.present = false
		}
		if wanted && !st.present {
			elAdds = append(elAdds, op{verbAdd, elementObject(t, c.set, c.key, want)})
			st.present, st.value = true, want
		}
		if !wanted {
			delete(k.elements[c.i][c.set], c.key)
		}
	}
	k.d = d
	ops := append(adds, elDeletes...)
	ops = append(ops, elAdds...)
	return append(ops, deletes...)
}

func splitKey(key string) []string { return splitOn(key, " . ") }
