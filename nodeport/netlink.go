package nodeport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
	"sigs.k8s.io/knftables"
)

// errNotNetlink marks a partial sync with an op that applyWithNetlink does not translate; the caller
// sends it through nft instead.
var errNotNetlink = errors.New("op not translated to netlink")

// applyWithNetlink sends ops as one netlink batch, which the kernel applies atomically, as nft -f
// does. It exists for speed: nft reads the whole table back from the kernel before each transaction
// (hundreds of milliseconds at 10k Services), while a batch costs only its own messages. It
// translates the shapes a Service's piece has in the common case (its chains, their rules, its
// elements in the shared maps) into the same bytecode nft generates for the same text, so nft list
// shows the same ruleset either way; anything else returns errNotNetlink before sending.
func applyWithNetlink(ops []op) error {
	send, err := prepareNetlink(ops)
	if err != nil {
		return err
	}
	return send()
}

// prepareNetlink encodes ops into a batch and returns what sends it. Only sending touches the kernel
// (the socket is opened then, in the calling thread's network namespace), so the encoding may run
// on any goroutine, e.g. while nft runs.
func prepareNetlink(ops []op) (send func() error, err error) {
	// The batch goes out in one sendmsg, which fails with EMSGSIZE beyond the socket's send buffer: a
	// full table's elements are megabytes, so the buffer is sized to the batch as nft does (forced,
	// since root may exceed wmem_max).
	conn, err := nftables.New(batchBuffers(max(1<<20, 128*len(ops))))
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	if err := queueNetlink(conn, ops); err != nil {
		return nil, err
	}
	return func() error {
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("sending %d operations over netlink: %w", len(ops), err)
		}
		return nil
	}, nil
}

// prepareColdStart works out the kernel state a full sync of d leaves (see buildKernelState) and
// encodes coldStart's elements, those of the state not in the skeleton tables, straight from it
// into netlink messages as each set is complete (see setElemBatch). It returns the state, what
// sends the elements and how many there are.
func prepareColdStart(d *Desired, tables []*Table) (k *kernelState, send func() error, n int, err error) {
	type encoded struct {
		i    int
		set  string
		msgs []netlink.Message
	}
	var mu sync.Mutex
	var sets []encoded
	k = buildKernelState(d, func(i int, set string, states map[string]*elementState) {
		t := tables[i]
		if t.Elements[set] != nil || len(states) == 0 {
			return // the skeleton's, written by nft
		}
		w := setElemBatch{family: nftables.TableFamilyIPv4, set: set}
		if t.Family == knftables.IPv6Family {
			w.family = nftables.TableFamilyIPv6
		}
		var enc elementEncoder
		var fields [4]string
		var bad error
		for key, st := range states {
			if !w.element(&enc, splitInto(fields[:0], key), st.value) {
				bad = errBadElement{set, splitKey(key)}
				break
			}
		}
		w.finish()
		mu.Lock()
		defer mu.Unlock()
		sets = append(sets, encoded{i, set, w.msgs})
		n += len(states)
		if bad != nil && err == nil {
			err = bad
		}
	})
	if err != nil {
		return nil, nil, 0, err
	}
	slices.SortFunc(sets, func(a, b encoded) int {
		if a.i != b.i {
			return a.i - b.i
		}
		return strings.Compare(a.set, b.set)
	})
	var msgs []netlink.Message
	for _, s := range sets {
		msgs = append(msgs, s.msgs...)
	}
	return k, func() error {
		if err := sendBatch(msgs); err != nil {
			return fmt.Errorf("sending %d elements over netlink: %w", n, err)
		}
		return nil
	}, n, nil
}

// splitInto is splitKey appending to fields, which a caller may keep on its stack.
func splitInto(fields []string, key string) []string {
	for {
		field, rest, more := strings.Cut(key, " . ")
		fields = append(fields, field)
		if !more {
			return fields
		}
		key = rest
	}
}

// batchBuffers sizes the socket's buffers for a batch of about the given bytes (see forceBuffers).
func batchBuffers(bytes int) nftables.ConnOption {
	return nftables.WithSockOptions(func(c *netlink.Conn) error { return forceBuffers(c, bytes) })
}

