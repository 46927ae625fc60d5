package ui

import (
	"cmp"
	"math"
	"slices"
	"strings"
)

// place lays the nodes out in five columns. Services go first, stacked by namespace; every other
// column is then ordered and placed by the mean height of its already placed neighbours (the
// barycentre heuristic of layered graph drawing), which keeps most edges short and uncrossed.
// An edge that skips the routes column (an IP straight to its Service) gets a thin slot in that
// column, as layered drawing's dummy nodes do, so that it never runs behind a route's box.
// It returns the namespace bands and the total height.
func place(nodes map[string]*ViewNode, order []string, edges []ViewEdge) ([]Group, float64) {
	var layers [5][]*ViewNode
	for _, id := range order {
		n := nodes[id]
		layers[n.Kind.Layer()] = append(layers[n.Kind.Layer()], n)
	}
	adj := map[string][]string{}
	link := func(a, b string) {
		adj[a] = append(adj[a], b)
		adj[b] = append(adj[b], a)
	}
	slots := map[int]*ViewNode{}
	for i, e := range edges {
		from, to := nodes[e.From], nodes[e.To]
		if from == nil || to == nil || to.Kind.Layer()-from.Kind.Layer() != 2 {
			link(e.From, e.To)
			continue
		}
		slot := &ViewNode{Node: Node{ID: "slot:" + e.From + ">" + e.To, Kind: Kind("slot"), Label: to.Label}, slot: true}
		nodes[slot.ID] = slot
		slots[i] = slot
		layers[from.Kind.Layer()+1] = append(layers[from.Kind.Layer()+1], slot)
		link(e.From, slot.ID)
		link(slot.ID, e.To)
	}
	for i, l := range layers {
		for _, n := range l {
			n.X = marginX + float64(i)*(nodeW+colGap)
		}
	}
	isPlaced := map[string]bool{}

	svcs := layers[KindService.Layer()]
	slices.SortFunc(svcs, func(a, b *ViewNode) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), cmp.Compare(b.Count, a.Count), strings.Compare(a.Label, b.Label), strings.Compare(a.ID, b.ID))
	})
	var groups []Group
	y := marginT
	for i, n := range svcs {
		if i == 0 || n.Namespace != svcs[i-1].Namespace {
			y += nsHeader
			groups = append(groups, Group{Namespace: n.Namespace, X: n.X - 8, Y: y - nsHeader + 4, W: nodeW + 16})
		}
		n.Y = y
		y += nodeH + rowGap
		g := &groups[len(groups)-1]
		g.H = n.Y + nodeH + 8 - g.Y
		isPlaced[n.ID] = true
	}
	bottom := y
	for _, layer := range []int{3, 4, 1, 0} {
		bottom = max(bottom, placeByNeighbours(layers[layer], adj, nodes, isPlaced))
	}
	for i, slot := range slots {
		edges[i].Via = &[3]float64{slot.X, slot.X + nodeW, slot.Y + slot.height()/2}
		delete(nodes, slot.ID)
	}
	return groups, bottom + marginB
}

// slotH is the height an edge's slot takes in a column it crosses.
const slotH = 14.0

func (n *ViewNode) height() float64 {
	if n.slot {
		return slotH
	}
	return nodeH
}

// placeByNeighbours orders one column by the mean height of each node's placed neighbours and
// stacks it without overlap, each node as close to that height as the ones above allow. Nodes with
// no placed neighbour go last. It returns the column's bottom.
func placeByNeighbours(col []*ViewNode, adj map[string][]string, nodes map[string]*ViewNode, isPlaced map[string]bool) float64 {
	want := make(map[string]float64, len(col))
	for _, n := range col {
		sum, cnt := 0.0, 0
		for _, o := range adj[n.ID] {
			if isPlaced[o] {
				sum += nodes[o].Y + nodes[o].height()/2
				cnt++
			}
		}
		want[n.ID] = math.Inf(1)
		if cnt > 0 {
			want[n.ID] = sum/float64(cnt) - n.height()/2
		}
	}
	slices.SortFunc(col, func(a, b *ViewNode) int {
		return cmp.Or(cmp.Compare(want[a.ID], want[b.ID]), strings.Compare(a.Label, b.Label), strings.Compare(a.ID, b.ID))
	})
	y := marginT + nsHeader
	for _, n := range col {
		if w := want[n.ID]; !math.IsInf(w, 1) && w > y {
			y = w
		}
		n.Y = y
		y += n.height() + rowGap
	}
	for _, n := range col {
		isPlaced[n.ID] = true
	}
	return y
}
