package proxy

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/baregate/baregate/ingress/annotations"
	"github.com/baregate/baregate/ingress/route"
)

// forwardAuth asks the auth-url service about a request, as nginx's auth_request does: a GET (or
// auth-method) with the client's headers and no body. A 2xx lets the request through with the
// auth-response-headers copied onto it; 401 redirects to auth-signin (or is passed on with its
// WWW-Authenticate), 403 is passed on, and anything else, including an unreachable service, is 500.
func (h *handler) forwardAuth(w http.ResponseWriter, r *http.Request, st *state, pol *route.Policy, vars annotations.Vars, ip netip.Addr) (int, bool) {
	a := pol.Nginx.ForwardAuth
	resp, err := h.authRequest(r, st, pol, vars, ip)
	if err != nil {
		h.p.opts.Logger.V(2).Info("Auth subrequest failed", "url", a.URL, "err", err)
		h.plain(w, http.StatusInternalServerError, "the authentication service could not be asked")
		return http.StatusInternalServerError, false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		for _, k := range a.ResponseHeaders {
			if v, ok := resp.Header[k]; ok {
				r.Header[k] = v
			}
		}
		return 0, true
	case code == http.StatusUnauthorized:
		if loc := a.SigninURL(vars); loc != "" {
			return h.redirect(w, loc, http.StatusFound), false
		}
		if v := resp.Header.Values("WWW-Authenticate"); len(v) > 0 {
			w.Header()["Www-Authenticate"] = v
		}
		h.plain(w, code, "authentication required")
		return code, false
	case code == http.StatusForbidden:
		h.plain(w, code, "the authentication service refused this request")
		return code, false
	}
	h.plain(w, http.StatusInternalServerError, "the authentication service answered "+resp.Status)
	return http.StatusInternalServerError, false
}

func (h *handler) authRequest(r *http.Request, st *state, pol *route.Policy, vars annotations.Vars, ip netip.Addr) (*http.Response, error) {
	a := pol.Nginx.ForwardAuth
	u, err := url.Parse(annotations.Expand(a.URL, vars))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.p.timeouts.read)
	req, err := http.NewRequestWithContext(ctx, a.Method, u.String(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	for _, k := range hopHeaders {
		req.Header.Del(k)
	}
	req.Header.Del("Content-Length")
	hdr := req.Header
	hdr.Set("X-Original-URL", vars.Scheme+"://"+r.Host+vars.RequestURI)
	hdr.Set("X-Original-Method", r.Method)
	hdr.Set("X-Sent-From", "nginx-ingress-controller") // auth services written for ingress-nginx look for it
	hdr.Set("X-Real-IP", ip.String())
	hdr.Set("X-Forwarded-For", ip.String())
	hdr.Set("X-Forwarded-Proto", vars.Scheme)
	hdr.Set("X-Forwarded-Host", r.Host)
	hdr.Set("X-Auth-Request-Redirect", vars.RequestURI)
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = []string{""}
	}
	transport := http.RoundTripper(h.p.authTransport)
	if be := pol.AuthBackend; be != nil {
		// A cluster Service: go straight to one of its endpoints, keeping the Host header.
		pl := st.pools[be.ID]
		ep := pl.pick(h.p.opts.Balance, nil, time.Now())
		if ep == nil {
			cancel()
			return nil, errNoAuthEndpoints
		}
		req.Host = u.Host
		req.URL.Host = ep.hostport
		if u.Scheme == "https" {
			transport, _ = h.p.transportFor("HTTPS", false, h.p.timeouts)
		} else {
			transport = h.p.http1
		}
	}
	resp, err := transport.RoundTrip(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

type authError string

func (e authError) Error() string { return string(e) }

const errNoAuthEndpoints = authError("the auth-url Service has no ready endpoints")