// forceBuffers sets the socket's send buffer to bytes and its receive buffer to what the batch's
// acknowledgements take, both forced past wmem_max/rmem_max (root may). Every message of a batch is
// acknowledged, and the kernel queues all the acknowledgements while it processes the one sendmsg,
// before anything reads them: each costs a socket buffer of its own (about 1 KiB of truesize), so
// past a few hundred messages the default receive buffer overflows and the read fails with ENOBUFS,
// though the batch was applied (30k Services' cold start: about 6,000 messages).
func forceBuffers(c *netlink.Conn, bytes int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	recv := max(1<<20, bytes/4)
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, bytes),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, recv))
	}); err != nil {
		return err
	}
	return serr
}

// lastingNetlink sends partial syncs over one socket kept open between them. Closing an nftables
// socket makes the kernel finish releasing what its transactions deleted (nft_rcv_nl_event flushes
// the destroy work, which waits for an RCU grace period): about 12 ms of wall time after every
// change that deletes an element, most of a change's time. A Proxy's syncs run one at a time, so
// lastingNetlink needs no lock.
type lastingNetlink struct {
	conn *nftables.Conn
}

// partialSendBuffer bounds a partial sync's batch (a larger one fails with EMSGSIZE, and the caller
// falls back to a full sync); 16 MB holds about 150k elements.
const partialSendBuffer = 16 << 20

// apply sends ops as one batch. The socket is opened on first use, in the calling thread's network
// namespace, and dropped after any error (with whatever the failed batch left queued in it).
func (l *lastingNetlink) apply(ops []op) error {
	if l.conn == nil {
		c, err := nftables.New(nftables.AsLasting(), batchBuffers(partialSendBuffer))
		if err != nil {
			return fmt.Errorf("opening netlink: %w", err)
		}
		l.conn = c
	}
	err := queueNetlink(l.conn, ops)
	if err == nil {
		if err = l.conn.Flush(); err != nil {
			err = fmt.Errorf("sending %d operations over netlink: %w", len(ops), err)
		}
	}
	if err != nil {
		l.close()
	}
	return err
}

func (l *lastingNetlink) close() {
	if l.conn != nil {
		_ = l.conn.CloseLasting()
		l.conn = nil
	}
}

// netlinkConn is what queueNetlink needs of *nftables.Conn.
type netlinkConn interface {
	AddChain(*nftables.Chain) *nftables.Chain
	FlushChain(*nftables.Chain)
	DelChain(*nftables.Chain)
	AddRule(*nftables.Rule) *nftables.Rule
	AddSet(*nftables.Set, []nftables.SetElement) error
	DelSet(*nftables.Set)
	SetAddElements(*nftables.Set, []nftables.SetElement) error
	SetDeleteElements(*nftables.Set, []nftables.SetElement) error
}

