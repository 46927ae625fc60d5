package echo

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/gorilla/websocket"
)

// Response is what the echo mode answers, the shape of the conformance echo images' answer.
type Response struct {
	Path      string      `json:"path"`
	Host      string      `json:"host"`
	Method    string      `json:"method"`
	Proto     string      `json:"proto"`
	Headers   http.Header `json:"headers"`
	Namespace string      `json:"namespace"`
	Ingress   string      `json:"ingress"`
	Service   string      `json:"service"`
	Pod       string      `json:"pod"`
	TLS       *TLS        `json:"tls,omitempty"`
}

// TLS describes the TLS connection of a request, when it came over one.
type TLS struct {
	Version            string `json:"version"`
	ServerName         string `json:"serverName"`
	NegotiatedProtocol string `json:"negotiatedProtocol"`
	CipherSuite        string `json:"cipherSuite"`
}

// ServeHTTP dispatches by protocol first (gRPC, WebSocket), then by mode and path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		s.grpc.ServeHTTP(w, r)
		return
	}
	if websocket.IsWebSocketUpgrade(r) {
		s.serveWebSocket(w, r)
		return
	}
	switch s.cfg.Mode {
	case ModeStatic:
		io.WriteString(w, s.cfg.Body)
		return
	case ModeHostname:
		io.WriteString(w, s.cfg.Names.Pod)
		return
	}
	// The agnhost netexec endpoints upstream e2e workloads ask.
	switch r.URL.Path {
	case "/health", "/healthz":
		io.WriteString(w, "ok")
		return
	case "/hostname":
		io.WriteString(w, s.cfg.Names.Pod)
		return
	case "/clientip":
		io.WriteString(w, r.RemoteAddr)
		return
	case "/echo":
		io.WriteString(w, r.URL.Query().Get("msg"))
		return
	}
	resp := Response{
		Path:      r.RequestURI,
		Host:      r.Host,
		Method:    r.Method,
		Proto:     r.Proto,
		Headers:   r.Header,
		Namespace: s.cfg.Names.Namespace,
		Ingress:   s.cfg.Names.Ingress,
		Service:   s.cfg.Names.Service,
		Pod:       s.cfg.Names.Pod,
	}
	if r.TLS != nil {
		resp.TLS = &TLS{
			Version:            tls.VersionName(r.TLS.Version),
			ServerName:         r.TLS.ServerName,
			NegotiatedProtocol: r.TLS.NegotiatedProtocol,
			CipherSuite:        tls.CipherSuiteName(r.TLS.CipherSuite),
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(resp)
}

// serveWebSocket echoes every message back with its type until the peer closes or the server stops.
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	c, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client with the error.
	}
	defer c.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-s.stopping:
			c.Close()
		case <-done:
		}
	}()
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}
