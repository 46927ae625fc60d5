package annotations

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1m", "8k", "2G", "10mb", "-1", "9223372036854775807k", "", "1.5m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if back, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || back != n {
			t.Fatalf("%d does not round-trip: %d, %v", n, back, err)
		}
	})
}

func FuzzParseNginxDuration(f *testing.F) {
	for _, s := range []string{"60", "5s", "1h 30m", "500ms", "1y1M1w1d1h1m1s1ms", "30m1h", "106752d", "1m 30", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseNginxDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseNginxDuration(%q) = %v", s, d)
		}
		if d%time.Millisecond == 0 {
			if back, err := ParseNginxDuration(strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"); err != nil || back != d {
				t.Fatalf("%v does not round-trip: %v, %v", d, back, err)
			}
		}
	})
}

func FuzzParseCIDRList(f *testing.F) {
	for _, s := range []string{"192.0.2.0/24, 2001:db8::1", "::ffff:192.0.2.0/120", "192.0.2.1/24", "fe80::1%eth0", ",", "0.0.0.0/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		list, err := ParseCIDRList(s)
		if err != nil {
			return
		}
		var strs []string
		for _, p := range list {
			if !p.IsValid() || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("ParseCIDRList(%q) gave %v", s, p)
			}
			if !(&Policy{AllowSourceRange: list}).SourceAllowed(p.Addr()) {
				t.Fatalf("%v not allowed by its own list", p.Addr())
			}
			strs = append(strs, p.String())
		}
		back, err := ParseCIDRList(strings.Join(strs, ","))
		if err != nil || len(back) != len(list) {
			t.Fatalf("%q does not round-trip: %v, %v", s, back, err)
		}
	})
}

// FuzzRewrite: a path regex and target from the user never panic, and a rewritten path always starts
// with "/" and contains the target's literal text.
func FuzzRewrite(f *testing.F) {
	f.Add("/something(/|$)(.*)", "/$2", "/something/new")
	f.Add("/(a", "/$1", "/a")
	f.Add("/v1/([a-z]+)", "/api/${1}/x", "/v1/users")
	f.Add("/(?i)x", "$1", "/X")
	f.Fuzz(func(t *testing.T, match, target, path string) {
		p, _ := Parse(ingress(map[string]string{"rewrite-target": target}, match), nil)
		got := p.Rewrite(path, match)
		if p.RewriteTarget == "" || !p.MatchPath(path, match) {
			if got != path {
				t.Fatalf("Rewrite without a match changed %q to %q", path, got)
			}
			return
		}
		if !strings.HasPrefix(got, "/") {
			t.Fatalf("Rewrite(%q, %q) with %q = %q", path, match, target, got)
		}
	})
}

func FuzzParseHtpasswd(f *testing.F) {
	f.Add("alice:$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password")
	f.Add("x:$2y$05$abcdefghijklmnopqrstuuN4VqhGZm3UcnTgZ0qMZt4Q0L2Vj2Ypm\r\n# c\n:{PLAIN}", "")
	f.Add("u:{SSHA}AAAAAAAAAAAAAAAAAAAAAAAAAAAA\nu:$1$$", "pw")
	f.Fuzz(func(t *testing.T, file, pw string) {
		users, bad := ParseHtpasswd(file)
		for u, h := range users {
			if u == "" || strings.Contains(u, ":") || strings.Contains(u, "\n") {
				t.Fatalf("bad user name %q", u)
			}
			if h.scheme != "bcrypt" { // bcrypt is slow by design; its parsing is what is fuzzed here
				h.Verify(pw)
			}
		}
		for _, m := range bad {
			if m == "" {
				t.Fatal("empty message")
			}
		}
	})
}

// FuzzCookieOptions: whatever the session-cookie-* annotations say, the cookie the proxy would set is
// well formed and reads back with the same name and value.
func FuzzCookieOptions(f *testing.F) {
	f.Add("route", "/app", "3600", "172800", "None", "true")
	f.Add("a=b", "app", "-1", "1d", "Sometimes", "yes")
	f.Add("", "/;x", "99999999999", "0", "lax", "1")
	f.Fuzz(func(t *testing.T, name, path, maxAge, expires, sameSite, secure string) {
		p, _ := Parse(ingress(map[string]string{"affinity": "cookie", "session-cookie-name": name, "session-cookie-path": path,
			"session-cookie-max-age": maxAge, "session-cookie-expires": expires, "session-cookie-samesite": sameSite,
			"session-cookie-secure": secure}, "/"), nil)
		c := p.Affinity.Cookie("ep-1", "/", "", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		if err := c.Valid(); err != nil {
			t.Fatalf("cookie %+v invalid: %v", c, err)
		}
		back, err := http.ParseSetCookie(c.String())
		if err != nil || back.Name != c.Name || back.Value != "ep-1" || back.Path != c.Path {
			t.Fatalf("cookie %q reads back as %+v, %v", c.String(), back, err)
		}
	})
}

// FuzzParse: any annotations at all give a Policy and Problems that only name annotations the
// Ingress has, each with a reason and a message.
func FuzzParse(f *testing.F) {
	f.Add("proxy-body-size", "8m", "allowlist-source-range", "10.0.0.0/8")
	f.Add("enable-cors", "true", "cors-allow-origin", "https://*.example.com")
	f.Add("canary", "true", "canary-by-header-pattern", "(")
	f.Add("auth-type", "basic", "auth-secret", "other/x")
	f.Add("baregate.io/ssl-redirect", "false", "ssl-redirect", "true")
	f.Add("configuration-snippet", "x", "mystery", "y")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		ing := ingress(map[string]string{k1: v1, k2: v2}, "/", "/(x")
		p, probs := Parse(ing, nil)
		if p == nil {
			t.Fatal("nil policy")
		}
		for _, pr := range probs {
			if _, ok := ing.Annotations[pr.Annotation]; !ok || pr.Reason == "" || pr.Message == "" {
				t.Fatalf("problem %+v does not name an annotation of %v", pr, ing.Annotations)
			}
		}
		if p.AllowSourceRange != nil || p.DenySourceRange != nil {
			p.SourceAllowed(netip.MustParseAddr("192.0.2.1"))
		}
	})
}
