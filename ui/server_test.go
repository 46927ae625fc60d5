package ui

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/baregate/baregate/internal/cluster"
	"github.com/spf13/pflag"
)

type fakeSources struct {
	mu     sync.Mutex
	anns   []cluster.Announcement
	routes []cluster.Route
	fwd    cluster.ForwardingInfo
}

func (f *fakeSources) Announcements() []cluster.Announcement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.anns
}

func (f *fakeSources) Routes() []cluster.Route {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]cluster.Route(nil), f.routes...)
}

func (f *fakeSources) ForwardingStatus() cluster.ForwardingInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fwd
}

func newFakeSources() *fakeSources {
	l := fixtureLive()
	return &fakeSources{anns: l.Announcements, routes: l.Routes, fwd: *l.Forwarding}
}

func newTestServer(t *testing.T, cfg Config) (*Server, *fakeSources) {
	t.Helper()
	src := newFakeSources()
	s, err := New(cfg, cluster.Deps{NodeName: "node-a"}, Sources{Announcements: src, Forwarding: src, Routes: src})
	if err != nil {
		t.Fatal(err)
	}
	return s, src
}

func get(t *testing.T, h http.Handler, method, target string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "127.0.0.1:9711"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decoding %s: %v", rec.Body, err)
	}
	return v
}

func TestAPI(t *testing.T) {
	s, _ := newTestServer(t, DefaultConfig())
	h := s.Handler()
	if m := decode[Map](t, get(t, h, "GET", "/api/map")); m.Generation != 0 || len(m.Nodes) != 0 {
		t.Errorf("map before the first snapshot: %+v", m)
	}
	s.Update(fixtureSnapshot(t, 3, fixtureOpts{webReplicas: 3}))
	if err := s.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}

	m := decode[Map](t, get(t, h, "GET", "/api/map"))
	if m.Generation != 3 || len(m.Nodes) == 0 || m.Forwarding == nil || m.Forwarding.Rules != 120 {
		t.Errorf("map: generation %d, %d nodes, forwarding %+v", m.Generation, len(m.Nodes), m.Forwarding)
	}
	v := decode[View](t, get(t, h, "GET", "/api/view?ns=staging&pods=2"))
	if v.Query.Namespace != "staging" || v.Query.PodLimit != 2 || v.Shown != 1 {
		t.Errorf("filtered view: query %+v, %d shown", v.Query, v.Shown)
	}
	ips := decode[[]LBIPRow](t, get(t, h, "GET", "/api/lbips"))
	if row := lbipRow(&Map{LBIPs: ips}, "203.0.113.10"); row.Owner != "node-a" {
		t.Errorf("LB IPs: %+v", ips)
	}
	if hosts := decode[[]HostRow](t, get(t, h, "GET", "/api/hosts")); len(hosts) != 2 || hosts[1].Host != "shop.example.com" || hosts[1].NotAfter == nil {
		t.Errorf("hosts: %+v", hosts)
	}
	if rows := decode[[]ServiceRow](t, get(t, h, "GET", "/api/noendpoints")); len(rows) != 2 {
		t.Errorf("services without endpoints: %+v", rows)
	}
	if w := decode[Warnings](t, get(t, h, "GET", "/api/warnings")); w.Items == nil || len(w.Items) != 0 {
		t.Errorf("warnings without a client: %+v", w)
	}
	st := decode[map[string]any](t, get(t, h, "GET", "/api/status"))
	if st["gateway"] != "node-a" || st["generation"] != 3.0 {
		t.Errorf("status: %v", st)
	}
	for target, want := range map[string]int{"/api/view?pods=x": 400, "/api/view?max=0": 400, "/api/nope": 404, "/nope": 404} {
		if rec := get(t, h, "GET", target); rec.Code != want {
			t.Errorf("GET %s: status %d, want %d", target, rec.Code, want)
		}
	}
	for target, ct := range map[string]string{"/": "text/html", "/app.js": "text/javascript", "/style.css": "text/css", "/favicon.svg": "image/svg+xml"} {
		rec := get(t, h, "GET", target)
		if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), ct) || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d %q, %d bytes", target, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
		}
		if head := get(t, h, "HEAD", target); head.Code != 200 || head.Body.Len() != 0 {
			t.Errorf("HEAD %s: %d with %d bytes", target, head.Code, head.Body.Len())
		}
	}
}

