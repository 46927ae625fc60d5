package lab

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/baregate/baregate/internal/lab/echo"
	"github.com/baregate/baregate/internal/lab/kubelet"
)

// ZoneLabel is the topology label the lab kubelets put on their nodes: nodes alternate between two zones
// so topology-aware features have something to work with.
const ZoneLabel = "topology.kubernetes.io/zone"

// PodNetnsPrefix starts the names of the namespaces of lab id's pods.
func PodNetnsPrefix(id string) string { return netnsName(id, "pod-") }

// kubeletConfig is node i's lab kubelet configuration.
func (l *Lab) kubeletConfig(i int) kubelet.Config {
	p4, p6 := PodCIDRs(i)
	v4, v6 := NodeIPs(i)
	return kubelet.Config{
		NodeName:    NodeName(i),
		Netns:       l.NodeNetns(i),
		PodBridge:   PodBridge,
		PodCIDRs:    []netip.Prefix{netip.MustParsePrefix(p4), netip.MustParsePrefix(p6)},
		NodeIPs:     []netip.Addr{netip.MustParseAddr(v4), netip.MustParseAddr(v6)},
		Zone:        fmt.Sprintf("zone-%c", 'a'+(i-1)%2),
		Client:      l.client,
		Self:        l.o.Self,
		StateDir:    filepath.Join(l.o.Dir, "kubelet", NodeName(i)),
		NetnsPrefix: PodNetnsPrefix(l.o.ID),
		ProgramFor:  programFor(echo.ProgramFor),
	}
}

// startKubelets runs a lab kubelet per node and the binder until runCtx ends, and waits for every node
// to be registered and Ready.
func (l *Lab) startKubelets(ctx, runCtx context.Context) error {
	var nodes []string
	for i := 1; i <= l.o.Nodes; i++ {
		cfg := l.kubeletConfig(i)
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("kubelet of %s: %w", cfg.NodeName, err)
		}
		nodes = append(nodes, cfg.NodeName)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := kubelet.Run(runCtx, cfg); err != nil && runCtx.Err() == nil {
				l.setErr(fmt.Errorf("kubelet of %s: %w", cfg.NodeName, err))
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := kubelet.RunBinder(runCtx, l.client, nodes); err != nil && runCtx.Err() == nil {
			l.setErr(fmt.Errorf("pod binder: %w", err))
		}
	}()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := l.Err(); err != nil {
			return false, err
		}
		for _, name := range nodes {
			n, err := l.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil || !NodeReady(n) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the lab's nodes to be Ready: %w", err)
	}
	return nil
}

// NodeReady reports whether the Node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
