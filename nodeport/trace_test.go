package nodeport

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"
)

// tracer follows a packet through the rules a knftables.Fake holds, as the kernel would, exploring
// every branch of a random choice. It understands the nft dialect Build writes, and fails the test on
// anything else, so a rule it cannot read never passes silently.
type tracer struct {
	t     *testing.T
	fake  *knftables.Fake
	local []netip.Addr
	// affinity holds the addresses dynamic sets have learned (set name -> addresses).
	affinity map[string]map[string]bool
}

// packet is what the tracer follows.
type packet struct {
	src, dst netip.Addr
	proto    string
	dport    int
}

// state is a packet's state while it traverses one branch.
type state struct {
	pkt     packet
	mark    uint32
	dnat    string
	masq    bool
	updates []string // "set addr" learned along the way
}

// result is one way a packet can end in one hook.
type result struct {
	st       state
	verdict  string // accept, drop, reject, or return (fell off a non-base chain)
	terminal bool
}

// traceResult is where a packet ends after all hooks.
type traceResult struct {
	// Endpoints are the possible DNAT targets, sorted; empty when not DNATed.
	Endpoints []string
	// Masquerade is true when postrouting masquerades (the same in every branch, or the test fails).
	Masquerade bool
	// Verdict is accept, drop or reject.
	Verdict string
	// Updates are, for the first branch, the affinity entries it learned.
	Updates []string
}

func newTracer(t *testing.T, fake *knftables.Fake, local ...string) *tracer {
	tr := &tracer{t: t, fake: fake, affinity: map[string]map[string]bool{}}
	for _, a := range local {
		tr.local = append(tr.local, netip.MustParseAddr(a))
	}
	return tr
}

// trace sends a new connection's first packet. fromNode means a process on the node sent it (output
// hook); otherwise it arrives on an interface (prerouting).
func (tr *tracer) trace(src, dst, proto string, dport int, fromNode bool) traceResult {
	tr.t.Helper()
	p := packet{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: proto, dport: dport}
	fam := knftables.IPv4Family
	if p.dst.Is6() {
		fam = knftables.IPv6Family
	}
	st := state{pkt: p}
	var results []result
	if fromNode {
		for _, r := range tr.runChain(fam, "filter-output", st) {
			if r.verdict != "accept" {
				results = append(results, r)
				continue
			}
			results = append(results, tr.runChain(fam, "nat-output", r.st)...)
		}
	} else {
		for _, r := range tr.runChain(fam, "nat-prerouting", st) {
			if r.verdict != "accept" {
				results = append(results, r)
				continue
			}
			hook := "filter-forward"
			if tr.isLocal(r.st.pkt.dst) {
				hook = "filter-input"
			}
			results = append(results, tr.runChain(fam, hook, r.st)...)
		}
	}
	var out traceResult
	for i, r := range results {
		if r.verdict == "accept" {
			post := tr.runChain(fam, "nat-postrouting", r.st)
			if len(post) != 1 {
				tr.t.Fatalf("postrouting branched: %v", post)
			}
			r = post[0]
		}
		if i == 0 {
			out.Verdict, out.Masquerade, out.Updates = r.verdict, r.st.masq, r.st.updates
		} else if out.Verdict != r.verdict || out.Masquerade != r.st.masq {
			tr.t.Fatalf("branches disagree: %s/masq=%v vs %s/masq=%v", out.Verdict, out.Masquerade, r.verdict, r.st.masq)
		}
		if r.st.dnat != "" && !slices.Contains(out.Endpoints, r.st.dnat) {
			out.Endpoints = append(out.Endpoints, r.st.dnat)
		}
	}
	slices.Sort(out.Endpoints)
	return out
}

// learn applies a trace's affinity updates, as the kernel would after the packet passed.
func (tr *tracer) learn(res traceResult) {
	for _, u := range res.Updates {
		set, addr, _ := strings.Cut(u, " ")
		if tr.affinity[set] == nil {
			tr.affinity[set] = map[string]bool{}
		}
		tr.affinity[set][addr] = true
	}
}

func (tr *tracer) isLocal(a netip.Addr) bool { return slices.Contains(tr.local, a) }