func TestRebuildPublishesOnlyChanges(t *testing.T) {
	s, src := newTestServer(t, DefaultConfig())
	ctx := context.Background()
	ch, cancel := s.hub.subscribe()
	defer cancel()
	versions := func() []uint64 {
		var out []uint64
		for {
			select {
			case v := <-ch:
				out = append(out, v)
			default:
				return out
			}
		}
	}
	s.Update(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}))
	_ = s.rebuild(ctx)
	if got := versions(); len(got) != 1 || got[0] != 1 {
		t.Fatalf("first map: published %v, want [1]", got)
	}
	s.Update(fixtureSnapshot(t, 2, fixtureOpts{webReplicas: 3}))
	_ = s.rebuild(ctx)
	if got := versions(); len(got) != 0 {
		t.Errorf("a new snapshot with the same content published %v", got)
	}
	if s.Map().Generation != 2 {
		t.Errorf("the map keeps generation %d, want 2", s.Map().Generation)
	}
	src.mu.Lock()
	src.anns[0].Node = "node-b"
	src.mu.Unlock()
	_ = s.rebuild(ctx)
	if got := versions(); len(got) != 1 || got[0] != 2 {
		t.Errorf("an IP moving to another node published %v, want [2]", got)
	}
}

func TestServerComputesRouteRates(t *testing.T) {
	cfg := DefaultConfig()
	cfg.RefreshInterval = 2 * time.Second
	s, src := newTestServer(t, cfg)
	now := fixtureTime
	s.now = func() time.Time { return now }
	s.Update(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}))
	_ = s.rebuild(context.Background())
	src.mu.Lock()
	src.routes[0].Requests += 100 // over 4 s: 25 req/s
	src.routes[0].Errors += 8     // 2 errors/s
	src.mu.Unlock()
	now = now.Add(4 * time.Second)
	_ = s.rebuild(context.Background())
	e := edgeSet(s.Map())[`route:shop/shop:shop.example.com"/" > svc:shop/web`]
	if e.RequestRate == nil || *e.RequestRate != 25 || *e.ErrorRate != 2 {
		t.Fatalf("route edge %+v, want 25 req/s and 2 errors/s", e)
	}
	if h := nodesByID(s.Map())[`route:shop/shop:shop.example.com"/"`].Health; h != HealthErrors {
		t.Errorf("8%% errors with a 5%% threshold: route health %q", h)
	}
}

func TestSecurityHeaders(t *testing.T) {
	s, _ := newTestServer(t, DefaultConfig())
	for _, target := range []string{"/", "/app.js", "/api/map", "/api/view", "/nope"} {
		rec := get(t, s.Handler(), "GET", target)
		hd := rec.Header()
		csp := hd.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", target, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q allows unsafe or remote sources", target, csp)
		}
		for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin"} {
			if hd.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", target, k, hd.Get(k), v)
			}
		}
		if strings.HasPrefix(target, "/api/") && hd.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", target, hd.Get("Cache-Control"))
		}
	}
	// The CSP forbids inline code, so the page must have none; and it must load nothing remote.
	page := get(t, s.Handler(), "GET", "/").Body.String()
	for _, re := range []string{`<script>`, `<script(?:\s+[^>]*)?>\s*[^<\s]`, `\sstyle=`, `\son[a-z]+=`, `https?://`} {
		if regexp.MustCompile(re).MatchString(page) {
			t.Errorf("index.html matches %s, which the CSP or offline use forbids", re)
		}
	}
	for _, asset := range []string{"/app.js", "/style.css"} {
		body := get(t, s.Handler(), "GET", asset).Body.String()
		if m := regexp.MustCompile(`https?://[^'"\s]*`).FindAllString(body, -1); len(m) > 0 && !(len(m) == 1 && m[0] == "http://www.w3.org/2000/svg") {
			t.Errorf("%s refers to remote URLs %v", asset, m)
		}
	}
}

func TestNonGETRefused(t *testing.T) {
	s, _ := newTestServer(t, DefaultConfig())
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"} {
		for _, target := range []string{"/", "/api/map", "/api/events", "/nope"} {
			rec := get(t, s.Handler(), method, target)
			if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
				t.Errorf("%s %s: status %d, Allow %q; want 405 with Allow: GET, HEAD", method, target, rec.Code, rec.Header().Get("Allow"))
			}
		}
	}
}

