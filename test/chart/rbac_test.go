package chart

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/baregate/baregate/charts/baregate/charttest"
	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/test/e2e/framework"
)

// The lab's share of the LoadBalancer range for this package.
const poolRange = "203.0.113.40-203.0.113.49"

// TestGatewayRunsWithTheChartsRBAC applies the chart's manifests, starts a gateway on every node with
// the chart's ServiceAccount token and DaemonSet arguments, and runs the smoke test: a LoadBalancer IP
// allocated and reachable from a client, and an Ingress host served on the chart's ingress Service. Any
// "forbidden" in the gateways' logs fails it, so a missing permission cannot hide behind a retry.
func TestGatewayRunsWithTheChartsRBAC(t *testing.T) {
	f := env.Lab(t)
	ctx := f.Ctx
	manifest := renderChart(t, "lbip.pools[0].name=chart", "lbip.pools[0].addresses={"+poolRange+"}")
	ensureNamespace(t, f, lab.GatewayNamespace)
	if err := lab.ApplyInNamespace(ctx, f.RESTConfig(), lab.GatewayNamespace, manifest); err != nil {
		t.Fatalf("applying the chart: %v", err)
	}

	kubeconfig, client := serviceAccountKubeconfig(t, f)
	f.Lab.SetGatewayAccess(kubeconfig, daemonSetArgs(t, manifest))
	t.Cleanup(func() { f.Lab.SetGatewayAccess("", nil) })
	for i := 1; i <= 2; i++ {
		if err := f.Lab.StartGateway(ctx, i); err != nil {
			t.Fatalf("starting the gateway with the chart's ServiceAccount: %v", err)
		}
		t.Cleanup(func() { f.Lab.KillGateway(context.Background(), i) })
	}

	// The token is the ServiceAccount's, and it is not an admin.
	review, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("reviewing the gateway's identity: %v", err)
	}
	if got := review.Status.UserInfo.Username; got != "system:serviceaccount:"+lab.GatewayNamespace+":baregate" {
		t.Fatalf("the gateways run as %q, not the chart's ServiceAccount", got)
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "chart-not-allowed"}}, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("the chart's ServiceAccount created a Namespace (err %v): it has more than it needs", err)
	}

	ns := f.Namespace()
	f.Apply(ns, framework.EchoApp("echo", 2, "echo")+framework.Service("echo", "LoadBalancer", "app: echo", "chart", "")+echoIngress)
	f.WaitPodsReady(ns, "app=echo", 2)
	f.WaitReadyEndpoints(ns, "echo", 2)

	lbIP := waitLoadBalancerIP(t, f, ns, "echo")
	r := f.CurlEcho(1, "http://"+net.JoinHostPort(lbIP, "80")+"/lb")
	if r.Service != "echo" || r.Namespace != ns || r.Path != "/lb" {
		t.Errorf("the LB IP %s answered %+v; want the echo Service of %s", lbIP, r, ns)
	}

	ingressIP := waitLoadBalancerIP(t, f, lab.GatewayNamespace, "baregate-ingress")
	r = f.CurlEcho(1, "-H", "Host: chart.example", "http://"+net.JoinHostPort(ingressIP, "80")+"/ingress")
	if r.Ingress != "echo" || r.Host != "chart.example" || r.Path != "/ingress" {
		t.Errorf("the ingress on %s answered %+v; want Ingress echo for host chart.example", ingressIP, r)
	}
	// The leader wrote the Ingress status (ingresses/status) from the ingress Service.
	f.WaitFor(time.Minute, "the Ingress status to carry the ingress IP", func(ctx context.Context) (bool, error) {
		ing, err := f.Client().NetworkingV1().Ingresses(ns).Get(ctx, "echo", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, lb := range ing.Status.LoadBalancer.Ingress {
			if lb.IP == ingressIP {
				return true, nil
			}
		}
		return false, fmt.Errorf("status %+v", ing.Status.LoadBalancer)
	})
	if _, err := f.Client().CoordinationV1().Leases(lab.GatewayNamespace).Get(ctx, "baregate", metav1.GetOptions{}); err != nil {
		t.Errorf("no leader Lease: %v", err)
	}

	for i := 1; i <= 2; i++ {
		logs, err := os.ReadFile(f.Lab.GatewayLog(i))
		if err != nil || len(logs) == 0 {
			t.Fatalf("reading the gateway log of %s: %v (%d bytes); without it nothing proves the RBAC", lab.NodeName(i), err, len(logs))
		}
		for _, line := range strings.Split(string(logs), "\n") {
			if strings.Contains(strings.ToLower(line), "forbidden") {
				t.Errorf("%s's gateway was refused by the API server: %s", lab.NodeName(i), line)
			}
		}
	}
}

// renderChart renders charts/baregate as release "baregate" (the name the lab's gateway Pods carry).
func renderChart(t *testing.T, sets ...string) []byte {
	t.Helper()
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := charttest.Template(t, lab.GatewayNamespace, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, out)
	}
	return out
}

// daemonSetArgs are the arguments the chart's DaemonSet gives baregate.
func daemonSetArgs(t *testing.T, manifest []byte) []string {
	t.Helper()
	for _, doc := range strings.Split(string(manifest), "\n---\n") {
		var ds appsv1.DaemonSet
		if err := yaml.Unmarshal([]byte(doc), &ds); err != nil || ds.Kind != "DaemonSet" {
			continue
		}
		return ds.Spec.Template.Spec.Containers[0].Args
	}
	t.Fatal("the chart rendered no DaemonSet")
	return nil
}

func ensureNamespace(t *testing.T, f *framework.T, name string) {
	t.Helper()
	_, err := f.Client().CoreV1().Namespaces().Create(f.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// serviceAccountKubeconfig asks the API server for a token of the chart's ServiceAccount (TokenRequest,
// as the kubelet does for a Pod) and writes a kubeconfig that uses only that token.
func serviceAccountKubeconfig(t *testing.T, f *framework.T) (string, kubernetes.Interface) {
	t.Helper()
	expiry := int64(2 * time.Hour / time.Second)
	tr, err := f.Client().CoreV1().ServiceAccounts(lab.GatewayNamespace).CreateToken(f.Ctx, "baregate",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for the chart's ServiceAccount: %v", err)
	}
	admin := f.RESTConfig()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lab"] = &clientcmdapi.Cluster{Server: admin.Host, CertificateAuthority: admin.TLSClientConfig.CAFile}
	cfg.AuthInfos["baregate"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["baregate"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: "baregate"}
	cfg.CurrentContext = "baregate"
	path := filepath.Join(f.Lab.Options().Dir, "baregate-serviceaccount.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	rc.Dial = admin.Dial // the test process dials into the lab like the admin client does
	return path, kubernetes.NewForConfigOrDie(rc)
}

func waitLoadBalancerIP(t *testing.T, f *framework.T, ns, name string) string {
	t.Helper()
	ip := f.WaitLoadBalancerIP(ns, name)
	if lo, hi, _ := strings.Cut(poolRange, "-"); ip < lo || ip > hi {
		t.Fatalf("Service %s/%s got %s, outside the chart's pool %s", ns, name, ip, poolRange)
	}
	return ip
}

const echoIngress = `
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: echo
spec:
  ingressClassName: baregate
  rules:
  - host: chart.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: echo
            port: {number: 80}
`