func queueNetlink(conn netlinkConn, ops []op) error {
	tables := map[knftables.Family]*nftables.Table{
		knftables.IPv4Family: {Name: TableName, Family: nftables.TableFamilyIPv4},
		knftables.IPv6Family: {Name: TableName, Family: nftables.TableFamilyIPv6},
	}
	var pending elementRun
	// Sized for the largest element (ip6 hairpin, or an ip6 slot with its endpoint).
	enc := elementEncoder{buf: make([]byte, 0, 32*len(ops))}
	for _, o := range ops {
		if _, ok := o.obj.(*knftables.Element); !ok {
			if err := pending.flush(conn); err != nil {
				return err
			}
		}
		switch obj := o.obj.(type) {
		case *knftables.Chain:
			if obj.Hook != nil || obj.Type != nil {
				return fmt.Errorf("base chain %s: %w", obj.Name, errNotNetlink)
			}
			c := &nftables.Chain{Name: obj.Name, Table: tables[obj.Family]}
			switch o.verb {
			case verbAdd:
				conn.AddChain(c)
			case verbFlush:
				conn.FlushChain(c)
			case verbDelete:
				conn.DelChain(c)
			}
		case *knftables.Rule:
			if o.verb != verbAdd {
				return fmt.Errorf("rule %s: %w", o.verb.String(), errNotNetlink)
			}
			exprs, err := ruleExprs(obj.Family, obj.Rule)
			if err != nil {
				return err
			}
			if err := bindTransportProtocols(conn, tables[obj.Family], exprs); err != nil {
				return err
			}
			conn.AddRule(&nftables.Rule{Table: tables[obj.Family], Chain: &nftables.Chain{Name: obj.Chain, Table: tables[obj.Family]}, Exprs: exprs})
		case *knftables.Element:
			name := obj.Set + obj.Map
			el, ok := enc.encode(name, obj.Key, obj.Value)
			if !ok {
				return errBadElement{name, obj.Key}
			}
			if pending.verb != o.verb || pending.family != obj.Family || pending.set != name ||
				len(pending.els) == maxElementsPerMessage || pending.bytes > maxElementListBytes {
				if err := pending.flush(conn); err != nil {
					return err
				}
				pending = elementRun{verb: o.verb, family: obj.Family, set: name,
					nft: &nftables.Set{Table: tables[obj.Family], Name: name, IsMap: obj.Map != ""}}
			}
			pending.els = append(pending.els, el)
			// What the element adds to the message's list attribute (see maxElementListBytes):
			// headers, key, data and a verdict's chain name, each padded.
			pending.bytes += 32 + len(el.Key) + len(el.Val)
			if el.VerdictData != nil {
				pending.bytes += len(el.VerdictData.Chain) + 4
			}
			continue
		case *knftables.Set:
			// Only deletes (a Service leaving the chain path drops its affinity sets): adding one
			// needs its type, flags and timeout.
			if o.verb != verbDelete {
				return fmt.Errorf("set %s: %w", obj.Name, errNotNetlink)
			}
			conn.DelSet(&nftables.Set{Table: tables[obj.Family], Name: obj.Name})
		default:
			return fmt.Errorf("%T: %w", o.obj, errNotNetlink)
		}
	}
	return pending.flush(conn)
}

// maxElementsPerMessage bounds one element message, as nft does, well under what a netlink message
// may carry (the largest element here is 44 bytes of key and data plus attribute headers).
const maxElementsPerMessage = 1024

// elementRun collects consecutive element ops of one verb and set into one message: a message per
// element costs the kernel a set lookup and the library a buffer each, which at a full table's
// 150k elements is most of the time.
type elementRun struct {
	verb   verb
	family knftables.Family
	set    string
	nft    *nftables.Set
	els    []nftables.SetElement
	bytes  int // an upper bound of their encoded size
}

func (r *elementRun) flush(conn netlinkConn) error {
	if len(r.els) == 0 {
		return nil
	}
	var err error
	if r.verb == verbAdd {
		err = conn.SetAddElements(r.nft, r.els)
	} else {
		err = conn.SetDeleteElements(r.nft, r.els)
	}
	r.els, r.bytes = nil, 0
	if err != nil {
		return fmt.Errorf("elements of %s: %w", r.set, err)
	}
	return nil
}

type errBadElement struct {
	set string
	key []string
}

func (e errBadElement) Error() string {
	return fmt.Sprintf("element %v of %s: %v", e.key, e.set, errNotNetlink)
}

func (e errBadElement) Unwrap() error { return errNotNetlink }

func (v verb) String() string {
	return [...]string{"add", "flush", "delete"}[v]
}

