package proxy

import (
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/baregate/baregate/ingress/annotations"
	"github.com/baregate/baregate/ingress/route"
)

// servePolicy serves a route whose Ingress sets annotations, in the order nginx's phases apply them:
// redirects and the CORS preflight (rewrite), rate limits (preaccess), source ranges and
// authentication (access), then the proxying with its rewrites, timeouts and balancing. It returns
// the route whose counters the request belongs to (the canary's when it went there).
func (h *handler) servePolicy(w http.ResponseWriter, r *http.Request, st *state, rt *route.Route) (used *route.Route, code int, upstream string, sent, received int64, aborted bool) {
	pol := rt.Policy
	n := pol.Nginx
	used = rt
	if rt.TLS && h.tls && pol.HSTS != nil {
		w.Header()["Strict-Transport-Security"] = pol.HSTS
	}
	if n.Denied != "" {
		h.plain(w, http.StatusServiceUnavailable, "the Ingress's access control could not be set up ("+n.Denied+"); see its Events")
		return used, http.StatusServiceUnavailable, "", 0, 0, false
	}
	host := hostOnly(r.Host)
	vars := annotations.Vars{Scheme: h.proto[0], Host: host, RequestURI: r.URL.RequestURI()}
	if n.FromToWWWRedirect && host != rt.Host && (host == "www."+rt.Host || "www."+host == rt.Host) {
		return used, h.redirect(w, vars.Scheme+"://"+rt.Host+vars.RequestURI, http.StatusPermanentRedirect), "", 0, 0, false
	}
	if loc, c := n.RedirectFor(vars, r.URL.Path, rt.TLS); c != 0 {
		return used, h.redirect(w, loc, c), "", 0, 0, false
	}
	if n.CORS != nil {
		hdr, preflight := n.CORS.Headers(r.Method, r.Header)
		dst := w.Header()
		for k, v := range hdr {
			dst[k] = v
		}
		if preflight {
			dst["Server"] = h.p.serverHdr
			w.WriteHeader(http.StatusNoContent)
			return used, http.StatusNoContent, "", 0, 0, false
		}
	}
	ip := clientAddr(r)
	if l := n.RateLimit; l != nil && !l.Exempted(ip) {
		lim := h.p.limiter(rt.Ingress, l)
		if !lim.allow(ip) {
			h.plain(w, http.StatusServiceUnavailable, "too many requests from this client (limit-rps, limit-rpm)")
			return used, http.StatusServiceUnavailable, "", 0, 0, false
		}
		if l.Connections > 0 {
			if !lim.enter(ip) {
				h.plain(w, http.StatusServiceUnavailable, "too many concurrent requests from this client (limit-connections)")
				return used, http.StatusServiceUnavailable, "", 0, 0, false
			}
			defer lim.leave(ip)
		}
	}
	if !n.SourceAllowed(ip) {
		h.plain(w, http.StatusForbidden, "this client address may not use this Ingress")
		return used, http.StatusForbidden, "", 0, 0, false
	}
	if a := n.BasicAuth; a != nil && !h.p.checkBasic(a, r.Header) {
		w.Header().Set("WWW-Authenticate", a.Challenge())
		h.plain(w, http.StatusUnauthorized, "authentication required")
		return used, http.StatusUnauthorized, "", 0, 0, false
	}
	if n.ForwardAuth != nil {
		if code, ok := h.forwardAuth(w, r, st, pol, vars, ip); !ok {
			return used, code, "", 0, 0, false
		}
	}
	if code, ok := h.limitBody(w, r, n.ProxyBodySize); !ok {
		return used, code, "", 0, 0, false
	}
	be := rt.Backend
	if c := rt.Canary; c != nil && c.Policy.Nginx.Canary.Decide(r.Header, rand.IntN) {
		used, be = c, c.Backend
	}
	pl, bs := st.pools[be.ID], st.backends[be.ID]
	if len(pl.eps) == 0 && pol.DefaultBackend != nil && len(st.pools[pol.DefaultBackend.ID].eps) > 0 {
		// default-backend serves what the route's Service cannot, as in ingress-nginx.
		be = pol.DefaultBackend
		pl, bs = st.pools[be.ID], st.backends[be.ID]
	}
	f := h.p.newFwd(r, rt, pl, ip)
	code, upstream, sent, received, aborted = h.forward(w, r, pl, bs, f)
	if f.intercepted != 0 {
		code, upstream, sent, aborted = h.customError(w, r, st, rt, f.intercepted)
	}
	return used, code, upstream, sent, received, aborted
}

// fwd is what a route's annotations change in forwarding one request.
type fwd struct {
	timeouts  timeouts
	transport *http.Transport // nil: the proxy's own (and the fast path)
	scheme    string          // of the request to the backend, with transport
	path      string          // rewritten path; "" keeps the request's
	vhost     string          // upstream-vhost
	prefix    string          // x-forwarded-prefix
	preferred *endpoint       // affinity or upstream-hash choice, tried first
	buffer    bool

	affinity    *annotations.Affinity
	cookie      string // the affinity cookie the client sent
	routePath   string
	userAgent   string
	errorCodes  []int
	intercepted int // the backend status replaced by a custom error page
}

