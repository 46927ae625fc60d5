package proxy

import (
	"bytes"
	"crypto/tls"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"time"
)

// timeouts are the three nginx proxy timeouts of one request.
type timeouts struct {
	connect, read, send time.Duration
}

type transportKey struct {
	protocol string // backend-protocol
	h2c      bool   // the Service port's appProtocol asks for h2c
	to       timeouts
}

// transportFor returns the shared Transport for a backend protocol and timeouts, and the URL scheme
// to use with it. HTTPS backends are not verified, as ingress-nginx's proxy_ssl_verify is off by
// default: their certificates are usually self-signed for the pod.
func (p *Proxy) transportFor(protocol string, h2c bool, to timeouts) (*http.Transport, string) {
	key := transportKey{protocol, h2c, to}
	scheme := "http"
	if protocol == "HTTPS" || protocol == "GRPCS" {
		scheme = "https"
	}
	if t, ok := p.transports.Load(key); ok {
		return t.(*http.Transport), scheme
	}
	o := p.opts
	o.ConnectTimeout, o.ReadTimeout, o.SendTimeout = to.connect, to.read, to.send
	var t *http.Transport
	switch protocol {
	case "GRPC":
		t = newTransport(o, true)
	case "HTTPS", "GRPCS":
		t = newTransport(o, false)
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // as ingress-nginx: proxy_ssl_verify off
		t.Protocols = new(http.Protocols)
		if protocol == "GRPCS" {
			t.Protocols.SetHTTP2(true)
			t.TLSClientConfig.NextProtos = []string{"h2"}
		} else {
			t.Protocols.SetHTTP1(true)
		}
	default:
		t = newTransport(o, h2c)
	}
	actual, _ := p.transports.LoadOrStore(key, t)
	return actual.(*http.Transport), scheme
}

// cookieValue is the affinity cookie naming an endpoint: a hash, so that pod addresses are not
// handed to clients.
func cookieValue(hostport string) string {
	h := fnv.New64a()
	io.WriteString(h, hostport)
	return strconv.FormatUint(h.Sum64(), 36)
}

// byCookie returns the endpoint an affinity cookie names, or nil when it is gone or down.
func (p *pool) byCookie(v string) *endpoint {
	now := time.Now().UnixNano()
	for _, e := range p.eps {
		if e.cookie == v && !e.down(now) {
			return e
		}
	}
	return nil
}

// byHash picks an endpoint for a hash key by rendezvous hashing: each key goes to the endpoint with
// the highest hash of key and address, so adding or removing an endpoint moves only its own share
// of keys (the property of nginx's consistent hash that upstream-hash-by users rely on).
func (p *pool) byHash(key string) *endpoint {
	var best *endpoint
	var bestScore uint64
	now := time.Now().UnixNano()
	for _, e := range p.eps {
		if e.down(now) {
			continue
		}
		h := fnv.New64a()
		io.WriteString(h, key)
		h.Write([]byte{0})
		io.WriteString(h, e.hostport)
		if s := h.Sum64(); best == nil || s > bestScore {
			best, bestScore = e, s
		}
	}
	return best
}

// respondBuffered reads a whole response before sending it (proxy-buffering: on), so that a slow
// client does not hold the backend; up to maxBuffered bytes, beyond which the rest is streamed.
func (h *handler) respondBuffered(w http.ResponseWriter, resp *http.Response, ep *endpoint) (int, int64, bool) {
	const maxBuffered = 64 << 20
	buf, err := io.ReadAll(io.LimitReader(resp.Body, maxBuffered+1))
	if err != nil {
		h.p.opts.Logger.V(2).Info("Reading the response body failed", "upstream", ep.hostport, "err", err)
		h.plain(w, http.StatusBadGateway, "the backend response was cut short")
		return http.StatusBadGateway, 0, false
	}
	dst := w.Header()
	if len(buf) <= maxBuffered {
		dst["Content-Length"] = []string{strconv.Itoa(len(buf))}
	}
	w.WriteHeader(resp.StatusCode)
	// In pieces: the client send timeout bounds each write, and the whole buffer may be 64 MiB.
	n, err := copyBody(w, bytes.NewReader(buf), false)
	if err != nil {
		return resp.StatusCode, n, true
	}
	if len(buf) > maxBuffered {
		m, err := copyBody(w, resp.Body, false)
		return resp.StatusCode, n + m, err != nil
	}
	return resp.StatusCode, n, false
}
