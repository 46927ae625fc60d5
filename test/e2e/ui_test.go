package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/baregate/baregate/internal/lab"
	"github.com/baregate/baregate/test/e2e/framework"
	"github.com/baregate/baregate/ui/uitest"
)

// dashboardAddress is where the lab's gateways serve the dashboard: ui's default --ui-address, on the
// loopback of each node's namespace.
const dashboardAddress = "127.0.0.1:9711"

// TestDashboardInBrowser loads node1's dashboard from the lab in headless Chromium: the sample app's
// LB IP (with its announcing node), Service and pods are on the map; filters narrow it; a detail panel
// opens; scaling the Deployment shows on the page while it is open; no console errors. Screenshots go
// to the test's artifact directory (go test -artifacts keeps them).
func TestDashboardInBrowser(t *testing.T) {
	f := env.Lab(t)
	ctx, errs := uitest.Browser(t)
	dir := uitest.ArtifactDir(t)
	ns := f.Namespace()
	pool := addPool(t, f, ns, "203.0.113.236-203.0.113.237")
	f.Apply(ns, framework.EchoApp("echo", 3, "")+framework.Service("echo", "LoadBalancer", "app: echo", pool, "Cluster"))
	pods := podNames(f.WaitPodsReady(ns, "app=echo", 3))
	f.WaitReadyEndpoints(ns, "echo", 3)
	ip := waitServiceIP(t, f, ns, "echo", "203.0.113.236", "203.0.113.237")
	owner := waitAnnouncedBy(t, f, ns, "echo")
	base := dashboardProxy(t, f, 1)

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		uitest.Must(t, ctx, errs, what, chromedp.Steps(steps...))
	}
	text := func(what, sel string) string {
		t.Helper()
		return uitest.Must(t, ctx, errs, what, chromedp.Text(chromedp.CSS(sel)))
	}
	shot := func(name string) chromedp.Action[chromedp.Void] { return uitest.Screenshot(dir, name) }
	svcID, ipID := "svc:"+ns+"/echo", "ip:"+ip

	load := []chromedp.Action[chromedp.Void]{chromedp.Navigate(base + "/"), chromedp.WaitVisible(chromedp.CSS(`#status.live`)),
		chromedp.WaitVisible(uitest.Node(ipID)), chromedp.WaitVisible(uitest.Node(svcID))}
	for _, p := range pods {
		load = append(load, chromedp.WaitVisible(uitest.Node("pod:"+ns+"/"+p)))
	}
	for i := 1; i <= 2; i++ {
		load = append(load, chromedp.WaitVisible(uitest.Node("node:"+lab.NodeName(i))))
	}
	start := time.Now()
	do("finding the sample app's IP, Service, pods and both nodes on the map", append(load, shot("lab-map.png"))...)
	t.Logf("the map showed the sample app %s after loading the page", time.Since(start).Round(time.Millisecond))
	if g := text("the gateway's name", "#gateway"); g != "gateway on node1" {
		t.Errorf("the page names %q; want node1's gateway", g)
	}

	do("filtering by the test's namespace",
		setValue(`#ns`, ns, "change"),
		chromedp.WaitNotPresent(uitest.Node("svc:default/kubernetes")),
		chromedp.WaitVisible(uitest.Node(svcID)),
		chromedp.SendKeys(chromedp.CSS(`#q`), pods[0]),
		chromedp.WaitNotPresent(uitest.Node("pod:"+ns+"/"+pods[1])),
		chromedp.WaitVisible(uitest.Node("pod:"+ns+"/"+pods[0])),
		chromedp.WaitVisible(uitest.Node(ipID)), // what leads to the pod stays
		shot("lab-filtered.png"),
	)
	loc := uitest.Must(t, ctx, errs, "location", chromedp.Location())
	if !strings.Contains(loc, "ns="+ns) || !strings.Contains(loc, "q="+pods[0]) {
		t.Errorf("the filters are not in the URL: %s", loc)
	}

	do("opening the detail panel of the LB IP",
		setValue(`#q`, "", "input"),
		chromedp.WaitVisible(uitest.Node("pod:"+ns+"/"+pods[1])),
		chromedp.Click(uitest.Node(ipID)),
		chromedp.WaitVisible(chromedp.CSS(`#detail`)),
		shot("lab-detail-ip.png"),
	)
	if title, fields := text("detail title", "#d-title"), text("detail fields", "#d-fields"); title != ip || !strings.Contains(fields, "Announced by\n"+owner) || !strings.Contains(fields, pool) {
		t.Errorf("the LB IP's detail panel: title %q, fields %q; want %s announced by %s from pool %s", title, fields, ip, owner, pool)
	}
	do("opening the detail panel of the Service",
		chromedp.Click(uitest.Node(svcID)),
		chromedp.WaitVisible(chromedp.CSS(`#detail`)),
	)
	// The panel shows the gateway's programmed nftables verdict, which follows the API server's
	// ready endpoints by a sync or two: reopen it until it names all three (or give up after 20 s).
	fields := text("detail fields", "#d-fields")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(fields, "3 endpoints") && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		do("reopening the detail panel of the Service", chromedp.Click(uitest.Node(ipID)), chromedp.Click(uitest.Node(svcID)),
			chromedp.WaitVisible(chromedp.CSS(`#detail`)))
		fields = text("detail fields", "#d-fields")
	}
	do("taking a picture of the Service's detail panel", shot("lab-detail-service.png"))
	if title := text("detail title", "#d-title"); title != "echo" || !strings.Contains(fields, "nftables\n") || !strings.Contains(fields, "3 endpoints") || !strings.Contains(fields, "LoadBalancer") {
		t.Errorf("the Service's detail panel: title %q, fields %q; want echo, a LoadBalancer whose nftables verdict names its 3 endpoints", title, fields)
	}
	t.Logf("the Service's detail panel: %q", fields)

	// Scale to five: more pods than the map draws one by one, so they fold into one count. The page
	// must follow without a reload; the delay is measured from the moment the API server has all five
	// endpoints ready to the moment the page shows them all ready.
	const want = 5
	if _, err := f.Client().AppsV1().Deployments(ns).UpdateScale(f.Ctx, "echo",
		&autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: want}},
		metav1.UpdateOptions{}); err != nil {
		t.Fatalf("scaling the Deployment: %v", err)
	}
	group := fmt.Sprintf(`g.node[data-id="group:endpoint:svc:%s/echo"]`, ns)
	watch := fmt.Sprintf(`(() => {
		window.__shown = 0;
		const done = () => { const g = document.querySelector(%q); return g && g.querySelector('title').textContent.includes('%d pods') && g.querySelector('title').textContent.includes('all ok'); };
		const check = () => { if (!window.__shown && done()) window.__shown = Date.now(); };
		new MutationObserver(check).observe(document.getElementById('map'), {subtree: true, childList: true, characterData: true});
		check();
		return true;
	})()`, group, want)
	uitest.Must(t, ctx, errs, "watching the map", chromedp.Evaluate[bool](watch))
	f.WaitReadyEndpoints(ns, "echo", want)
	ready := time.Now()
	uitest.Must(t, ctx, errs, "seeing the scaled Deployment", chromedp.Poll[bool](`window.__shown > 0`, chromedp.WithPollingTimeout(30*time.Second)))
	shown := time.UnixMilli(int64(uitest.Must(t, ctx, errs, "reading when the page changed", chromedp.Evaluate[float64](`window.__shown`))))
	delay := shown.Sub(ready)
	t.Logf("the page showed %d ready pods %s after the API server had %d ready endpoints (goal: within 2 s)", want, delay.Round(time.Millisecond), want)
	do("screenshot", shot("lab-scaled.png"))
	if delay > 10*time.Second {
		t.Errorf("the page took %s to show the scaled Deployment; want about 2 s (10 s allowed on a loaded machine)", delay)
	}
	if title := text("the Service's detail title after the change", "#d-title"); title != "echo" {
		t.Errorf("the open detail panel shows %q after the live change; want it to stay on echo", title)
	}
	uitest.Must(t, ctx, errs, "seeing the open detail panel follow the nftables rules to 5 endpoints",
		chromedp.Poll[bool](`document.getElementById('d-fields').textContent.includes('5 endpoints')`, chromedp.WithPollingTimeout(30*time.Second)))

	do("the LB IP table", chromedp.Click(chromedp.CSS(`button[data-tab="lbips"]`)), chromedp.WaitVisible(chromedp.CSS(`#tab-lbips tbody tr`)), shot("lab-lbips.png"))
	if rows := text("LB IP table", "#tab-lbips tbody"); !strings.Contains(rows, ip) || !strings.Contains(rows, owner) || !strings.Contains(rows, ns+"/echo") {
		t.Errorf("the LB IP table %q lacks %s of %s/echo announced by %s", rows, ip, ns, owner)
	}
	if e := errs(); len(e) > 0 {
		t.Errorf("the page logged errors: %q", e)
	}
}