func (tr *tracer) table(fam knftables.Family) *knftables.FakeTable {
	tbl := tr.fake.Tables[fam][TableName]
	if tbl == nil {
		tr.t.Fatalf("no %s table", fam)
	}
	return tbl
}

// runChain runs a chain; falling off a base chain accepts.
func (tr *tracer) runChain(fam knftables.Family, name string, st state) []result {
	tbl := tr.table(fam)
	c := tbl.Chains[name]
	if c == nil {
		tr.t.Fatalf("no chain %s", name)
	}
	res := tr.runRules(fam, c.Rules, 0, st, 0)
	if c.Hook != nil {
		for i := range res {
			if res[i].verdict == "return" {
				res[i].verdict, res[i].terminal = "accept", true
			}
		}
	}
	return res
}

func (tr *tracer) runRules(fam knftables.Family, rules []*knftables.Rule, from int, st state, depth int) []result {
	if depth > 50 {
		tr.t.Fatalf("rule loop")
	}
	for i := from; i < len(rules); i++ {
		rule := rules[i].Rule
		// "numgen random mod K == 0 <rest>" takes <rest> with probability 1/K: explore both ways.
		if toks := strings.Fields(rule); len(toks) > 6 && toks[0] == "numgen" && toks[4] == "==" && toks[5] == "0" {
			if mustAtoi(tr.t, toks[3]) < 2 {
				tr.t.Fatalf("numgen cascade with mod %s in %q", toks[3], rule)
			}
			rest := strings.Join(toks[6:], " ")
			taken := tr.runRules(fam, []*knftables.Rule{{Rule: rest}}, 0, st, depth+1)
			var out []result
			for _, r := range taken {
				if r.terminal {
					out = append(out, r)
				} else {
					out = append(out, tr.runRules(fam, rules, i+1, r.st, depth+1)...)
				}
			}
			return append(out, tr.runRules(fam, rules, i+1, st, depth+1)...)
		}
		verdicts, ok := tr.evalRule(fam, rule, &st)
		if !ok {
			continue
		}
		if len(verdicts) == 0 {
			continue
		}
		var out []result
		for _, v := range verdicts {
			out = append(out, tr.verdict(fam, v, rules, i, depth)...)
		}
		return out
	}
	return []result{{st: st, verdict: "return"}}
}

// branch is one outcome of a rule: a verdict and the state it leaves.
type branch struct {
	verdict string
	st      state
}

func (tr *tracer) verdict(fam knftables.Family, b branch, rules []*knftables.Rule, i, depth int) []result {
	kind, target, _ := strings.Cut(b.verdict, " ")
	switch kind {
	case "accept", "drop", "reject":
		return []result{{st: b.st, verdict: kind, terminal: true}}
	case "return":
		return []result{{st: b.st, verdict: "return"}}
	case "goto":
		return tr.runSub(fam, target, b.st, depth)
	case "jump":
		var out []result
		for _, r := range tr.runSub(fam, target, b.st, depth) {
			if r.terminal {
				out = append(out, r)
			} else {
				out = append(out, tr.runRules(fam, rules, i+1, r.st, depth+1)...)
			}
		}
		return out
	}
	tr.t.Fatalf("unknown verdict %q", b.verdict)
	return nil
}

func (tr *tracer) runSub(fam knftables.Family, name string, st state, depth int) []result {
	c := tr.table(fam).Chains[name]
	if c == nil {
		tr.t.Fatalf("no chain %s", name)
	}
	return tr.runRules(fam, c.Rules, 0, st, depth+1)
}

