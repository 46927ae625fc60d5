package ui

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Query is what the page asks to see of the map; every field comes from the page's URL.
type Query struct {
	// Namespace keeps what leads to or from this namespace's objects.
	Namespace string `json:"namespace,omitempty"`
	// Text keeps what leads to or from nodes whose name or details contain it (case-insensitive).
	Text string `json:"text,omitempty"`
	// Expand lists namespaces shown in full even when the map is large.
	Expand []string `json:"expand,omitempty"`
	// PodLimit is how many pods a Service shows before they are folded into one count.
	PodLimit int `json:"podLimit"`
	// MaxServices is how many Services the map shows before grouping namespaces.
	MaxServices int `json:"maxServices"`
}

// Default view limits, chosen so that the map stays readable on one screen height or two.
const (
	DefaultPodLimit    = 4
	DefaultMaxServices = 40
)

// ViewNode is a map node placed on the page, or a group standing for several.
type ViewNode struct {
	Node
	X float64 `json:"x"`
	Y float64 `json:"y"`
	// Count is how many nodes a group stands for (0 for a plain node), by health in Counts.
	Count  int            `json:"count,omitempty"`
	Counts map[Health]int `json:"counts,omitempty"`
	// Expand is the namespace to add to Query.Expand to open this group.
	Expand string `json:"expand,omitempty"`

	slot bool // a layout placeholder for an edge crossing a column, never returned
}

// ViewEdge is an edge between placed nodes; Count is how many map edges it stands for.
type ViewEdge struct {
	Edge
	Count int `json:"count"`
	// Via, when set, is where the edge crosses a column it skips: from x Via[0] to Via[1] at height Via[2].
	Via *[3]float64 `json:"via,omitempty"`
}

// Group is the band drawn behind one namespace's Services.
type Group struct {
	Namespace string  `json:"namespace"`
	X         float64 `json:"x"`
	Y         float64 `json:"y"`
	W         float64 `json:"w"`
	H         float64 `json:"h"`
}

// Column is one layer's heading.
type Column struct {
	Title string  `json:"title"`
	X     float64 `json:"x"`
}

// View is the laid-out, filtered map the page draws: left to right from the outside world to nodes.
type View struct {
	Generation uint64     `json:"generation"`
	Taken      time.Time  `json:"taken"`
	Gateway    string     `json:"gateway"`
	Namespaces []string   `json:"namespaces"`
	Query      Query      `json:"query"`
	Width      float64    `json:"width"`
	Height     float64    `json:"height"`
	NodeW      float64    `json:"nodeW"`
	NodeH      float64    `json:"nodeH"`
	Columns    []Column   `json:"columns"`
	Groups     []Group    `json:"groups"`
	Nodes      []ViewNode `json:"nodes"`
	Edges      []ViewEdge `json:"edges"`
	// Services counts the map's Services; Shown those the filters keep.
	Services int `json:"services"`
	Shown    int `json:"shown"`
}

// Layout geometry, in SVG user units (pixels at 100% zoom).
const (
	nodeW    = 210.0
	nodeH    = 40.0
	colGap   = 80.0
	rowGap   = 8.0
	nsHeader = 30.0
	marginX  = 16.0
	marginT  = 44.0
	marginB  = 24.0
)

var healthWords = map[Health]string{HealthErrors: "failing", HealthDown: "down", HealthNoEndpoints: "without endpoints",
	HealthNotReady: "not ready", HealthPending: "pending", HealthTerminating: "terminating"}

var columnTitles = [5]string{"External IPs & hosts", "Ingress routes", "Services", "Endpoints (pods)", "Nodes"}