func (p *Proxy) newFwd(r *http.Request, rt *route.Route, pl *pool, ip netip.Addr) *fwd {
	pol := rt.Policy
	n := pol.Nginx
	f := &fwd{timeouts: p.timeouts, scheme: "http", vhost: n.UpstreamVhost, prefix: n.XForwardedPrefix, buffer: n.ProxyBuffering, errorCodes: n.CustomHTTPErrors}
	if pol.ConnectTimeout > 0 {
		f.timeouts.connect = pol.ConnectTimeout
	}
	if pol.ReadTimeout > 0 {
		f.timeouts.read = pol.ReadTimeout
	}
	if pol.SendTimeout > 0 {
		f.timeouts.send = pol.SendTimeout
	}
	if n.BackendProtocol != "HTTP" {
		f.transport, f.scheme = p.transportFor(n.BackendProtocol, pl.h2c, f.timeouts)
	}
	if rt.Regex && n.RewriteTarget != "" {
		path := r.URL.Path
		if path == "" {
			path = "/" // as Match saw it
		}
		f.path = n.Rewrite(path, rt.Path)
	}
	switch {
	case n.Affinity != nil:
		f.affinity, f.routePath, f.userAgent = n.Affinity, rt.Path, r.UserAgent()
		if rt.Regex {
			f.routePath = "/" // a regular expression is no cookie path; ingress-nginx wants session-cookie-path then
		}
		if c, err := r.Cookie(n.Affinity.Name); err == nil {
			f.cookie = c.Value
			f.preferred = pl.byCookie(c.Value)
		}
	case n.UpstreamHash != nil:
		f.preferred = pl.byHash(n.UpstreamHash.Key(r, ip.String()))
	}
	return f
}

// adjust applies the request-side annotations to the request sent to the backend.
func (f *fwd) adjust(out *http.Request) {
	if f.vhost != "" {
		out.Host = f.vhost
	}
	if f.prefix != "" {
		out.Header["X-Forwarded-Prefix"] = []string{f.prefix}
	}
}

// intercept reports whether a backend response is to be replaced by a custom error page.
func (f *fwd) intercept(resp *http.Response) bool {
	if len(f.errorCodes) == 0 || !slices.Contains(f.errorCodes, resp.StatusCode) {
		return false
	}
	f.intercepted = resp.StatusCode
	resp.Body.Close()
	return true
}

// decorate adds the response headers annotations ask for: a new affinity cookie when the client had
// none or its endpoint is gone.
func (f *fwd) decorate(dst http.Header, ep *endpoint) {
	if f.affinity != nil && f.cookie != ep.cookie {
		c := f.affinity.Cookie(ep.cookie, f.routePath, f.userAgent, time.Now())
		dst["Set-Cookie"] = append(dst["Set-Cookie"], c.String())
	}
}

// customError answers with the default-backend Service (or the proxy's own page) in place of a
// backend response whose status is listed in custom-http-errors, passing ingress-nginx's X-Code
// headers so that error page servers written for it work unchanged.
func (h *handler) customError(w http.ResponseWriter, r *http.Request, st *state, rt *route.Route, status int) (int, string, int64, bool) {
	db := rt.Policy.DefaultBackend
	if db == nil || len(st.pools[db.ID].eps) == 0 {
		h.plain(w, status, "the backend answered with an error")
		return status, "", 0, false
	}
	er := r.Clone(r.Context())
	er.Method, er.Body, er.ContentLength = http.MethodGet, http.NoBody, 0
	er.Header.Del("Content-Length")
	er.Header.Del("Transfer-Encoding")
	er.Header.Set("X-Code", strconv.Itoa(status))
	er.Header.Set("X-Format", cmpOr(r.Header.Get("Accept"), "text/html"))
	er.Header.Set("X-Original-URI", r.URL.RequestURI())
	er.Header.Set("X-Namespace", rt.Ingress.Namespace)
	er.Header.Set("X-Ingress-Name", rt.Ingress.Name)
	er.Header.Set("X-Service-Name", rt.Backend.Service.Name)
	er.Header.Set("X-Service-Port", rt.Backend.Port)
	code, upstream, sent, _, aborted := h.forward(w, er, st.pools[db.ID], st.backends[db.ID], &fwd{timeouts: h.p.timeouts, scheme: "http"})
	return code, upstream, sent, aborted
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// limitBody refuses a request whose declared body is larger than limit (0: no limit) with 413, and
// bounds a body of unknown length so that the forwarding fails with 413 once it grows too large.
func (h *handler) limitBody(w http.ResponseWriter, r *http.Request, limit int64) (int, bool) {
	if limit <= 0 || r.Body == nil || r.Body == http.NoBody {
		return 0, true
	}
	if r.ContentLength > limit {
		w.Header()["Connection"] = []string{"close"} // the body is not read
		h.plain(w, http.StatusRequestEntityTooLarge, "the request body is larger than the Ingress allows (proxy-body-size)")
		return http.StatusRequestEntityTooLarge, false
	}
	if r.ContentLength < 0 {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	return 0, true
}

func (h *handler) redirect(w http.ResponseWriter, location string, code int) int {
	hdr := w.Header()
	hdr["Server"] = h.p.serverHdr
	hdr["Location"] = []string{location}
	hdr["Content-Type"] = []string{"text/html; charset=utf-8"}
	w.WriteHeader(code)
	_, _ = w.Write([]byte("<a href=\"" + htmlEscape(location) + "\">" + http.StatusText(code) + "</a>.\n"))
	return code
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;").Replace(s)
}

// hostOnly is a Host header without its port ($host).
func hostOnly(host string) string { return route.NormalizeHost(host) }

// clientAddr is the client's IP address (from the PROXY protocol header when the listener reads one).
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}