// ruleExprs translates the rules a Service's chains hold (see service.go) into nft's bytecode.
func ruleExprs(fam knftables.Family, rule string) ([]expr.Any, error) {
	f := strings.Fields(rule)
	if out, ok := pickExprs(fam, f); ok {
		return out, nil
	}
	var out []expr.Any
	// numgen random mod K == 0 ...
	if len(f) > 5 && f[0] == "numgen" && f[1] == "random" && f[2] == "mod" && f[4] == "==" && f[5] == "0" {
		k, err := strconv.ParseUint(f[3], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("rule %q: %w", rule, errNotNetlink)
		}
		out = append(out,
			&expr.Numgen{Register: 1, Modulus: uint32(k), Type: unix.NFT_NG_RANDOM},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}})
		f = f[6:]
	}
	ip := "ip"
	saddr := expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	natFamily := uint32(unix.NFPROTO_IPV4)
	if fam == knftables.IPv6Family {
		ip, saddr.Offset, saddr.Len, natFamily = "ip6", 8, 16, unix.NFPROTO_IPV6
	}
	switch {
	case len(f) == 1 && f[0] == "drop":
		return append(out, &expr.Verdict{Kind: expr.VerdictDrop}), nil
	case len(f) == 2 && (f[0] == "goto" || f[0] == "jump"):
		return append(out, verdictExpr(f[0], f[1])), nil
	case len(f) == 5 && f[0] == ip && f[1] == "saddr" && f[2] == "@"+setPodCIDRs && (f[3] == "goto" || f[3] == "jump"):
		return append(out, &saddr, &expr.Lookup{SourceRegister: 1, SetName: setPodCIDRs}, verdictExpr(f[3], f[4])), nil
	case len(f) == 6 && f[0] == "fib" && f[1] == "saddr" && f[2] == "type" && f[3] == "local" && (f[4] == "goto" || f[4] == "jump"):
		return append(out,
			&expr.Fib{Register: 1, FlagSADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
			verdictExpr(f[4], f[5])), nil
	case len(f) == 6 && f[0] == "meta" && f[1] == "l4proto" && f[3] == "dnat" && f[4] == "to":
		proto, ok := protoNumber(f[2])
		ap, err := netip.ParseAddrPort(f[5])
		if !ok || err != nil {
			return nil, fmt.Errorf("rule %q: %w", rule, errNotNetlink)
		}
		return append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
			&expr.Immediate{Register: 1, Data: ap.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, ap.Port())},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true}), nil
	}
	return nil, fmt.Errorf("rule %q: %w", rule, errNotNetlink)
}

// transportProtocols stands, in ruleExprs' output, for the anonymous set { tcp, udp, sctp } that
// queueNetlink creates in the same batch (an anonymous set lives only with its rule).
const transportProtocols = "{ tcp, udp, sctp }"

func bindTransportProtocols(conn netlinkConn, table *nftables.Table, exprs []expr.Any) error {
	for _, e := range exprs {
		l, ok := e.(*expr.Lookup)
		if !ok || l.SetName != transportProtocols {
			continue
		}
		set := &nftables.Set{Table: table, Anonymous: true, Constant: true, KeyType: nftables.TypeInetProto}
		var els []nftables.SetElement
		for _, p := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP} {
			els = append(els, nftables.SetElement{Key: []byte{p}})
		}
		if err := conn.AddSet(set, els); err != nil {
			return fmt.Errorf("adding the transport protocol set: %w", err)
		}
		l.SetName, l.SetID = set.Name, set.ID
	}
	return nil
}

// pickExprs translates a fast-path pick chain's rule (pick.rule): the address (unless a NodePort),
// protocol, port and a random slot concatenated as nft lays them out (each field from a 4-byte
// boundary, a field that starts a 16-byte register named by it), looked up in the endpoint map for
// the address and port to DNAT to.
func pickExprs(fam knftables.Family, f []string) ([]expr.Any, bool) {
	// meta l4proto { tcp, udp, sctp } dnat ip to [ip daddr .] meta l4proto . th dport . numgen random mod N map @m
	if len(f) < 22 || strings.Join(f[:8], " ") != "meta l4proto { tcp, udp, sctp } dnat" || f[9] != "to" {
		return nil, false
	}
	rest := f[10:]
	ip, addrLen, addrOffset := "ip", uint32(4), uint32(16)
	natFamily := uint32(unix.NFPROTO_IPV4)
	if fam == knftables.IPv6Family {
		ip, addrLen, addrOffset, natFamily = "ip6", 16, 24, unix.NFPROTO_IPV6
	}
	if f[8] != ip {
		return nil, false
	}
	reg := func(off uint32) uint32 {
		if off%16 == 0 {
			return 1 + off/16
		}
		return 8 + off/4
	}
	out := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: transportProtocols},
	}
	off := uint32(0)
	wantMap := mapNodePortEndpoints
	if len(rest) == 15 && rest[0] == ip && rest[1] == "daddr" && rest[2] == "." {
		out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: addrOffset, Len: addrLen})
		off, rest, wantMap = addrLen, rest[3:], mapFrontendEndpoints
	}
	if len(rest) != 12 || strings.Join(rest[:9], " ") != "meta l4proto . th dport . numgen random mod" || rest[10] != "map" || rest[11] != "@"+wantMap {
		return nil, false
	}
	n, err := strconv.ParseUint(rest[9], 10, 32)
	if err != nil || n == 0 {
		return nil, false
	}
	out = append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg(off)},
		&expr.Payload{DestRegister: reg(off + 4), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Numgen{Register: reg(off + 8), Modulus: uint32(n), Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: 1, SetName: wantMap, DestRegister: 1, IsDestRegSet: true},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: reg(addrLen), RegProtoMax: reg(addrLen), Specified: true})
	return out, true
}