// BuildView filters, groups and lays out m for the page. It is pure, like BuildMap.
func BuildView(m *Map, q Query) *View {
	if q.PodLimit <= 0 {
		q.PodLimit = DefaultPodLimit
	}
	if q.MaxServices <= 0 {
		q.MaxServices = DefaultMaxServices
	}
	v := &View{Generation: m.Generation, Taken: m.Taken, Gateway: m.Gateway, Namespaces: m.Namespaces, Query: q,
		NodeW: nodeW, NodeH: nodeH, Nodes: []ViewNode{}, Edges: []ViewEdge{}, Groups: []Group{}}
	for i, t := range columnTitles {
		v.Columns = append(v.Columns, Column{Title: t, X: marginX + float64(i)*(nodeW+colGap)})
	}
	v.Width = marginX*2 + 5*nodeW + 4*colGap

	byID := make(map[string]*Node, len(m.Nodes))
	for i := range m.Nodes {
		byID[m.Nodes[i].ID] = &m.Nodes[i]
		if m.Nodes[i].Kind == KindService {
			v.Services++
		}
	}
	keep := visibleNodes(m, byID, q)
	rep := groupNodes(m, byID, keep, q)

	placed := map[string]*ViewNode{}
	var order []string
	for _, n := range m.Nodes {
		if !keep[n.ID] {
			continue
		}
		if n.Kind == KindService {
			v.Shown++
		}
		id := cmp.Or(rep[n.ID], n.ID)
		p := placed[id]
		if p == nil {
			p = &ViewNode{Node: n}
			if id != n.ID {
				p.Node = Node{ID: id, Kind: n.Kind, Namespace: n.Namespace, Health: HealthOK}
				p.Counts = map[Health]int{}
			}
			placed[id] = p
			order = append(order, id)
		}
		if id != n.ID {
			p.Count++
			p.Counts[n.Health]++
			p.Health = worse(p.Health, n.Health)
			if len(p.Fields) < 40 {
				p.Fields = append(p.Fields, Field{Name: string(n.Health), Value: n.Label})
			}
		}
	}
	for _, id := range order {
		if p := placed[id]; p.Count > 0 {
			describeGroup(p, id)
		}
	}
	v.Edges = viewEdges(m, keep, rep)
	v.Groups, v.Height = place(placed, order, v.Edges)
	for _, id := range order {
		v.Nodes = append(v.Nodes, *placed[id])
	}
	return v
}

func describeGroup(p *ViewNode, id string) {
	noun := map[Kind]string{KindIP: "IPs", KindHost: "hosts", KindRoute: "routes", KindService: "Services", KindEndpoint: "pods", KindNode: "nodes"}[p.Kind]
	p.Label = fmt.Sprintf("%d %s", p.Count, noun)
	var bad []string
	for _, h := range []Health{HealthErrors, HealthDown, HealthNoEndpoints, HealthNotReady, HealthPending, HealthTerminating} {
		if c := p.Counts[h]; c > 0 {
			bad = append(bad, fmt.Sprintf("%d %s", c, healthWords[h]))
		}
	}
	if ns, ok := strings.CutPrefix(id, "group:"+string(p.Kind)+":ns:"); ok {
		p.Expand = ns
		p.Sub = "in " + ns
	} else if svc, ok := strings.CutPrefix(id, "group:"+string(p.Kind)+":svc:"); ok {
		p.Sub = "of " + svc
	}
	if len(bad) > 0 {
		p.Sub += " · " + strings.Join(bad, ", ")
	} else {
		p.Sub += " · all ok"
	}
}

// visibleNodes keeps every node when there is no filter; otherwise the nodes matching it and
// everything upstream (what leads to them) and downstream (where they lead).
func visibleNodes(m *Map, byID map[string]*Node, q Query) map[string]bool {
	keep := make(map[string]bool, len(m.Nodes))
	if q.Namespace == "" && q.Text == "" {
		for _, n := range m.Nodes {
			keep[n.ID] = true
		}
		return keep
	}
	out, in := map[string][]string{}, map[string][]string{}
	for _, e := range m.Edges {
		out[e.From] = append(out[e.From], e.To)
		in[e.To] = append(in[e.To], e.From)
	}
	text := strings.ToLower(q.Text)
	var seeds []string
	for _, n := range m.Nodes {
		if (q.Namespace == "" || n.Namespace == q.Namespace) && (text == "" || matches(&n, text)) {
			seeds = append(seeds, n.ID)
		}
	}
	for _, adj := range []map[string][]string{out, in} {
		seen := map[string]bool{}
		stack := slices.Clone(seeds)
		for len(stack) > 0 {
			id := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[id] {
				continue
			}
			seen[id], keep[id] = true, true
			stack = append(stack, adj[id]...)
		}
	}
	return keep
}

