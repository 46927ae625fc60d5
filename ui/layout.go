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
// It returns the namespace bands and the total height.
func place(nodes map[string]*ViewNode, order []string, edges []ViewEdge) ([]Group, float64) {
	var layers [5][]*ViewNode
	for _, id := range order {
		n := nodes[id]
		layers[n.Kind.Layer()] = append(layers[n.Kind.Layer()], n)
	}
	for i, l := range layers {
		for _, n := range l {
			n.X = marginX + float64(i)*(nodeW+colGap)
		}
	}
	adj := map[string][]string{}
	for _, e := range edges {
		adj[e.From] = append(adj[e.From], e.To)
		adj[e.To] = append(adj[e.To], e.From)
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
	return groups, bottom + marginB
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
				sum += nodes[o].Y
				cnt++
			}
		}
		want[n.ID] = math.Inf(1)
		if cnt > 0 {
			want[n.ID] = sum / float64(cnt)
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
		y += nodeH + rowGap
	}
	for _, n := range col {
		isPlaced[n.ID] = true
	}
	return y
}
