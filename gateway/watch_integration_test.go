package gateway

import (
	"context"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/lab"
)

const watchManifest = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [198.18.0.5]}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: baregate}
spec: {controller: baregate.io/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: site
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: users
spec:
  ingressClassName: baregate
  tls: [{hosts: [shop.example.com], secretName: cert}]
  defaultBackend: {service: {name: web, port: {number: 80}}}
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: shop}
type: kubernetes.io/tls
stringData: {tls.crt: "not parsed here", tls.key: "not parsed here"}
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: shop}
type: Opaque
stringData: {auth: "user:$apr1$x$y"}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: shop}
type: Opaque
stringData: {password: "not for the gateway"}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: shop}
spec: {addresses: [203.0.113.0/28]}
`

// TestWatcherAgainstRealAPIServer checks the watcher's incremental snapshots against a real API
// server: the first one holds everything (the Opaque basic-auth Secret included, the unrelated
// one not), and each later change gives a new entry for the Service it touches only.
func TestWatcherAgainstRealAPIServer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, client := lab.StartTestControlPlane(ctx, t, "shop")
	if err := lab.Apply(ctx, cp.RESTConfig(), []byte(watchManifest)); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	w := newWatcher("node-a", false, true, client, dyn, nil, func() {})
	if err := w.start(ctx); err != nil {
		t.Fatal(err)
	}
	web, api := types.NamespacedName{Namespace: "shop", Name: "web"}, types.NamespacedName{Namespace: "shop", Name: "api"}
	users := types.NamespacedName{Namespace: "shop", Name: "users"}

	// Objects created just before start may still be arriving; once they are, nothing else is.
	var snap *cluster.Snapshot
	eventually(t, "the first snapshot to hold every object", func() bool {
		snap, _ = w.snapshot(ctx)
		return snap.Service(web) != nil && snap.Service(api) != nil && len(snap.Service(web).Endpoints) == 1 &&
			len(snap.Ingresses) == 1 && len(snap.Secrets) == 2 && len(snap.Pools) == 1
	})
	for _, name := range []string{"cert", "users"} {
		if snap.Secrets[types.NamespacedName{Namespace: "shop", Name: name}] == nil {
			t.Errorf("Secret %s, which the served Ingress references, is missing", name)
		}
	}

	es, err := client.DiscoveryV1().EndpointSlices("shop").Get(ctx, "web-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{"198.18.0.6"}})
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	prev := snap
	eventually(t, "the new endpoint", func() bool {
		snap, _ = w.snapshot(ctx)
		return len(snap.Service(web).Endpoints) == 2
	})
	if got := snap.ServicesChanged(prev); len(got) != 1 || got[0] != web {
		t.Errorf("after a change to web's slice, changed Services = %v, want only %v", got, web)
	}
	if snap.Service(api) != prev.Service(api) {
		t.Error("api's entry was rebuilt though nothing of it changed")
	}
	if !cluster.SameSlice(prev.Ingresses, snap.Ingresses) || !cluster.SameMap(prev.Secrets, snap.Secrets) {
		t.Error("Ingresses or Secrets were rebuilt by an EndpointSlice change")
	}

	if err := client.CoreV1().Services("shop").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := client.CoreV1().Secrets("shop").Delete(ctx, "users", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deleted Service and Secret to leave the snapshot", func() bool {
		snap, _ = w.snapshot(ctx)
		return snap.Service(api) == nil && snap.Secrets[users] == nil
	})
	if snap.Service(web) == nil || len(snap.Secrets) != 1 {
		t.Errorf("deletes took more with them: web %v, Secrets %v", snap.Service(web) != nil, snap.Secrets)
	}
}
