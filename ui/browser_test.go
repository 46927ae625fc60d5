package ui

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/baregate/baregate/internal/testutil"
	"github.com/chromedp/chromedp"
)

// artifacts is where the browser tests leave their screenshots (gitignored).
const artifacts = "../test/artifacts"

// browser starts a headless Chromium for the test and collects what the page logs as errors or
// warnings (console calls, uncaught exceptions, browser log entries such as failed loads or CSP
// violations).
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	testutil.RequireTool(t, "chromium")
	path, _ := exec.LookPath("chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // Chromium refuses to run as root with its sandbox
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1680, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)

	var mu sync.Mutex
	var errs []string
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				mu.Lock()
				errs = append(errs, m.String()+" "+m.URL)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc(); <-done })
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

func screenshot(name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		buf, err := chromedp.CaptureScreenshot()(ctx, t)
		if err != nil {
			return fmt.Errorf("capturing %s: %w", name, err)
		}
		if err := os.MkdirAll(artifacts, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(artifacts, name), buf, 0o644)
	})
}

func nodeSel(id string) chromedp.CSS { return chromedp.CSS(fmt.Sprintf(`g.node[data-id=%q]`, id)) }

// must runs one action and returns its value, failing the test on error.
func must[T any](t *testing.T, ctx context.Context, errs func() []string, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v (console: %q)", what, err, errs())
	}
	return v
}

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
	ctx, errs := browser(t)
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		must(t, ctx, errs, what, chromedp.Steps(steps...))
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	do("loading the map",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(nodeSel("svc:shop/web")),
		chromedp.WaitVisible(nodeSel("ip:203.0.113.10")),
		chromedp.WaitVisible(nodeSel("host:shop.example.com")),
		chromedp.WaitVisible(nodeSel("pod:shop/web-7d9f8c6b5d-ak")),
		chromedp.WaitVisible(nodeSel("pod:shop/web-7d9f8c6b5d-cm")),
		chromedp.WaitVisible(nodeSel("node:node-a")),
		chromedp.WaitVisible(css(`#status.live`)),
		screenshot("ui-map.png"),
	)
	if title := must(t, ctx, errs, "title", chromedp.Title()); title != "baregate · service map" {
		t.Errorf("title %q", title)
	}

	do("filtering by a pod name",
		chromedp.SendKeys(css("#q"), "web-7d9f8c6b5d-bl"),
		chromedp.WaitNotPresent(nodeSel("svc:shop/api")),
		chromedp.WaitVisible(nodeSel("pod:shop/web-7d9f8c6b5d-bl")),
		chromedp.WaitVisible(nodeSel("ip:203.0.113.10")),
		screenshot("ui-filtered.png"),
	)
	if url := must(t, ctx, errs, "location", chromedp.Location()); !strings.Contains(url, "q=web-7d9f8c6b5d-bl") {
		t.Errorf("the filter is not in the URL: %s", url)
	}
	if n := must(t, ctx, errs, "counting pods", chromedp.Evaluate[int](`document.querySelectorAll('g.node[data-id="pod:shop/web-7d9f8c6b5d-ak"]').length`)); n != 0 {
		t.Errorf("another pod of the same Service stays visible under the filter")
	}

	do("opening the detail panel of the Service",
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`(() => { const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input')); return true; })()`)(ctx, tg)
			return err
		}),
		chromedp.WaitVisible(nodeSel("svc:shop/api")),
		chromedp.Click(nodeSel("svc:shop/web")),
		chromedp.WaitVisible(css(`#detail`)),
		screenshot("ui-detail.png"),
	)
	detail := must(t, ctx, errs, "detail title", chromedp.Text(css(`#d-title`)))
	fields := must(t, ctx, errs, "detail fields", chromedp.Text(css(`#d-fields`)))
	if detail != "web" || !strings.Contains(fields, "DNAT to 3 endpoints") || !strings.Contains(fields, "Local") {
		t.Errorf("detail panel: title %q, fields %q", detail, fields)
	}
	if url := must(t, ctx, errs, "location", chromedp.Location()); !strings.Contains(url, "sel=svc%3Ashop%2Fweb") {
		t.Errorf("the selection is not in the URL: %s", url)
	}

	// Scale the Deployment: 5 pods now fold into one count under the Service.
	scaled := time.Now()
	s.Update(fixtureSnapshot(t, 2, fixtureOpts{webReplicas: 5}))
	do("seeing the scaled Deployment", chromedp.WaitVisible(nodeSel("group:endpoint:svc:shop/web")))
	t.Logf("the scaled Deployment showed on the page %v after the snapshot", time.Since(scaled).Round(time.Millisecond))
	do("screenshot", screenshot("ui-scaled.png"))
	if label := must(t, ctx, errs, "pod count", chromedp.TextContent(css(`g.node[data-id="group:endpoint:svc:shop/web"] text.label`))); label != "5 pods" {
		t.Errorf("pod group label %q, want 5 pods", label)
	}

	// Paused, the page holds still and counts what it missed; resumed, it catches up.
	do("pausing", chromedp.Click(css(`#pause`)), chromedp.WaitVisible(css(`#status.paused`)))
	s.Update(fixtureSnapshot(t, 3, fixtureOpts{webReplicas: 2}))
	must(t, ctx, errs, "seeing the paused page count the update", chromedp.Poll[bool](`document.getElementById('status').textContent.includes('1 update waiting')`))
	if n := must(t, ctx, errs, "counting pods", chromedp.Evaluate[int](`document.querySelectorAll('g.node[data-id="group:endpoint:svc:shop/web"]').length`)); n != 1 {
		t.Error("the paused page changed")
	}
	do("resuming", chromedp.Click(css(`#pause`)), chromedp.WaitVisible(nodeSel("pod:shop/web-7d9f8c6b5d-bl")), chromedp.WaitVisible(css(`#status.live`)))

	do("reloading keeps the view", chromedp.Reload(), chromedp.WaitVisible(css(`#detail`)))
	if detail := must(t, ctx, errs, "detail title", chromedp.Text(css(`#d-title`))); detail != "web" {
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
	if lbips := must(t, ctx, errs, "LB IP table", chromedp.Text(css(`#tab-lbips tbody`))); !strings.Contains(lbips, "203.0.113.10") || !strings.Contains(lbips, "node-a") || !strings.Contains(lbips, "default") {
		t.Errorf("LB IP table: %q", lbips)
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
	ctx, errs := browser(t)
	must(t, ctx, errs, "expanding a namespace", chromedp.Steps(
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(nodeSel("group:service:ns:team-03")),
		screenshot("ui-500-grouped.png"),
		chromedp.Click(nodeSel("group:service:ns:team-03")),
		chromedp.Click(chromedp.CSS(`#d-actions button`)),
		chromedp.WaitVisible(nodeSel("svc:team-03/svc-007")),
		screenshot("ui-500-expanded.png"),
	))
	if summary := must(t, ctx, errs, "summary", chromedp.Text(chromedp.CSS(`#summary`))); !strings.HasPrefix(summary, "500 of 500 Services") {
		t.Errorf("summary %q", summary)
	}
	if e := errs(); len(e) > 0 {
		t.Errorf("the page logged errors: %q", e)
	}
}