func verdictExpr(kind, chain string) *expr.Verdict {
	if kind == "jump" {
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}
	}
	return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}
}

func protoNumber(name string) (byte, bool) {
	switch name {
	case "tcp":
		return unix.IPPROTO_TCP, true
	case "udp":
		return unix.IPPROTO_UDP, true
	case "sctp":
		return unix.IPPROTO_SCTP, true
	}
	return 0, false
}

// elementBytes encodes an element of one of the shared sets and maps as the kernel stores it: each
// field of a concatenation padded to 4 bytes, addresses and ports in network order.
func elementBytes(set string, key, value []string) (nftables.SetElement, error) {
	var enc elementEncoder
	el, ok := enc.encode(set, key, value)
	if !ok {
		return el, errBadElement{set, slices.Clone(key)}
	}
	return el, nil
}

// elementEncoder encodes elements into one growing arena, each element's key and data a capped
// slice of it: a cold start encodes 150k elements, and a few allocations per element (then their
// collection) were a large part of its time. Verdicts are shared per chain.
type elementEncoder struct {
	buf      []byte
	verdicts map[string]*expr.Verdict
}

// bytes returns what was appended to the arena since start, capped so that later appends cannot
// overwrite it (an append that moves the arena leaves earlier slices on the old array, still valid).
func (e *elementEncoder) bytes(start int) []byte {
	return e.buf[start:len(e.buf):len(e.buf)]
}

func (e *elementEncoder) addr(s string) bool {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return false
	}
	if a.Is4() {
		b := a.As4()
		e.buf = append(e.buf, b[:]...)
	} else {
		b := a.As16()
		e.buf = append(e.buf, b[:]...)
	}
	return true
}

func (e *elementEncoder) protoPort(proto, port string) bool {
	p, ok := protoNumber(proto)
	n, err := strconv.ParseUint(port, 10, 16)
	if !ok || err != nil {
		return false
	}
	e.buf = append(e.buf, p, 0, 0, 0, byte(n>>8), byte(n), 0, 0)
	return true
}

func (e *elementEncoder) slot(s string) bool {
	n, err := strconv.ParseUint(s, 10, 32)
	e.buf = binary.NativeEndian.AppendUint32(e.buf, uint32(n))
	return err == nil
}

// encode is elementBytes without the error (which would make key escape for every element).
func (e *elementEncoder) encode(set string, key, value []string) (el nftables.SetElement, ok bool) {
	start := len(e.buf)
	if !e.key(set, key) {
		return el, false
	}
	el.Key = e.bytes(start)
	switch {
	case len(value) == 0:
	case isEndpoint(set, value):
		start = len(e.buf)
		if !e.endpoint(value) {
			return el, false
		}
		el.Val = e.bytes(start)
	default:
		if el.VerdictData, ok = e.verdict(value); !ok {
			return el, false
		}
	}
	return el, true
}

