package lab

import (
	"context"
	"fmt"
	"hash/fnv"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/testutil"
)

// testLabID is unique per test and process, so parallel packages and reruns never share namespaces.
func testLabID(t *testing.T) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", t.Name(), os.Getpid())
	return fmt.Sprintf("t%08x", h.Sum32())
}

func TestNetworkConnectsHostsAndStaysInside(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip", "ping")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := network{id: testLabID(t), nodes: 2, clients: 1}
	t.Cleanup(func() {
		if err := Cleanup(context.Background(), n.id); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
		if left, _ := LabNetns(context.Background(), n.id); len(left) > 0 {
			t.Errorf("namespaces left after Cleanup: %v", left)
		}
	})
	if err := n.up(ctx); err != nil {
		t.Fatalf("network up: %v", err)
	}
	node1v4, node1v6 := NodeIPs(1)
	_, node2v6 := NodeIPs(2)
	gw2v4, gw2v6 := PodGateways(2)
	reach := []struct{ from, to string }{
		{ClientName(1), node1v4},
		{ClientName(1), node1v6},
		{NodeName(2), ControlPlaneIP},
		{NodeName(1), node2v6},
		// Through node1's route for node2's pod range to the address node2 holds on its pod bridge.
		{NodeName(1), gw2v4},
		{NodeName(1), gw2v6},
		{"cp", gw2v4},
	}
	for _, r := range reach {
		if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns(r.from), "ping", "-c1", "-W2", r.to).CombinedOutput(); err != nil {
			t.Errorf("%s cannot ping %s: %v\n%s", r.from, r.to, err, out)
		}
	}
	// No host has a route out of the lab.
	for _, h := range n.hosts() {
		for _, dst := range []string{"8.8.8.8", "2001:4860:4860::8888"} {
			out, err := exec.CommandContext(ctx, "ip", "-n", n.ns(h), "route", "get", dst).CombinedOutput()
			if err == nil {
				t.Errorf("%s has a route to %s: %s", h, dst, strings.TrimSpace(string(out)))
			}
		}
	}

	if err := n.setLink(ctx, NodeName(1), false); err != nil {
		t.Fatal(err)
	}
	if err := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns(ClientName(1)), "ping", "-c1", "-W1", node1v4).Run(); err == nil {
		t.Error("a client still reaches node1 after its cable was cut")
	}
	if err := n.setLink(ctx, NodeName(1), true); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns(ClientName(1)), "ping", "-c1", "-W2", node1v4).CombinedOutput(); err != nil {
		t.Errorf("a client does not reach node1 after its cable was restored: %v\n%s", err, out)
	}
}

// TestPodBridgeKeepsItsMAC: the pod bridge's MAC must not follow its ports, or pods' cached gateway
// neighbour goes stale whenever another pod's veth comes or goes.
func TestPodBridgeKeepsItsMAC(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	testutil.RequireTool(t, "ip")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := network{id: testLabID(t), nodes: 1}
	t.Cleanup(func() { Cleanup(context.Background(), n.id) })
	if err := n.up(ctx); err != nil {
		t.Fatal(err)
	}
	ns := n.ns(NodeName(1))
	mac := func() string {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-br", "link", "show", PodBridge).Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(out))[2]
	}
	before := mac()
	// A port with a MAC lower than any a bridge would pick, as a new pod's veth may have.
	for _, s := range [][]string{
		{"link", "add", "vtest", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "vtestp"},
		{"link", "set", "vtest", "master", PodBridge, "up"},
	} {
		if err := ipCmd(ctx, ns, s...); err != nil {
			t.Fatal(err)
		}
	}
	if after := mac(); after != before {
		t.Errorf("the pod bridge's MAC changed from %s to %s when a port was added", before, after)
	}
}
