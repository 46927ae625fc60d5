package nodeport

import (
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"
)

// TableName is the name of both tables baregate owns (families ip and ip6).
const TableName = "baregate"

// Desired is the ruleset this node should have, and what goes with it, as Build computes it.
type Desired struct {
	// Tables are the ip and ip6 tables, in that order.
	Tables []*Table
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

// Element is one set or map element; Value is nil in sets.
type Element struct {
	Key, Value []string
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
	if t.Elements[s.Name] == nil {
		t.Elements[s.Name] = map[string]Element{}
	}
}

func (t *Table) vmap(m knftables.Map) {
	m.Family, m.Table = t.Family, TableName
	t.Maps[m.Name] = &m
	if t.Elements[m.Name] == nil {
		t.Elements[m.Name] = map[string]Element{}
	}
}

func (t *Table) element(set string, key []string, value ...string) {
	e := Element{Key: key}
	if len(value) > 0 {
		e.Value = value
	}
	t.Elements[set][strings.Join(key, " . ")] = e
}

// Rules counts the rules of all tables.
func (d *Desired) Rules() int {
	n := 0
	for _, t := range d.Tables {
		for _, c := range t.Chains {
			n += len(c.Rules)
		}
	}
	return n
}

// ElementCount counts the set and map elements of all tables.
func (d *Desired) ElementCount() int {
	n := 0
	for _, t := range d.Tables {
		for _, els := range t.Elements {
			n += len(els)
		}
	}
	return n
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
