package nodeport

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/knftables"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/testutil"
)

// scratchNetns returns a fresh, empty network namespace deleted when t ends.
func scratchNetns(t *testing.T, suffix string) netns.NsHandle {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "nft")
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", t.Name(), os.Getpid())
	name := fmt.Sprintf("np%07x%s", h.Sum32()&0xfffffff, suffix)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// kernelDump lists both tables as nft reads them back from the kernel, in an order that does not
// depend on insertion: one line per rule and per element, sorted, each prefixed by its object.
func kernelDump(t *testing.T, ns netns.NsHandle) string {
	t.Helper()
	var out []string
	for _, f := range families {
		cmd := exec.Command("nft", "list", "table", string(f.nft), TableName)
		var text []byte
		var err error
		in(t, ns, func() { text, err = cmd.Output() })
		if err != nil {
			t.Fatalf("nft list table: %v", err)
		}
		// Elements span lines; put each on its own.
		flat := elementsRE.ReplaceAllStringFunc(string(text), func(m string) string {
			items := strings.Split(strings.TrimSuffix(strings.TrimPrefix(elementsRE.FindStringSubmatch(m)[1], ""), ""), ",")
			var lines []string
			for _, it := range items {
				lines = append(lines, "element "+strings.Join(strings.Fields(it), " "))
			}
			return strings.Join(lines, "\n")
		})
		object := ""
		for _, line := range strings.Split(flat, "\n") {
			line = strings.TrimSpace(line)
			switch {
			case line == "" || line == "}" || strings.HasPrefix(line, "table "):
			case strings.HasSuffix(line, "{"):
				object = string(f.nft) + " " + strings.TrimSuffix(line, " {")
			default:
				out = append(out, object+": "+line)
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

var elementsRE = regexp.MustCompile(`elements = \{([^}]*)\}`)

// TestKernelNetlinkPartialSyncMatchesNFT programs a cold start (coldStart) and then a series of
// ordinary changes through netlink batches, and checks after each that the kernel holds exactly what a full sync through nft of the
// same state writes in a fresh namespace, as nft lists it: the hand-assembled bytecode is nft's.
func TestKernelNetlinkPartialSyncMatchesNFT(t *testing.T) {
	live := scratchNetns(t, "l")
	w := representative()
	steps := []struct {
		name   string
		change func(w *world)
	}{
		{"endpoint removed", func(w *world) { w.slices[0] = slice("web", "web-1", nil, ep("198.18.1.10", nodeA)) }},
		{"endpoints added", func(w *world) {
			w.slices[0] = slice("web", "web-1", nil, ep("198.18.1.10", nodeA), ep("198.18.1.11", nodeA), ep("198.18.2.12", nodeB))
		}},
		{"service added", func(w *world) { w.services = append(w.services, svc("new", "198.19.0.99", nodePort(30099))) }},
		{"new service gets endpoints", func(w *world) { w.slices = append(w.slices, twoNodeSlice("new")) }},
		{"udp and sctp ports", func(w *world) {
			w.services = append(w.services, svc("multi", "198.19.0.98", func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "sig", Port: 9, Protocol: corev1.ProtocolSCTP}}
			}))
			w.slices = append(w.slices, slice("multi", "multi-1", []discoveryv1.EndpointPort{port("dns", corev1.ProtocolUDP, 5353), port("sig", corev1.ProtocolSCTP, 9999)},
				ep("198.18.1.20", nodeA), ep("198.18.2.20", nodeB)))
		}},
		{"etp back to cluster", func(w *world) {
			w.services[1] = w.services[1].DeepCopy()
			w.services[1].Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
		}},
		{"internal traffic policy local loses its local endpoint", func(w *world) {
			w.slices[3] = slice("internal", "internal-1", nil, ep("198.18.2.10", nodeB))
		}},
		{"second ipv6 endpoint", func(w *world) {
			w.slices[5] = slice("dns", "dns-2", []discoveryv1.EndpointPort{port("http", corev1.ProtocolUDP, 5353)},
				ep("2001:db8:1:1::15", nodeA), ep("2001:db8:1:2::15", nodeB))
		}},
		{"sticky service loses its affinity", func(w *world) {
			w.services[2] = w.services[2].DeepCopy()
			w.services[2].Spec.SessionAffinity = corev1.ServiceAffinityNone
		}},
		{"service deleted", func(w *world) { w.services = slices.Delete(w.services, 0, 1) }},
	}
	ctx := context.Background()
	bl := NewBuilder()
	var k *kernelState
	// The first step is the cold start itself: nft for the rules, one netlink batch for the elements.
	for i, step := range slices.Insert(steps, 0, steps[0]) {
		var err error
		if i == 0 {
			step.name = "cold start"
			d := bl.Build(w.snapshot(), testOpts)
			in(t, live, func() {
				var nft knftables.Interface
				if nft, err = knftables.New("", ""); err != nil {
					return
				}
				tx := nft.NewTransaction()
				tables := coldStart(tx, d)
				var send func() error
				if k, send, _, err = prepareColdStart(d, tables); err != nil {
					return
				}
				if err = nft.Run(ctx, tx); err == nil {
					err = send()
				}
			})
		} else {
			step.change(w)
			ops := k.diff(bl.Build(w.snapshot(), testOpts))
			in(t, live, func() { err = applyWithNetlink(ops) })
		}
		if errors.Is(err, errNotNetlink) {
			t.Fatalf("%s: not expressible over netlink: %v", step.name, err)
		}
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		fresh := scratchNetns(t, fmt.Sprintf("f%d", i))
		in(t, fresh, func() {
			nft, err := knftables.New("", "")
			if err != nil {
				t.Fatal(err)
			}
			tx := nft.NewTransaction()
			fullTransaction(tx, Build(w.snapshot(), testOpts), nil)
			if err := nft.Run(ctx, tx); err != nil {
				t.Fatal(err)
			}
		})
		if diff := lineDiff(kernelDump(t, live), kernelDump(t, fresh)); diff != "" {
			t.Fatalf("%s: netlink partial sync differs from nft full sync (- netlink, + nft):\n%s", step.name, diff)
		}
	}
}

// TestNetlinkRefusesWhatItCannotTranslate checks that the shapes left to nft are refused before
// anything is sent, so the caller falls back instead of programming something else.
func TestNetlinkRefusesWhatItCannotTranslate(t *testing.T) {
	for _, rule := range []string{
		"ip saddr 192.0.2.0/24 goto ext-x",
		"update @aff-x { ip saddr }",
		"ip saddr @aff-x goto ep-x",
		"meta l4proto tcp dnat ip to numgen random mod 2 map { 0 : 198.18.1.10 . 8080, 1 : 198.18.2.10 . 8080 }",
		"jump services extra",
	} {
		if _, err := ruleExprs(knftables.IPv4Family, rule); !errors.Is(err, errNotNetlink) {
			t.Errorf("%q: got %v, want errNotNetlink", rule, err)
		}
	}
	if _, err := elementBytes(setPodCIDRs, []string{"198.18.0.0/16"}, nil); !errors.Is(err, errNotNetlink) {
		t.Errorf("pod-cidrs element: got %v, want errNotNetlink", err)
	}
}

// TestKernelListWithNetlink checks that the netlink listing a full sync starts from names what nft
// wrote, leftovers of an earlier run included, and leaves out a table that does not exist.
func TestKernelListWithNetlink(t *testing.T) {
	ns := scratchNetns(t, "l")
	d := Build(representative().snapshot(), testOpts)
	var err error
	var got map[knftables.Family]existingObjects
	in(t, ns, func() {
		if got, err = listWithNetlink(); err != nil || len(got) != 0 {
			return
		}
		var nft knftables.Interface
		if nft, err = knftables.New("", ""); err != nil {
			return
		}
		tx := nft.NewTransaction()
		fullTransaction(tx, d, nil)
		tx.Add(&knftables.Chain{Family: knftables.IPv4Family, Table: TableName, Name: "svc-OLD"})
		tx.Add(&knftables.Set{Family: knftables.IPv4Family, Table: TableName, Name: "aff-OLD", Type: "ipv4_addr"})
		tx.Add(&knftables.Map{Family: knftables.IPv4Family, Table: TableName, Name: "map-OLD", Type: "ipv4_addr : verdict"})
		if err = nft.Run(context.Background(), tx); err != nil {
			return
		}
		got, err = listWithNetlink()
	})
	if err != nil || len(got) != 2 {
		t.Fatalf("got %v, %v; want both tables listed (and none before the sync)", got, err)
	}
	for i, tbl := range d.Tables() {
		want := existingObjects{Chains: sortedKeys(tbl.Chains), Sets: sortedKeys(tbl.Sets), Maps: sortedKeys(tbl.Maps)}
		if i == 0 {
			want.Chains = slices.Sorted(slices.Values(append(want.Chains, "svc-OLD")))
			want.Sets = slices.Sorted(slices.Values(append(want.Sets, "aff-OLD")))
			want.Maps = slices.Sorted(slices.Values(append(want.Maps, "map-OLD")))
		}
		if g := got[tbl.Family]; !slices.Equal(g.Chains, want.Chains) || !slices.Equal(g.Sets, want.Sets) || !slices.Equal(g.Maps, want.Maps) {
			t.Errorf("%s: listed %+v; want %+v", tbl.Family, g, want)
		}
	}
}

// TestKernelSetElemBatchReportsErrors checks that a cold start's hand-written element batch fails
// when the kernel refuses it (here: a set that does not exist) rather than waiting or passing.
func TestKernelSetElemBatchReportsErrors(t *testing.T) {
	ns := scratchNetns(t, "e")
	batch := setElemBatch{family: nftables.TableFamilyIPv4, set: setClusterIPs}
	if !batch.element(&elementEncoder{}, []string{"198.19.0.1"}, nil) {
		t.Fatal("cannot encode a cluster-ips element")
	}
	batch.finish()
	var err error
	in(t, ns, func() { err = sendBatch(batch.msgs) })
	if err == nil {
		t.Fatal("adding an element to a table that does not exist: no error")
	}
}

// TestSetElemBatchSplitsLongLists checks that ip6 slot elements, too large for a thousand to fit
// one netlink attribute, are spread over messages whose attributes all decode, none lost.
func TestSetElemBatchSplitsLongLists(t *testing.T) {
	w := setElemBatch{family: nftables.TableFamilyIPv6, set: mapFrontendEndpoints}
	var enc elementEncoder
	const n = 3000
	for i := range n {
		key := []string{"2001:db8::1", "tcp", "80", strconv.Itoa(i)}
		if !w.element(&enc, key, []string{fmt.Sprintf("2001:db8:1::%x", i), "8080"}) {
			t.Fatalf("cannot encode %v", key)
		}
	}
	w.finish()
	got := 0
	for _, m := range w.msgs {
		attrs, err := netlink.UnmarshalAttributes(m.Data[4:])
		if err != nil {
			t.Fatalf("message of %d bytes: %v", len(m.Data), err)
		}
		for _, a := range attrs {
			if a.Type&^unix.NLA_F_NESTED != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			els, err := netlink.UnmarshalAttributes(a.Data)
			if err != nil {
				t.Fatalf("element list: %v", err)
			}
			got += len(els)
		}
	}
	if got != n {
		t.Errorf("the messages hold %d elements, want %d", got, n)
	}
}

// elementCounter is a netlinkConn that records the element messages queueNetlink makes.
type elementCounter struct {
	netlinkConn
	sizes []int // per message, an upper bound of its element list's encoded size
	total int
}

func (c *elementCounter) SetAddElements(_ *nftables.Set, els []nftables.SetElement) error {
	size := 0
	for _, el := range els {
		size += 20 + len(el.Key) + len(el.Val)
	}
	c.sizes = append(c.sizes, size)
	c.total += len(els)
	return nil
}

// TestQueueNetlinkSplitsLongLists is TestSetElemBatchSplitsLongLists for partial syncs.
func TestQueueNetlinkSplitsLongLists(t *testing.T) {
	var ops []op
	const n = 3000
	for i := range n {
		ops = append(ops, op{verbAdd, &knftables.Element{Family: knftables.IPv6Family, Table: TableName, Map: mapFrontendEndpoints,
			Key: []string{"2001:db8::1", "tcp", "80", strconv.Itoa(i)}, Value: []string{fmt.Sprintf("2001:db8:1::%x", i), "8080"}}})
	}
	var c elementCounter
	if err := queueNetlink(&c, ops); err != nil {
		t.Fatal(err)
	}
	if c.total != n {
		t.Errorf("queued %d elements, want %d", c.total, n)
	}
	for _, s := range c.sizes {
		if s > 65535 {
			t.Errorf("an element message's list takes %d bytes, more than an attribute holds", s)
		}
	}
}

// TestKernelColdStartOfManyServices programs 30k Services x 10 endpoints from a cold start: the batch
// of about 400k elements is acknowledged message by message, more acknowledgements than a default
// receive buffer holds, which once failed the sync with ENOBUFS although the kernel applied it.
func TestKernelColdStartOfManyServices(t *testing.T) {
	if testing.Short() {
		t.Skip("programs 30k Services (a few seconds); skipped with -short")
	}
	ns := scratchNetns(t, "m")
	const n = 30000
	w := scaleWorld(n)
	var p *Proxy
	var err error
	in(t, ns, func() { p, err = New(Config{MasqueradeBit: 14, HealthzTimeout: time.Minute}, cluster.Deps{}) })
	if err != nil {
		t.Fatal(err)
	}
	p.Update(w.builder().Build(1, time.Now()))
	in(t, ns, func() { err = p.sync(context.Background()) })
	if err != nil {
		t.Fatalf("cold start of %d Services: %v", n, err)
	}
	var out []byte
	in(t, ns, func() { out, err = exec.Command("nft", "list", "map", "ip", TableName, "frontend-endpoints").Output() })
	if err != nil {
		t.Fatal(err)
	}
	// Each Service has one ClusterIP frontend with a slot per endpoint.
	_, elements, _ := strings.Cut(string(out), "elements = {")
	if got, want := strings.Count(elements, " : "), n*10; got != want {
		t.Errorf("frontend-endpoints holds %d elements after the cold start, want %d", got, want)
	}
}