// setValue sets a form control's value and fires the event the page listens to, as choosing or
// typing would.
func setValue(sel, value, event string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; return e.dispatchEvent(new Event(%q)); })()`, sel, value, event)
		_, err := chromedp.Evaluate[bool](js)(ctx, tg)
		return err
	})
}

// dashboardProxy serves node i's loopback-only dashboard on the test's own loopback (what kubectl
// port-forward does for the DaemonSet's pods) and returns its base URL.
func dashboardProxy(t testing.TB, f *framework.T, i int) string {
	target := &url.URL{Scheme: "http", Host: dashboardAddress}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target) },
		Transport: &http.Transport{DialContext: lab.DialContextIn(f.NodeNetns(i))},
		// The event stream must pass each event on at once.
		FlushInterval: -1,
	}
	srv := httptest.NewServer(rp)
	// The page holds an event stream open: cut it, or Close would wait for it.
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	f.WaitFor(time.Minute, "node"+fmt.Sprint(i)+"'s dashboard to answer", func(ctx context.Context) (bool, error) {
		var status struct{ Gateway string }
		err := getJSON(ctx, srv.URL+"/api/status", &status)
		return err == nil && status.Gateway == lab.NodeName(i), fmt.Errorf("gateway %q: %w", status.Gateway, err)
	})
	return srv.URL
}

// TestDashboardDefaultBackendRates: requests that only an Ingress's defaultBackend serves show up as
// request rates on that route in the dashboard of the gateway that proxied them, and the 503s once
// the backend has no pods as its error rate, with the route marked failing.
func TestDashboardDefaultBackendRates(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	class, ip := ingressFrontDoor(t, f, ns, "203.0.113.232-203.0.113.233")
	f.Apply(ns, framework.EchoApp("echo", 2, "fallback")+framework.Service("echo", "ClusterIP", "app: echo", "", "")+fmt.Sprintf(`
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: fallback
spec:
  ingressClassName: %s
  defaultBackend:
    service:
      name: echo
      port: {name: http}