// key appends the key of an element of set to the arena.
func (e *elementEncoder) key(set string, key []string) bool {
	switch {
	case set == mapFrontendEndpoints && len(key) == 4:
		return e.addr(key[0]) && e.protoPort(key[1], key[2]) && e.slot(key[3])
	case set == mapNodePortEndpoints && len(key) == 3:
		return e.protoPort(key[0], key[1]) && e.slot(key[2])
	case (set == mapServiceIPs || set == mapNoEndpointIPs || set == setExternalMasq) && len(key) == 3:
		return e.addr(key[0]) && e.protoPort(key[1], key[2])
	case (set == mapServiceNodePorts || set == mapNoEndpointPorts || set == setNodePortMasq) && len(key) == 2:
		return e.protoPort(key[0], key[1])
	case set == setClusterIPs && len(key) == 1:
		return e.addr(key[0])
	case set == setHairpin && len(key) == 2:
		return e.addr(key[0]) && e.addr(key[1])
	}
	return false
}

// isEndpoint reports whether value is an endpoint slot's data rather than a verdict.
func isEndpoint(set string, value []string) bool {
	return len(value) == 2 && (set == mapFrontendEndpoints || set == mapNodePortEndpoints)
}

// endpoint appends an endpoint slot's data, address . port, the port padded to 4 bytes.
func (e *elementEncoder) endpoint(value []string) bool {
	n, err := strconv.ParseUint(value[1], 10, 16)
	if err != nil || !e.addr(value[0]) {
		return false
	}
	e.buf = append(e.buf, byte(n>>8), byte(n), 0, 0)
	return true
}

// verdict returns a verdict map element's data, one per distinct value.
func (e *elementEncoder) verdict(value []string) (*expr.Verdict, bool) {
	if len(value) != 1 {
		return nil, false
	}
	if v := e.verdicts[value[0]]; v != nil {
		return v, true
	}
	v := &expr.Verdict{Kind: expr.VerdictDrop}
	if value[0] != "drop" {
		kind, chain, _ := strings.Cut(value[0], " ")
		if kind != "goto" && kind != "jump" || chain == "" {
			return nil, false
		}
		v = verdictExpr(kind, chain)
	}
	if e.verdicts == nil {
		e.verdicts = map[string]*expr.Verdict{}
	}
	e.verdicts[value[0]] = v
	return v, true
}

// listWithNetlink names the chains, sets and maps of both tables, as listKernelTables does through
// nft, which in nft 1.0.6 reads every element of the table even for a terse listing: about 2 s of CPU
// at 10k Services, half of a full sync over existing tables. A table that does not exist is left out.
func listWithNetlink() (map[knftables.Family]existingObjects, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	out := map[knftables.Family]existingObjects{}
	for _, f := range []struct {
		nft knftables.Family
		nl  nftables.TableFamily
	}{{knftables.IPv4Family, nftables.TableFamilyIPv4}, {knftables.IPv6Family, nftables.TableFamilyIPv6}} {
		tables, err := conn.ListTablesOfFamily(f.nl)
		if err != nil {
			return nil, fmt.Errorf("listing %s tables: %w", f.nft, err)
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == TableName }) {
			continue
		}
		chains, err := conn.ListChainsOfTableFamily(f.nl)
		if err != nil {
			return nil, fmt.Errorf("listing %s chains: %w", f.nft, err)
		}
		var objs existingObjects
		for _, c := range chains {
			if c.Table != nil && c.Table.Name == TableName {
				objs.Chains = append(objs.Chains, c.Name)
			}
		}
		sets, err := conn.GetSets(&nftables.Table{Name: TableName, Family: f.nl})
		if err != nil {
			return nil, fmt.Errorf("listing the sets of table %s %s: %w", f.nft, TableName, err)
		}
		for _, s := range sets {
			switch {
			case s.Anonymous:
			case s.IsMap:
				objs.Maps = append(objs.Maps, s.Name)
			default:
				objs.Sets = append(objs.Sets, s.Name)
			}
		}
		slices.Sort(objs.Chains)
		slices.Sort(objs.Sets)
		slices.Sort(objs.Maps)
		out[f.nft] = objs
	}
	return out, nil
}