// evalRule evaluates one rule's matches and statements. It returns ok=false when a match fails, and
// the verdict branches (none when the rule only changed state).
func (tr *tracer) evalRule(fam knftables.Family, rule string, st *state) ([]branch, bool) {
	toks := tokenize(rule)
	for i := 0; i < len(toks)-1; {
		switch tok := toks[i]; {
		case tok == "ct" && toks[i+1] == "state" && toks[i+2] == "new":
			i += 3
		case tok == "jump" || tok == "goto":
			return []branch{{tok + " " + toks[i+1], *st}}, true
		case tok == "return" || tok == "drop" || tok == "reject" || tok == "accept":
			return []branch{{tok, *st}}, true
		case tok == "masquerade":
			st.masq = true
			return []branch{{"accept", *st}}, true
		case tok == "update":
			set := strings.TrimPrefix(toks[i+1], "@")
			st.updates = append(st.updates, set+" "+st.pkt.src.String())
			i += 3
		case tok == "dnat":
			return tr.dnat(fam, toks[i+1:], *st), true
		case tok == "numgen":
			n, _ := strconv.Atoi(toks[i+3])
			if toks[i+4] != "vmap" {
				tr.t.Fatalf("numgen without vmap in %q", rule)
			}
			entries := mapEntries(toks[i+5])
			if len(entries) != n {
				tr.t.Fatalf("numgen mod %d with %d entries in %q", n, len(entries), rule)
			}
			var out []branch
			for _, e := range entries {
				out = append(out, branch{e[1], *st})
			}
			return out, true
		default:
			exprs, next := tr.parseExprs(toks, i, st, rule)
			i = next
			key := strings.Join(exprs, " . ")
			switch op := toks[i]; {
			case op == "vmap":
				v, found := tr.lookupMap(fam, toks[i+1], key)
				if !found {
					return nil, false
				}
				return []branch{{v, *st}}, true
			case op == "set":
				// meta mark set meta mark | X  /  ^ X
				mask := parseMark(toks[i+4])
				if toks[i+3] == "|" {
					st.mark |= mask
				} else {
					st.mark ^= mask
				}
				i += 5
			case op == "&":
				if (parseMark(exprs[0])&parseMark(toks[i+1]) == parseMark(toks[i+3])) != (toks[i+2] == "==") {
					return nil, false
				}
				i += 4
			case op == "!=":
				if tr.member(fam, toks[i+1], key) {
					return nil, false
				}
				i += 2
			default:
				if !tr.member(fam, op, key) {
					return nil, false
				}
				i++
			}
		}
	}
	return nil, true
}

// parseExprs reads a concatenation of packet expressions starting at toks[i] and returns their values.
func (tr *tracer) parseExprs(toks []string, i int, st *state, rule string) ([]string, int) {
	var vals []string
	for {
		switch {
		case (toks[i] == "ip" || toks[i] == "ip6") && toks[i+1] == "saddr":
			vals, i = append(vals, st.pkt.src.String()), i+2
		case (toks[i] == "ip" || toks[i] == "ip6") && toks[i+1] == "daddr":
			vals, i = append(vals, st.pkt.dst.String()), i+2
		case toks[i] == "meta" && toks[i+1] == "l4proto":
			vals, i = append(vals, st.pkt.proto), i+2
		case toks[i] == "th" && toks[i+1] == "dport":
			vals, i = append(vals, strconv.Itoa(st.pkt.dport)), i+2
		case toks[i] == "meta" && toks[i+1] == "mark":
			vals, i = append(vals, fmt.Sprintf("0x%x", st.mark)), i+2
		case toks[i] == "fib" && toks[i+2] == "type":
			a := st.pkt.src
			if toks[i+1] == "daddr" {
				a = st.pkt.dst
			}
			v := "unicast"
			if tr.isLocal(a) {
				v = "local"
			}
			vals, i = append(vals, v), i+3
		default:
			tr.t.Fatalf("tracer cannot read %q at %q", rule, toks[i])
		}
		if toks[i] != "." {
			return vals, i
		}
		i++
	}
}

// member checks value against an operand: a literal, a CIDR, an anonymous set or a named set.
func (tr *tracer) member(fam knftables.Family, operand, value string) bool {
	var elems []string
	switch {
	case strings.HasPrefix(operand, "@"):
		name := operand[1:]
		if learned := tr.affinity[name]; learned != nil {
			return learned[value]
		}
		s := tr.table(fam).Sets[name]
		if s == nil {
			tr.t.Fatalf("no set %s", name)
		}
		for _, e := range s.Elements {
			elems = append(elems, strings.Join(e.Key, " . "))
		}
	case strings.HasPrefix(operand, "{"):
		for _, e := range strings.Split(strings.Trim(operand, "{} "), ",") {
			elems = append(elems, strings.TrimSpace(e))
		}
	default:
		elems = []string{operand}
	}
	for _, e := range elems {
		if e == value {
			return true
		}
		if p, err := netip.ParsePrefix(e); err == nil {
			if a, err := netip.ParseAddr(value); err == nil && p.Contains(a) {
				return true
			}
		}
	}
	return false
}

