package ui

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/ui/uitest"
	"github.com/chromedp/chromedp"
)

// TestBrowser drives the real page in headless Chromium: the sample app's IP, Service and pods are on
// the map, a filter narrows it, a detail panel opens, a scaled Deployment shows up live, URL state
// survives a reload, and the console stays free of errors.
func TestBrowser(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	s, _ := newTestServer(t, cfg)
	s.Update(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}))
	base, _ := runServer(t, s)
	eventually(t, "first map built", func() bool { return s.Map().Generation == 1 })
	ctx, errs := uitest.Browser(t)
	dir := uitest.ArtifactDir(t)
	screenshot := func(name string) chromedp.Action[chromedp.Void] { return uitest.Screenshot(dir, name) }
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		uitest.Must(t, ctx, errs, what, chromedp.Steps(steps...))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	do("loading the map",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(uitest.Node("svc:shop/web")),
		chromedp.WaitVisible(uitest.Node("ip:203.0.113.10")),
		chromedp.WaitVisible(uitest.Node("host:shop.example.com")),
		chromedp.WaitVisible(uitest.Node("pod:shop/web-7d9f8c6b5d-ak")),
		chromedp.WaitVisible(uitest.Node("pod:shop/web-7d9f8c6b5d-cm")),
		chromedp.WaitVisible(uitest.Node("node:node-a")),
		chromedp.WaitVisible(css(`#status.live`)),
		screenshot("ui-map.png"),
	)
	if title := uitest.Must(t, ctx, errs, "title", chromedp.Title()); title != "baregate · service map" {
		t.Errorf("title %q", title)
	}

	do("filtering by a pod name",
		chromedp.SendKeys(css("#q"), "web-7d9f8c6b5d-bl"),
		chromedp.WaitNotPresent(uitest.Node("svc:shop/api")),
		chromedp.WaitVisible(uitest.Node("pod:shop/web-7d9f8c6b5d-bl")),
		chromedp.WaitVisible(uitest.Node("ip:203.0.113.10")),
		screenshot("ui-filtered.png"),
	)
	if url := uitest.Must(t, ctx, errs, "location", chromedp.Location()); !strings.Contains(url, "q=web-7d9f8c6b5d-bl") {
		t.Errorf("the filter is not in the URL: %s", url)
	}
	if n := uitest.Must(t, ctx, errs, "counting pods", chromedp.Evaluate[int](`document.querySelectorAll('g.node[data-id="pod:shop/web-7d9f8c6b5d-ak"]').length`)); n != 0 {
		t.Errorf("another pod of the same Service stays visible under the filter")
	}

	do("opening the detail panel of the Service",
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(() => { const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input')); return true; })()`)(ctx, tg)
			return err
		}),
		chromedp.WaitVisible(uitest.Node("svc:shop/api")),
		chromedp.Click(uitest.Node("svc:shop/web")),
		chromedp.WaitVisible(css(`#detail`)),
		screenshot("ui-detail.png"),
	)
	detail := uitest.Must(t, ctx, errs, "detail title", chromedp.Text(css(`#d-title`)))
	fields := uitest.Must(t, ctx, errs, "detail fields", chromedp.Text(css(`#d-fields`)))
	if detail != "web" || !strings.Contains(fields, "DNAT to 3 endpoints") || !strings.Contains(fields, "Local") {
		t.Errorf("detail panel: title %q, fields %q", detail, fields)
	}
	if url := uitest.Must(t, ctx, errs, "location", chromedp.Location()); !strings.Contains(url, "sel=svc%3Ashop%2Fweb") {
		t.Errorf("the selection is not in the URL: %s", url)
	}

	// Scale the Deployment: 5 pods now fold into one count under the Service.
	scaled := time.Now()
	s.Update(fixtureSnapshot(t, 2, fixtureOpts{webReplicas: 5}))
	do("seeing the scaled Deployment", chromedp.WaitVisible(uitest.Node("group:endpoint:svc:shop/web")))
	t.Logf("the scaled Deployment showed on the page %v after the snapshot", time.Since(scaled).Round(time.Millisecond))
	do("screenshot", screenshot("ui-scaled.png"))
	if label := uitest.Must(t, ctx, errs, "pod count", chromedp.TextContent(css(`g.node[data-id="group:endpoint:svc:shop/web"] text.label`))); label != "5 pods" {
		t.Errorf("pod group label %q, want 5 pods", label)
	}

	// Paused, the page holds still and counts what it missed; resumed, it catches up.
	do("pausing", chromedp.Click(css(`#pause`)), chromedp.WaitVisible(css(`#status.paused`)))
	s.Update(fixtureSnapshot(t, 3, fixtureOpts{webReplicas: 2}))
	uitest.Must(t, ctx, errs, "seeing the paused page count the update", chromedp.Poll[bool](`document.getElementById('status').textContent.includes('1 update waiting')`))
	if n := uitest.Must(t, ctx, errs, "counting pods", chromedp.Evaluate[int](`document.querySelectorAll('g.node[data-id="group:endpoint:svc:shop/web"]').length`)); n != 1 {
		t.Error("the paused page changed")
	}
	do("resuming", chromedp.Click(css(`#pause`)), chromedp.WaitVisible(uitest.Node("pod:shop/web-7d9f8c6b5d-bl")), chromedp.WaitVisible(css(`#status.live`)))

	do("reloading keeps the view", chromedp.Reload(), chromedp.WaitVisible(css(`#detail`)))
	if detail := uitest.Must(t, ctx, errs, "detail title", chromedp.Text(css(`#d-title`))); detail != "web" {
		t.Errorf("after a reload the detail panel shows %q", detail)
	}

	do("dark theme and the LB IP table",
		chromedp.Click(css(`#theme`)), // auto -> light
		chromedp.Click(css(`#theme`)), // light -> dark
		chromedp.WaitVisible(css(`html[data-theme="dark"]`)),
		screenshot("ui-dark.png"),
		chromedp.Click(css(`button[data-tab="lbips"]`)),
		chromedp.WaitVisible(css(`#tab-lbips tbody tr`)),
		screenshot("ui-lbips.png"),
	)
	if lbips := uitest.Must(t, ctx, errs, "LB IP table", chromedp.Text(css(`#tab-lbips tbody`))); !strings.Contains(lbips, "203.0.113.10") || !strings.Contains(lbips, "node-a") || !strings.Contains(lbips, "default") {
		t.Errorf("LB IP table: %q", lbips)
	}
	do("the Ingress hosts table",
		chromedp.Click(css(`button[data-tab="hosts"]`)),
		chromedp.WaitVisible(css(`#tab-hosts tbody tr`)),
		screenshot("ui-hosts.png"),
	)
	if hosts := uitest.Must(t, ctx, errs, "hosts table", chromedp.Text(css(`#tab-hosts tbody`))); !strings.Contains(hosts, "shop.example.com") || !strings.Contains(hosts, "self-signed") || !strings.Contains(hosts, "2027-01-29") {
		t.Errorf("hosts table: %q; want shop.example.com's self-signed certificate expiring 2027-01-29", hosts)
	}
	if e := errs(); len(e) > 0 {
		t.Errorf("the page logged errors: %q", e)
	}
}