func matches(n *Node, text string) bool {
	if strings.Contains(strings.ToLower(n.ID), text) || strings.Contains(strings.ToLower(n.Label), text) ||
		strings.Contains(strings.ToLower(n.Sub), text) {
		return true
	}
	for _, f := range n.Fields {
		if strings.Contains(strings.ToLower(f.Value), text) {
			return true
		}
	}
	return false
}

// groupNodes decides which visible nodes are drawn as one group: a whole namespace when the map
// holds too many Services, and the pods of a Service with more than PodLimit.
func groupNodes(m *Map, byID map[string]*Node, keep map[string]bool, q Query) map[string]string {
	rep := map[string]string{}
	perNS := map[string]int{}
	total := 0
	for _, n := range m.Nodes {
		if keep[n.ID] && n.Kind == KindService {
			perNS[n.Namespace]++
			total++
		}
	}
	if total > q.MaxServices {
		for _, n := range m.Nodes {
			ns := n.Namespace
			if !keep[n.ID] || n.Kind == KindNode || ns == "" || perNS[ns] < 2 || ns == q.Namespace || slices.Contains(q.Expand, ns) {
				continue
			}
			rep[n.ID] = "group:" + string(n.Kind) + ":ns:" + ns
		}
	}
	pods := map[string][]string{}
	for _, e := range m.Edges {
		from, to := byID[e.From], byID[e.To]
		if from != nil && to != nil && from.Kind == KindService && to.Kind == KindEndpoint && keep[e.From] && keep[e.To] {
			pods[e.From] = append(pods[e.From], e.To)
		}
	}
	for _, n := range m.Nodes {
		if n.Kind != KindService || rep[n.ID] != "" || len(pods[n.ID]) <= q.PodLimit {
			continue
		}
		for _, p := range pods[n.ID] {
			if rep[p] == "" {
				rep[p] = "group:" + string(KindEndpoint) + ":svc:" + strings.TrimPrefix(n.ID, "svc:")
			}
		}
	}
	return rep
}

func viewEdges(m *Map, keep map[string]bool, rep map[string]string) []ViewEdge {
	idx := map[[2]string]int{}
	out := []ViewEdge{}
	for _, e := range m.Edges {
		if !keep[e.From] || !keep[e.To] {
			continue
		}
		from, to := cmp.Or(rep[e.From], e.From), cmp.Or(rep[e.To], e.To)
		if from == to {
			continue
		}
		k := [2]string{from, to}
		i, ok := idx[k]
		if !ok {
			ve := ViewEdge{Edge: e, Count: 1}
			ve.From, ve.To = from, to
			if e.RequestRate != nil {
				ve.RequestRate, ve.ErrorRate = new(float64), new(float64)
				*ve.RequestRate, *ve.ErrorRate = *e.RequestRate, *e.ErrorRate
			}
			idx[k] = len(out)
			out = append(out, ve)
			continue
		}
		ve := &out[i]
		ve.Count++
		ve.Failing = ve.Failing || e.Failing
		if ve.Label != e.Label {
			ve.Label = ""
		}
		if e.RequestRate != nil {
			if ve.RequestRate == nil {
				ve.RequestRate, ve.ErrorRate = new(float64), new(float64)
			}
			*ve.RequestRate += *e.RequestRate
			*ve.ErrorRate += *e.ErrorRate
		}
	}
	return out
}
