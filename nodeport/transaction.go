package nodeport

import (
	"slices"

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
	for _, t := range d.Tables {
		tx.Add(tableObject(t.Family))
		have := existing[t.Family]
		for _, name := range have.Chains {
			tx.Flush(&knftables.Chain{Family: t.Family, Table: TableName, Name: name})
		}
		for _, name := range have.Sets {
			tx.Flush(&knftables.Set{Family: t.Family, Table: TableName, Name: name})
		}
		for _, name := range have.Maps {
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
			if t.Maps[name] == nil {
				tx.Delete(&knftables.Map{Family: t.Family, Table: TableName, Name: name})
			}
		}
		addTable(tx, t, nil)
	}
}

// partialTransaction changes the tables from prev (what the last successful sync applied) to d,
// touching only chains and elements that differ.
func partialTransaction(tx *knftables.Transaction, prev, d *Desired) {
	for i, t := range d.Tables {
		addTable(tx, t, prev.Tables[i])
	}
}

// addTable writes t into tx. With old nil, the table is assumed freshly flushed; otherwise only the
// differences from old are written. Order matters within the transaction: chains exist before rules
// and elements refer to them, and go away only after every reference has.
func addTable(tx *knftables.Transaction, t, old *Table) {
	if old == nil {
		old = newTable(t.Family)
	}
	flushed := len(old.Chains) == 0
	for _, name := range sortedKeys(t.Sets) {
		if old.Sets[name] == nil {
			tx.Add(t.Sets[name])
		}
	}
	for _, name := range sortedKeys(t.Maps) {
		if old.Maps[name] == nil {
			tx.Add(t.Maps[name])
		}
	}
	names := sortedKeys(t.Chains)
	for _, name := range names {
		if old.Chains[name] == nil || flushed {
			def := t.Chains[name].Def
			tx.Add(&def)
		}
	}
	for _, name := range names {
		c, was := t.Chains[name], old.Chains[name]
		if was != nil && slices.Equal(was.Rules, c.Rules) {
			continue
		}
		if was != nil {
			tx.Flush(&knftables.Chain{Family: t.Family, Table: TableName, Name: name})
		}
		for _, r := range c.Rules {
			tx.Add(&knftables.Rule{Family: t.Family, Table: TableName, Chain: name, Rule: r})
		}
	}
	for _, set := range sortedKeys(t.Elements) {
		want, have := t.Elements[set], old.Elements[set]
		for _, k := range sortedKeys(have) {
			if e, ok := want[k]; !ok || !slices.Equal(e.Value, have[k].Value) {
				tx.Delete(elementObject(t, set, have[k]))
			}
		}
		for _, k := range sortedKeys(want) {
			if e, ok := have[k]; !ok || !slices.Equal(e.Value, want[k].Value) {
				tx.Add(elementObject(t, set, want[k]))
			}
		}
	}
	for _, name := range sortedKeys(old.Chains) {
		if t.Chains[name] == nil {
			c := &knftables.Chain{Family: t.Family, Table: TableName, Name: name}
			tx.Flush(c)
			tx.Delete(c)
		}
	}
	for _, name := range sortedKeys(old.Sets) {
		if t.Sets[name] == nil {
			tx.Delete(&knftables.Set{Family: t.Family, Table: TableName, Name: name})
		}
	}
	for _, name := range sortedKeys(old.Maps) {
		if t.Maps[name] == nil {
			tx.Delete(&knftables.Map{Family: t.Family, Table: TableName, Name: name})
		}
	}
}

func elementObject(t *Table, set string, e Element) *knftables.Element {
	el := &knftables.Element{Family: t.Family, Table: TableName, Key: e.Key, Value: e.Value}
	if t.Maps[set] != nil {
		el.Map = set
	} else {
		el.Set = set
	}
	return el
}