// TestBrowserLargeCluster checks the page stays usable at 500 Services: namespaces fold into groups
// that expand on request.
func TestBrowserLargeCluster(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	s, err := New(cfg, cluster.Deps{NodeName: "node-a"}, Sources{})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(bigSnapshot(10, 50, 3))
	base, _ := runServer(t, s)
	eventually(t, "map built", func() bool { return s.Map().Generation == 1 })
	ctx, errs := uitest.Browser(t)
	dir := uitest.ArtifactDir(t)
	screenshot := func(name string) chromedp.Action[chromedp.Void] { return uitest.Screenshot(dir, name) }
	uitest.Must(t, ctx, errs, "expanding a namespace", chromedp.Steps(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(uitest.Node("group:service:ns:team-03")),
		screenshot("ui-500-grouped.png"),
		chromedp.Click(uitest.Node("group:service:ns:team-03")),
		chromedp.Click(chromedp.CSS(`#d-actions button`)),
		chromedp.WaitVisible(uitest.Node("svc:team-03/svc-007")),
		screenshot("ui-500-expanded.png"),
	))
	if summary := uitest.Must(t, ctx, errs, "summary", chromedp.Text(chromedp.CSS(`#summary`))); !strings.HasPrefix(summary, "500 of 500 Services") {
		t.Errorf("summary %q", summary)
	}
	if e := errs(); len(e) > 0 {
		t.Errorf("the page logged errors: %q", e)
	}
}
