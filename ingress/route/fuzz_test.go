package route

import (
	"strings"
	"testing"

	fx "github.com/baregate/baregate/ingress/internal/fixture"
)

// specMatch is the Ingress spec's matching rule written as plainly as possible, to check the fast
// matcher against: element-wise prefixes, longest wins, Exact before Prefix on a tie; hosts exact,
// then one-label wildcard, then host-less, then the default backend.
func specMatch(t *Table, host, path string) *Route {
	host = NormalizeHost(host)
	if path == "" || path[0] != '/' {
		path = "/"
	}
	level := func(match func(h string) bool) *Route {
		var best *Route
		bestLen := -1
		for _, r := range t.Routes {
			if r.Path == "" || !match(r.Host) {
				continue
			}
			l, ok := pathMatches(r, path)
			if !ok {
				continue
			}
			if l > bestLen || l == bestLen && r.PathType == Exact && best.PathType != Exact {
				best, bestLen = r, l
			}
		}
		return best
	}
	if r := level(func(h string) bool { return h == host && h != "" }); r != nil {
		return r
	}
	if r := level(func(h string) bool {
		if !strings.HasPrefix(h, "*.") {
			return false
		}
		label, rest, ok := strings.Cut(host, ".")
		return ok && label != "" && rest == h[2:]
	}); r != nil {
		return r
	}
	if r := level(func(h string) bool { return h == "" }); r != nil {
		return r
	}
	return t.Default
}

// pathMatches reports whether route r matches path and the length (in path elements) of the match.
func pathMatches(r *Route, path string) (int, bool) {
	if r.PathType == Exact {
		return len(elements(path)) + 1, r.Path == path
	}
	want, got := elements(r.Path), elements(path)
	if len(want) > len(got) {
		return 0, false
	}
	for i := range want {
		if want[i] != got[i] {
			return 0, false
		}
	}
	return len(want), true
}

// elements splits a path into its elements, ignoring trailing slashes (the docs' "/foo/" = "/foo").
func elements(p string) []string {
	p = strings.TrimRight(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p[1:], "/")
}

func FuzzMatch(f *testing.F) {
	ing := fx.Ingress("f", 0,
		fx.Default("default", 80),
		fx.Rule("a.example.com",
			fx.Path("Exact", "/", fx.Backend("a-exact-root", 80)),
			fx.Path("Prefix", "/x", fx.Backend("a-x", 80)),
			fx.Path("Exact", "/x/y", fx.Backend("a-exact-xy", 80)),
			fx.Path("Prefix", "/x/y/z/", fx.Backend("a-xyz", 80))),
		fx.Rule("*.example.com", fx.Path("Prefix", "/", fx.Backend("wild", 80)), fx.Path("Exact", "/x/y/", fx.Backend("wild-exact", 80))),
		fx.Rule("", fx.Path("Prefix", "/any/thing", fx.Backend("any", 80)), fx.Path("ImplementationSpecific", "/impl", fx.Backend("impl", 80))),
	)
	tbl, problems := Build(served(ing))
	if len(problems) != 0 {
		f.Fatal(problems)
	}
	for _, seed := range [][2]string{
		{"a.example.com", "/"}, {"a.example.com", "/x/y"}, {"a.example.com", "/x/y/"}, {"b.example.com", "/x/y/"},
		{"a.example.com:80", "/x/y/z"}, {"A.EXAMPLE.COM", "/x//y"}, {"c.b.example.com", "/any/thing/"}, {"", ""},
		{"[::1]", "/impl/x"}, {"example.com", "/anything"}, {"x.example.com.", "//"}, {".example.com", "/x"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, host, path string) {
		got, want := tbl.Match(host, path), specMatch(tbl, host, path)
		if got != want {
			t.Errorf("Host %q path %q: matcher chose %v, the spec %v", host, path, describe(got), describe(want))
		}
	})
}

func describe(r *Route) string {
	if r == nil {
		return "404"
	}
	return r.Host + " " + r.PathType + " " + r.Path + " -> " + r.Backend.Service.Name
}

// FuzzBuild feeds arbitrary hosts, paths and path types through Build: it must never panic, and a
// rule it accepts (no Problem) must route a request for exactly that host and path to itself.
func FuzzBuild(f *testing.F) {
	for _, s := range [][3]string{
		{"foo.bar.com", "/foo", "Exact"}, {"*.foo.com", "/a/b/", "Prefix"}, {"", "/", "ImplementationSpecific"},
		{"Foo.COM", "/x?y", "Exact"}, {"*.*.com", "/", "Prefix"}, {"a..b", "//", "Prefix"}, {"x.com", "", "ImplementationSpecific"},
		{"x.com", "/api(/|$)", "ImplementationSpecific"}, {"x.com", "nope", "Prefix"}, {"x.com", "/%20", "Bogus"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, host, path, pathType string) {
		ing := fx.Ingress("f", 0, fx.Rule(host, fx.Path(pathType, path, fx.Backend("web", 80))))
		tbl, problems := Build(served(ing))
		if len(problems) > 0 {
			return
		}
		if len(tbl.Routes) != 1 {
			t.Fatalf("no problem reported, but %d routes", len(tbl.Routes))
		}
		reqHost := strings.ToLower(host)
		if strings.HasPrefix(reqHost, "*.") {
			reqHost = "x" + reqHost[1:]
		}
		reqPath := path
		if reqPath == "" {
			reqPath = "/"
		}
		if got := tbl.Match(reqHost, reqPath); got != tbl.Routes[0] {
			t.Errorf("rule host %q path %q (%s) does not route a request for host %q path %q", host, path, pathType, reqHost, reqPath)
		}
	})
}