func (tr *tracer) lookupMap(fam knftables.Family, operand, key string) (string, bool) {
	if strings.HasPrefix(operand, "{") {
		for _, e := range mapEntries(operand) {
			if e[0] == key {
				return e[1], true
			}
		}
		return "", false
	}
	m := tr.table(fam).Maps[strings.TrimPrefix(operand, "@")]
	if m == nil {
		tr.t.Fatalf("no map %s", operand)
	}
	for _, e := range m.Elements {
		if strings.Join(e.Key, " . ") == key {
			if len(e.Value) > 1 { // data: address . port
				return strings.Join(e.Value, " . "), true
			}
			return strings.Join(e.Value, " "), true
		}
	}
	return "", false
}

// dnat handles "to A:P", "ip to numgen random mod N map { i : A . P, ... }", and the fast path's
// "ip to <packet fields> . numgen random mod N map @m", where every slot 0..N-1 must be in @m.
func (tr *tracer) dnat(fam knftables.Family, toks []string, st state) []branch {
	to := func(ap netip.AddrPort) branch {
		s := st
		s.dnat = ap.String()
		s.pkt.dst, s.pkt.dport = ap.Addr(), int(ap.Port())
		return branch{"accept", s}
	}
	if toks[0] == "to" {
		return []branch{to(netip.MustParseAddrPort(toks[1]))}
	}
	if m := slices.Index(toks, "map"); m > 0 && strings.HasPrefix(toks[m+1], "@") {
		ng := slices.Index(toks, "numgen")
		if ng < 0 || toks[ng+1] != "random" || toks[ng+2] != "mod" || ng+4 != m {
			tr.t.Fatalf("dnat map without a trailing numgen slot: %v", toks)
		}
		fields := toks[2:ng]
		var prefix []string
		if len(fields) > 0 {
			fields = append(fields[:len(fields)-1:len(fields)-1], "") // drop the "." before numgen
			prefix, _ = tr.parseExprs(fields, 0, &st, strings.Join(toks, " "))
		}
		var out []branch
		for slot := range mustAtoi(tr.t, toks[ng+3]) {
			key := strings.Join(append(slices.Clip(prefix), strconv.Itoa(slot)), " . ")
			v, found := tr.lookupMap(fam, toks[m+1], key)
			if !found {
				// The kernel would fall through without DNAT: a hole in the slots is a bug.
				tr.t.Fatalf("%s has no slot %s", toks[m+1], key)
			}
			addr, port, _ := strings.Cut(v, " . ")
			out = append(out, to(netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(mustAtoi(tr.t, port)))))
		}
		return out
	}
	var out []branch
	for _, tok := range toks {
		if !strings.HasPrefix(tok, "{") {
			continue
		}
		for _, e := range mapEntries(tok) {
			addr, port, _ := strings.Cut(e[1], " . ")
			out = append(out, to(netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(mustAtoi(tr.t, port)))))
		}
	}
	return out
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("bad number %q", s)
	}
	return n
}

func parseMark(s string) uint32 {
	v, _ := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	return uint32(v)
}

// mapEntries splits "{ k : v, k2 : v2 }" into pairs.
func mapEntries(s string) [][2]string {
	var out [][2]string
	for _, e := range strings.Split(strings.Trim(s, "{} "), ",") {
		k, v, _ := strings.Cut(e, " : ")
		out = append(out, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
	}
	return out
}

// tokenize splits a rule on spaces, keeping each { ... } group as one token.
func tokenize(rule string) []string {
	var toks []string
	for rest := strings.TrimSpace(rule); rest != ""; rest = strings.TrimSpace(rest) {
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			toks, rest = append(toks, rest[:end+1]), rest[end+1:]
			continue
		}
		tok, after, _ := strings.Cut(rest, " ")
		toks, rest = append(toks, tok), after
	}
	return append(toks, "") // a sentinel so lookahead never runs off the end
}