`, class))
	f.WaitPodsReady(ns, "app=echo", 2)
	f.WaitReadyEndpoints(ns, "echo", 2)
	url := "http://unrouted." + ns + ".example/"
	waitEcho(t, f, newIngressClient(t, f, ip, nil), url)
	// Counters are per gateway: read the dashboard of the node that receives the LB IP's traffic.
	owner := waitAnnouncedBy(t, f, lab.GatewayNamespace, ingressServiceName)
	var node int
	if _, err := fmt.Sscanf(owner, "node%d", &node); err != nil {
		t.Fatalf("announcing node %q: %v", owner, err)
	}
	base := dashboardProxy(t, f, node)
	route := fmt.Sprintf("route:%s/fallback:%q", ns, "")

	load := startLoad(t, f, ip, url, 2)
	rate := waitRouteRate(t, f, base, route, "requests without errors", func(req, errs float64) bool { return req > 0 && errs == 0 })
	st := load.stop()
	t.Logf("%s's dashboard: %.1f req/s on the default backend (the load sent %d requests, %d failed)", owner, rate.Requests, st.requests, st.status5xx+st.connErrors+st.otherStatus)

	if _, err := f.Client().AppsV1().Deployments(ns).UpdateScale(f.Ctx, "echo",
		&autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 0}},
		metav1.UpdateOptions{}); err != nil {
		t.Fatalf("scaling the Deployment to zero: %v", err)
	}
	f.WaitReadyEndpoints(ns, "echo", 0)
	load = startLoad(t, f, ip, url, 2)
	rate = waitRouteRate(t, f, base, route, "errors on the route, marked failing", func(req, errs float64) bool { return errs > 0 })
	st = load.stop()
	t.Logf("without pods: %.1f req/s, %.1f 5xx/s on the default backend (the load got %d 5xx of %d)", rate.Requests, rate.Errors, st.status5xx, st.requests)
	if !rate.failing {
		t.Errorf("the default backend's edge is not marked failing at %.1f 5xx/s of %.1f req/s", rate.Errors, rate.Requests)
	}
}

type edgeRate struct {
	Requests, Errors float64
	failing          bool
}

// waitRouteRate polls the dashboard's map until the edge into route carries rates that satisfy ok.
func waitRouteRate(t testing.TB, f *framework.T, base, route, what string, ok func(req, errs float64) bool) edgeRate {
	var got edgeRate
	f.WaitFor(time.Minute, "the dashboard to show "+what+" on "+route, func(ctx context.Context) (bool, error) {
		var m struct {
			Edges []struct {
				To          string   `json:"to"`
				RequestRate *float64 `json:"requestRate"`
				ErrorRate   *float64 `json:"errorRate"`
				Failing     bool     `json:"failing"`
			} `json:"edges"`
		}
		if err := getJSON(ctx, base+"/api/map", &m); err != nil {
			return false, err
		}
		for _, e := range m.Edges {
			if e.To == route && e.RequestRate != nil {
				got = edgeRate{*e.RequestRate, *e.ErrorRate, e.Failing}
				return ok(got.Requests, got.Errors), fmt.Errorf("rates %+v", got)
			}
		}
		return false, fmt.Errorf("no edge with rates into %s", route)
	})
	return got
}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// TestDashboardIngressHostsTable: the dashboard's Ingress hosts table shows a TLS host's Secret, its
// certificate's issuer and expiry, read from the lab's Secret.
func TestDashboardIngressHostsTable(t *testing.T) {
	f := env.Lab(t)
	ns := f.Namespace()
	class := f.AddIngressClass(ns+"-class", "baregate.io/ingress")
	host := "certs." + ns + ".example"
	ca := newTestCA(t)
	f.Apply(ns, ca.tlsSecret(t, "certs-tls", host)+"\n---"+framework.EchoApp("echo", 1, "")+framework.Service("echo", "ClusterIP", "app: echo", "", "")+
		ingress("certs", class, host, "certs-tls"))
	base := dashboardProxy(t, f, 1)
	type row struct {
		Host, Secret, Issuer, Cert string
		TLS                        bool
		NotAfter                   time.Time
	}
	var got row
	f.WaitFor(time.Minute, "the dashboard to list host "+host, func(ctx context.Context) (bool, error) {
		var rows []row
		if err := getJSON(ctx, base+"/api/hosts", &rows); err != nil {
			return false, err
		}
		for _, r := range rows {
			if r.Host == host {
				got = r
				return true, nil
			}
		}
		return false, fmt.Errorf("hosts %+v", rows)
	})
	leaf := ca.leaf[host]
	want := row{Host: host, Secret: ns + "/certs-tls", Issuer: ca.cert.Subject.CommonName, TLS: true,
		Cert: "valid until " + leaf.NotAfter.UTC().Format(time.DateOnly), NotAfter: leaf.NotAfter.UTC()}
	if !got.NotAfter.Equal(want.NotAfter) || got.Host != want.Host || got.Secret != want.Secret || got.Issuer != want.Issuer || got.Cert != want.Cert || !got.TLS {
		t.Errorf("the dashboard's row for %s: %+v; want %+v", host, got, want)
	}
}
