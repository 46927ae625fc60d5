package framework

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/lab/echo"
)

// The manifests and waits that the e2e and chart packages share: an echo app behind a Service, its
// load-balancer IP, the client's view of it, and an IngressClass for the test.

// EchoApp is a Deployment named name of n echo pods labelled app=<name>; each names Service echo and
// the ingress in its answers.
func EchoApp(name string, n int, ingress string) string {
	return fmt.Sprintf(`
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: %[2]d
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: registry.k8s.io/gateway-api/conformance/echo-basic:v20231214-v1.0.0-140-gf544a46e
        ports:
        - {name: http, containerPort: 3000}
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        - name: NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: SERVICE_NAME, value: echo}
        - {name: INGRESS_NAME, value: %[3]q}
        readinessProbe:
          httpGet: {path: /health, port: http}
          periodSeconds: 1
`, name, n, ingress)
}

// Service is a Service on port 80 to the selected pods' port named http; pool and policy, when set,
// are its address pool and externalTrafficPolicy. It starts with a document separator.
func Service(name, typ, selector, pool, policy string) string {
	m := fmt.Sprintf("\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n", name)
	if pool != "" {
		m += fmt.Sprintf("  annotations: {metallb.io/address-pool: %s}\n", pool)
	}
	m += fmt.Sprintf("spec:\n  type: %s\n  selector: {%s}\n", typ, selector)
	if policy != "" {
		m += fmt.Sprintf("  externalTrafficPolicy: %s\n", policy)
	}
	return m + "  ports:\n  - {name: http, port: 80, targetPort: http}\n"
}

// WaitLoadBalancerIP waits up to a minute for the Service's load-balancer IP and returns it; callers
// check it is from the pool they expect.
func (f *T) WaitLoadBalancerIP(ns, name string) string {
	f.t.Helper()
	var ip string
	f.WaitFor(time.Minute, "a load-balancer IP for Service "+ns+"/"+name, func(ctx context.Context) (bool, error) {
		svc, err := f.Client().CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			ip = in.IP
		}
		return ip != "", fmt.Errorf("status %+v", svc.Status.LoadBalancer)
	})
	return ip
}

// CurlEcho curls (with args) from client i until an echo JSON answer comes, for up to a minute, and
// returns it.
func (f *T) CurlEcho(i int, args ...string) echo.Response {
	f.t.Helper()
	var r echo.Response
	f.WaitFor(time.Minute, fmt.Sprintf("client%d to get an echo answer from %v", i, args), func(ctx context.Context) (bool, error) {
		out, err := f.ExecClient(i, append([]string{"curl", "-sS", "--fail", "--max-time", "3"}, args...)...)
		if err != nil {
			return false, fmt.Errorf("%w: %s", err, out)
		}
		r = echo.Response{}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return false, fmt.Errorf("not echo JSON: %q", out)
		}
		return true, nil
	})
	return r
}

// AddIngressClass adds an IngressClass of the controller, removed when the test ends, and returns its name.
func (f *T) AddIngressClass(name, controller string) string {
	f.t.Helper()
	f.Apply("", fmt.Sprintf("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: %s\nspec:\n  controller: %s\n", name, controller))
	f.t.Cleanup(func() {
		_ = f.Client().NetworkingV1().IngressClasses().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}