func TestLoopbackListenerRefusesForeignHosts(t *testing.T) {
	s, _ := newTestServer(t, DefaultConfig())
	h := loopbackHostOnly(s.Handler())
	for host, want := range map[string]int{"127.0.0.1:9711": 200, "localhost:9711": 200, "[::1]:9711": 200, "localhost": 200,
		"evil.example:9711": 421, "127.0.0.1.nip.io": 421, "": 421} {
		req := httptest.NewRequest("GET", "/api/status", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: status %d, want %d", host, rec.Code, want)
		}
	}
}

// runServer runs s on loopback until the test ends and returns its base URL.
func runServer(t *testing.T, s *Server) (string, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the server did not start listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "http://" + s.Addrs()[0], cancel
}

type sseEvent struct{ name, data string }

func readEvents(r io.Reader, out chan<- sseEvent) {
	sc := bufio.NewScanner(r)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.name != "" {
				out <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
	close(out)
}

func nextEvent(t *testing.T, ch <-chan sseEvent) (version, generation uint64) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the event stream ended")
		}
		var d struct{ Version, Generation uint64 }
		if ev.name != "map" || json.Unmarshal([]byte(ev.data), &d) != nil {
			t.Fatalf("unexpected event %+v", ev)
		}
		return d.Version, d.Generation
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return 0, 0
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestEventStream(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	s, _ := newTestServer(t, cfg)
	s.Update(fixtureSnapshot(t, 1, fixtureOpts{webReplicas: 3}))
	base, _ := runServer(t, s)
	eventually(t, "first map built", func() bool { return s.Map().Generation == 1 })
	baseline := runtime.NumGoroutine()

	tr := &http.Transport{DisableKeepAlives: true}
	client := &http.Client{Transport: tr}
	ctx, disconnect := context.WithCancel(context.Background())
	defer disconnect()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/events", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("stream headers: %v", resp.Header)
	}
	events := make(chan sseEvent, 16)
	go readEvents(resp.Body, events)

	v0, gen := nextEvent(t, events)
	if v0 != 1 || gen != 1 {
		t.Errorf("first event: version %d generation %d, want the current map (1, 1)", v0, gen)
	}
	if n := s.hub.count(); n != 1 {
		t.Errorf("%d subscribers, want 1", n)
	}
	s.Update(fixtureSnapshot(t, 2, fixtureOpts{webReplicas: 5}))
	if v, gen := nextEvent(t, events); v != 2 || gen != 2 {
		t.Errorf("after scaling: version %d generation %d, want 2, 2", v, gen)
	}

	disconnect()
	_ = resp.Body.Close()
	tr.CloseIdleConnections()
	eventually(t, "the stream's subscription released", func() bool { return s.hub.count() == 0 })
	eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

func TestShutdownEndsStreams(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Address = "127.0.0.1:0"
	s, _ := newTestServer(t, cfg)
	base, stop := runServer(t, s)
	resp, err := http.Get(base + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan sseEvent, 4)
	go readEvents(resp.Body, events)
	nextEvent(t, events)
	stop()
	select {
	case _, ok := <-events:
		if ok {
			t.Error("an event after shutdown")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream stayed open after shutdown")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		err  string
	}{
		{"defaults", nil, ""},
		{"ipv6 loopback", []string{"--ui-address=[::1]:9711"}, ""},
		{"public address refused", []string{"--ui-address=0.0.0.0:9711"}, "use --ui-unauthenticated-address"},
		{"name refused", []string{"--ui-address=example.com:9711"}, "not an IP address"},
		{"unauthenticated explicit", []string{"--ui-address=", "--ui-unauthenticated-address=0.0.0.0:9711"}, ""},
		{"nowhere", []string{"--ui-address="}, "nowhere to listen"},
		{"bad port", []string{"--ui-unauthenticated-address=0.0.0.0"}, "missing port"},
		{"threshold", []string{"--ui-error-threshold=2"}, "between 0 and 1"},
		{"interval", []string{"--ui-refresh-interval=0s"}, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			cfg.AddFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.err)
			}
			if tc.err != "" {
				if _, err := New(cfg, cluster.Deps{}, Sources{}); err == nil {
					t.Error("New accepted an invalid config")
				}
			}
		})
	}
}
