package nodeport

import (
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
)

// TableName is the name of both tables baregate owns (families ip and ip6).
const TableName = "baregate"

// Desired is the ruleset this node should have, and what goes with it, as Build computes it. It is
// kept in pieces: the fixed skeleton of each table, and each Service's own chains and elements, so
// that a partial sync compares only the Services whose piece is a new pointer.
type Desired struct {
	// base are the ip and ip6 skeletons: hooks, dispatch chains, the shared sets and maps.
	base [2]*Table
	// services are the Services' pieces by key; an unchanged Service keeps its pointer from one
	// Desired to the next.
	services map[types.NamespacedName]*serviceRules
	// Services counts the Services forwarded.
	Services int
	// Verdicts summarises, per Service, what its rules do (for the dashboard).
	Verdicts map[types.NamespacedName]string
	// HealthChecks are the healthCheckNodePort servers to run, by port.
	HealthChecks map[int32]HealthCheck
	// UDP maps each UDP frontend (see udpFrontend) to the endpoints ("addr:port") it may forward to;
	// an endpoint that leaves it has its conntrack entries deleted.
	UDP map[string]map[string]bool
	// Problems are bad user input found in Services; each becomes an Event.
	Problems []Problem

	// parent is the Desired this one was derived from, and changed the keys of the Services whose
	// piece may differ from parent's (a diff against parent needs to look at no other).
	parent  *Desired
	changed []types.NamespacedName

	tables []*Table
}

// serviceRules is one Service's piece of the ruleset and what else Build derived from it.
type serviceRules struct {
	key types.NamespacedName
	// entry, svc and slices are what the piece was built from.
	entry  *cluster.Service
	svc    *corev1.Service
	slices []*discoveryv1.EndpointSlice
	// tables hold only what the Service adds to each family's table: its chains, its affinity sets,
	// and its elements in the shared sets and maps.
	tables  [2]*Table
	verdict string
	// healthCheck is the Service's healthCheckNodePort (0 for none) and its answer.
	healthCheckPort int32
	healthCheck     HealthCheck
	udp             map[string]map[string]bool
	problems        []Problem
	// picks are the fast-path pick chains the piece's frontends go to, per family; the skeleton has
	// one of each that some Service needs.
	picks [2][]pick
	// rules and elements count what the piece holds.
	rules, elements int
}

// HealthCheck is one healthCheckNodePort server's answer.
type HealthCheck struct {
	Service        types.NamespacedName
	LocalEndpoints int
}

// Problem is a bad value in a Service, skipped without disturbing anything else.
type Problem struct {
	Service types.NamespacedName
	Reason  string
	Message string
}

// Table is the desired content of one table.
type Table struct {
	Family knftables.Family
	// Chains by name. Base chains carry their hook in Def.
	Chains map[string]*Chain
	// Sets and Maps by name (definitions only).
	Sets map[string]*knftables.Set
	Maps map[string]*knftables.Map
	// Elements by set or map name, then by key.
	Elements map[string]map[string]Element
}

// Chain is one chain's definition and rules.
type Chain struct {
	Def   knftables.Chain
	Rules []string
}

// Element is one set or map element, whose key is its key in Table.Elements (the fields joined by
// " . "; see splitKey); Value is nil in sets. The key is not kept split as well: at 10k Services
// that was 150k slices, a large part of the heap the garbage collector scans during a sync.
type Element struct {
	Value []string
}

func newTable(family knftables.Family) *Table {
	return &Table{
		Family:   family,
		Chains:   map[string]*Chain{},
		Sets:     map[string]*knftables.Set{},
		Maps:     map[string]*knftables.Map{},
		Elements: map[string]map[string]Element{},
	}
}

func (t *Table) chain(name string, rules ...string) *Chain {
	c := t.Chains[name]
	if c == nil {
		c = &Chain{Def: knftables.Chain{Family: t.Family, Table: TableName, Name: name}}
		t.Chains[name] = c
	}
	c.Rules = append(c.Rules, rules...)
	return c
}

func (t *Table) set(s knftables.Set) {
	s.Family, s.Table = t.Family, TableName
	t.Sets[s.Name] = &s
}

func (t *Table) vmap(m knftables.Map) {
	m.Family, m.Table = t.Family, TableName
	t.Maps[m.Name] = &m
}

func (t *Table) element(set string, key []string, value ...string) {
	var e Element
	if len(value) > 0 {
		e.Value = value
	}
	els := t.Elements[set]
	if els == nil {
		els = map[string]Element{}
		t.Elements[set] = els
	}
	els[elementKey(key)] = e
}

func elementKey(key []string) string { return strings.Join(key, " . ") }

// merge adds piece's chains, sets and elements to t; an element key already present is overwritten.
func (t *Table) merge(piece *Table) {
	maps.Copy(t.Chains, piece.Chains)
	maps.Copy(t.Sets, piece.Sets)
	maps.Copy(t.Maps, piece.Maps)
	for set, els := range piece.Elements {
		if t.Elements[set] == nil {
			t.Elements[set] = map[string]Element{}
		}
		maps.Copy(t.Elements[set], els)
	}
}

// Tables returns the ip and ip6 tables, in that order, whole: the skeleton with every Service's piece
// merged in Service key order (on a clash of element keys the later Service wins). It is computed
// once, on first use; a partial sync never needs it.
func (d *Desired) Tables() []*Table {
	if d.tables != nil {
		return d.tables
	}
	keys := d.serviceKeys()
	for i, b := range d.base {
		t := newTable(b.Family)
		t.merge(b)
		for _, k := range keys {
			t.merge(d.services[k].tables[i])
		}
		d.tables = append(d.tables, t)
	}
	return d.tables
}

func (d *Desired) serviceKeys() []types.NamespacedName {
	return slices.SortedFunc(maps.Keys(d.services), compareKeys)
}

func compareKeys(a, b types.NamespacedName) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Rules counts the rules of all tables.
func (d *Desired) Rules() int {
	return d.count((*Table).rules, func(s *serviceRules) int { return s.rules })
}

// ElementCount counts the set and map elements of all tables (an element two Services share counts
// twice).
func (d *Desired) ElementCount() int {
	return d.count((*Table).elementCount, func(s *serviceRules) int { return s.elements })
}

func (d *Desired) count(base func(*Table) int, service func(*serviceRules) int) int {
	n := 0
	for _, t := range d.base {
		n += base(t)
	}
	for _, s := range d.services {
		n += service(s)
	}
	return n
}

func (t *Table) rules() int {
	n := 0
	for _, c := range t.Chains {
		n += len(c.Rules)
	}
	return n
}

func (t *Table) elementCount() int {
	n := 0
	for _, els := range t.Elements {
		n += len(els)
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func compareStrings(a, b string) int { return strings.Compare(a, b) }

func splitOn(s, sep string) []string { return strings.Split(s, sep) }
