// Package uitest drives the dashboard page in a headless Chromium for tests: the ui package's own
// browser test against a fixture, and the end-to-end test against a lab's gateway.
package uitest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/baregate/baregate/internal/testutil"
)

// Browser starts a headless Chromium (Debian's chromium) for the test and returns its context and a
// function listing what the page logged as errors or warnings so far: console calls, uncaught
// exceptions, and browser log entries such as failed loads or CSP violations.
func Browser(t *testing.T) (context.Context, func() []string) {
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
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)

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

// Screenshot saves a PNG of the page as dir/name.
func Screenshot(dir, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		buf, err := chromedp.CaptureScreenshot()(ctx, t)
		if err != nil {
			return fmt.Errorf("capturing %s: %w", name, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name), buf, 0o644)
	})
}

// ArtifactDir is where the test's screenshots go: its artifact directory, kept under the test's
// output directory when go test runs with -artifacts (-outputdir chooses where), a temporary one
// otherwise. The path is logged so a reader of the test output finds the pictures.
func ArtifactDir(t *testing.T) string {
	t.Helper()
	dir := t.ArtifactDir()
	t.Logf("screenshots go to %s (kept with go test -artifacts)", dir)
	return dir
}

// Node selects the map's box for a node ID ("svc:ns/name", "pod:ns/name", "ip:203.0.113.10" ...).
func Node(id string) chromedp.CSS { return chromedp.CSS(fmt.Sprintf(`g.node[data-id=%q]`, id)) }

// Must runs one action and returns its value, failing the test on error with the page's errors.
func Must[T any](t *testing.T, ctx context.Context, errs func() []string, what string, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("%s: %v (console: %q)", what, err, errs())
	}
	return v
}
