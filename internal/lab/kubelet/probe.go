package kubelet

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeTracker turns probe outcomes into a readiness verdict with a probe's thresholds, as the
// kubelet does: ready after successThreshold successes in a row, not ready after failureThreshold
// failures in a row, not ready until the first verdict.
type probeTracker struct {
	successThreshold, failureThreshold int32
	successes, failures                int32
	ready                              bool
}

func newProbeTracker(p *corev1.Probe) *probeTracker {
	return &probeTracker{successThreshold: max(p.SuccessThreshold, 1), failureThreshold: max(p.FailureThreshold, 1)}
}

// observe records one outcome and reports whether the verdict changed.
func (t *probeTracker) observe(ok bool) bool {
	before := t.ready
	if ok {
		t.failures = 0
		t.successes++
		if t.successes >= t.successThreshold {
			t.ready = true
		}
	} else {
		t.successes = 0
		t.failures++
		if t.failures >= t.failureThreshold {
			t.ready = false
		}
	}
	return t.ready != before
}

// probeTiming is when a probe first runs, how often, and how long one attempt may take, with the
// Kubernetes defaults for unset fields.
func probeTiming(p *corev1.Probe) (initial, period, timeout time.Duration) {
	initial = time.Duration(p.InitialDelaySeconds) * time.Second
	period = 10 * time.Second
	if p.PeriodSeconds > 0 {
		period = time.Duration(p.PeriodSeconds) * time.Second
	}
	timeout = time.Second
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	return initial, period, timeout
}

// dialFunc opens connections from the node's network namespace, where a kubelet probes from.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// probeOnce runs one attempt of p against a container whose pod has address podIP; nil means success.
func probeOnce(ctx context.Context, dial dialFunc, p *corev1.Probe, c *corev1.Container, podIP netip.Addr) error {
	switch {
	case p.HTTPGet != nil:
		return probeHTTP(ctx, dial, p.HTTPGet, c, podIP)
	case p.TCPSocket != nil:
		addr, err := probeAddr(p.TCPSocket.Host, p.TCPSocket.Port, c, podIP)
		if err != nil {
			return err
		}
		conn, err := dial(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	case p.GRPC != nil:
		return probeGRPC(ctx, dial, p.GRPC, podIP)
	}
	// Exec probes would run a command of an image the lab does not have; they pass.
	return nil
}

func probeHTTP(ctx context.Context, dial dialFunc, g *corev1.HTTPGetAction, c *corev1.Container, podIP netip.Addr) error {
	addr, err := probeAddr(g.Host, g.Port, c, podIP)
	if err != nil {
		return err
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+g.Path, nil)
	if err != nil {
		return fmt.Errorf("building probe request: %w", err)
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	for _, h := range g.HTTPHeaders {
		if http.CanonicalHeaderKey(h.Name) == "Host" {
			req.Host = h.Value
		} else {
			req.Header.Add(h.Name, h.Value)
		}
	}
	tr := &http.Transport{
		DialContext:       dial,
		DisableKeepAlives: true,
		// The kubelet does not verify a container's certificate either.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe answered %d", resp.StatusCode)
	}
	return nil
}

func probeGRPC(ctx context.Context, dial dialFunc, g *corev1.GRPCAction, podIP netip.Addr) error {
	addr := net.JoinHostPort(podIP.String(), strconv.Itoa(int(g.Port)))
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dial(ctx, "tcp", a) }))
	if err != nil {
		return fmt.Errorf("gRPC probe client: %w", err)
	}
	defer conn.Close()
	service := ""
	if g.Service != nil {
		service = *g.Service
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health is %v", resp.GetStatus())
	}
	return nil
}

// probeAddr resolves a probe's host (default: the pod IP) and its port, which may name a containerPort.
func probeAddr(host string, port intstr.IntOrString, c *corev1.Container, podIP netip.Addr) (string, error) {
	if host == "" {
		host = podIP.String()
	}
	n, err := resolvePort(port, c)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, error) {
	if port.Type == intstr.Int {
		if port.IntVal <= 0 || port.IntVal > 65535 {
			return 0, fmt.Errorf("probe port %d is out of range", port.IntVal)
		}
		return int(port.IntVal), nil
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("probe port %q names no port of container %s", port.StrVal, c.Name)
}
