package acme

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// maxRetryInterval caps the back-off between failed orders of one host.
const maxRetryInterval = time.Hour

func keyOf(ing *networkingv1.Ingress) types.NamespacedName {
	return types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
}

// syncHost serves the cached certificate of h when it is fresh, and otherwise orders one under the Lease.
func (m *Manager) syncHost(ctx context.Context, h Host) error {
	st := m.stateOf(h.Name)
	m.mu.Lock()
	cert, nextTry := st.cert, st.nextTry
	m.mu.Unlock()
	if m.due(cert) { // another replica or an earlier run may have it
		c, err := m.load(ctx, h.Name)
		if err != nil {
			return err
		}
		if c != nil {
			m.update(st, func(st *hostState) { st.cert = c })
			cert = c
		}
	}
	if !m.due(cert) {
		return m.writeSecret(ctx, h, st)
	}
	if time.Now().Before(nextTry) {
		return nil
	}
	release, err := m.lease.acquire(ctx)
	if err != nil {
		return err // errLeaseHeld included: the runner retries soon, by then the holder is done
	}
	defer release()
	// The previous holder of the Lease may have ordered it just now, or failed to.
	if c, err := m.load(ctx, h.Name); err != nil || (c != nil && !m.due(c)) {
		if c != nil {
			m.update(st, func(st *hostState) { st.cert = c })
			return m.writeSecret(ctx, h, st)
		}
		return err
	}
	if f, err := m.loadFailure(ctx, h.Name); err != nil || (f != nil && time.Now().Before(f.NextTry)) {
		if f != nil {
			m.update(st, func(st *hostState) { st.lastErr, st.nextTry, st.failures = f.Error, f.NextTry, f.Failures })
		}
		return err
	}
	return m.order(ctx, h, st)
}

// order orders a certificate for h; a failure is recorded (for every replica) and reported, and the
// host waits out its back-off.
func (m *Manager) order(ctx context.Context, h Host, st *hostState) error {
	logger := klog.FromContext(ctx)
	start := time.Now()
	m.update(st, func(st *hostState) { st.lastAttempt = start })
	logger.Info("Ordering an ACME certificate", "host", h.Name, "ingress", keyOf(h.Ingress), "directory", m.cfg.DirectoryURL)
	cert, err := m.obtain(h.Name)
	if err != nil {
		var f failure
		m.update(st, func(st *hostState) {
			st.failures++
			st.lastErr = err.Error()
			st.nextTry = time.Now().Add(min(m.cfg.RetryInterval<<min(st.failures-1, 10), maxRetryInterval))
			f = failure{Error: st.lastErr, NextTry: st.nextTry, Failures: st.failures}
		})
		logger.Error(err, "ACME order failed", "host", h.Name, "retryAt", f.NextTry)
		m.event(h.Ingress, corev1.EventTypeWarning, "ACMEOrderFailed", "Ordering a certificate for %s failed (retry at %s): %v", h.Name, f.NextTry.Format(time.RFC3339), err)
		if data, jerr := json.Marshal(f); jerr == nil {
			if perr := m.cache.Put(ctx, failureKey(h.Name), data); perr != nil {
				logger.Error(perr, "Recording the ACME failure for other replicas", "host", h.Name)
			}
		}
		return nil
	}
	m.update(st, func(st *hostState) { st.cert, st.failures, st.lastErr, st.nextTry = cert, 0, "", time.Time{} })
	// autocert ignores a failed cache write; the other replicas need the entry.
	if c, err := m.load(ctx, h.Name); err != nil || c == nil || !c.Leaf.Equal(cert.Leaf) {
		if data, err := cacheEntry(cert); err == nil {
			if err := m.cache.Put(ctx, h.Name, data); err != nil {
				logger.Error(err, "Storing the ACME certificate for other replicas", "host", h.Name)
			}
		}
	}
	if err := m.cache.Delete(ctx, failureKey(h.Name)); err != nil {
		logger.Error(err, "Clearing the recorded ACME failure", "host", h.Name)
	}
	logger.Info("ACME certificate issued", "host", h.Name, "notAfter", cert.Leaf.NotAfter, "took", time.Since(start))
	m.event(h.Ingress, corev1.EventTypeNormal, "ACMECertificateIssued", "Certificate for %s issued by the ACME CA, valid until %s", h.Name, cert.Leaf.NotAfter.Format(time.RFC3339))
	return m.writeSecret(ctx, h, st)
}

// obtain runs one autocert issuance. A fresh autocert.Manager per order, with the host's cached
// certificate hidden, makes autocert order even when a due-for-renewal certificate is cached (its own
// renewal would run outside the Lease). The throwaway Manager's renewal timer fires only after this
// Manager's renewal point (RenewBefore/2), finds the renewed certificate in the cache and orders nothing.
func (m *Manager) obtain(host string) (*tls.Certificate, error) {
	obs := &observer{next: m.transport, orders: &m.orders}
	mgr := &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       &hidingCache{Cache: m.cache, key: host},
		HostPolicy:  autocert.HostWhitelist(host),
		RenewBefore: m.cfg.RenewBefore / 2,
		Email:       m.cfg.Email,
		Client: &acme.Client{
			DirectoryURL: m.cfg.DirectoryURL,
			HTTPClient:   &http.Client{Transport: obs, Timeout: time.Minute},
			UserAgent:    "baregate",
		},
	}
	if m.cfg.HTTP01 {
		mgr.HTTPHandler(nil) // only switches http-01 on; the answers come from the cache on every replica
	}
	cert, err := mgr.GetCertificate(&tls.ClientHelloInfo{ServerName: host, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
	if err != nil {
		if ce := obs.challengeError(); ce != "" {
			err = fmt.Errorf("%w; the CA said: %s", err, ce)
		}
		return nil, fmt.Errorf("ordering from %s: %w", m.cfg.DirectoryURL, err)
	}
	return cert, nil
}

// load returns the cached certificate of host if it is valid now, or nil.
func (m *Manager) load(ctx context.Context, host string) (*tls.Certificate, error) {
	data, err := m.cache.Get(ctx, host)
	if errors.Is(err, autocert.ErrCacheMiss) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c, err := parseCacheEntry(data)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Ignoring the cached ACME certificate", "host", host)
		return nil, nil
	}
	now := time.Now()
	if now.Before(c.Leaf.NotBefore) || !now.Before(c.Leaf.NotAfter) || c.Leaf.VerifyHostname(host) != nil {
		return nil, nil
	}
	return c, nil
}

// parseCacheEntry reads autocert's cache format: the private key PEM block, then the chain.
func parseCacheEntry(data []byte) (*tls.Certificate, error) {
	key, rest := pem.Decode(data)
	if key == nil {
		return nil, errors.New("no PEM data")
	}
	c, err := tls.X509KeyPair(rest, pem.EncodeToMemory(key))
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// failure is what a replica records in the cache when an order fails, so that the next holder of
// the Lease waits out the back-off instead of ordering again at once.
type failure struct {
	Error    string    `json:"error"`
	NextTry  time.Time `json:"nextTry"`
	Failures int       `json:"failures"`
}

func failureKey(host string) string { return host + "+baregate-failure" }

func (m *Manager) loadFailure(ctx context.Context, host string) (*failure, error) {
	data, err := m.cache.Get(ctx, failureKey(host))
	if errors.Is(err, autocert.ErrCacheMiss) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f failure
	if json.Unmarshal(data, &f) != nil {
		return nil, nil
	}
	return &f, nil
}

func (m *Manager) event(ing *networkingv1.Ingress, typ, reason, format string, args ...any) {
	if m.deps.Recorder != nil {
		m.deps.Recorder.Eventf(ing, typ, reason, format, args...)
	}
}

// hidingCache hides one key's entry until it is written, so that autocert orders a new certificate.
type hidingCache struct {
	autocert.Cache
	key string

	mu      sync.Mutex
	written bool
}

func (c *hidingCache) Get(ctx context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	hidden := key == c.key && !c.written
	c.mu.Unlock()
	if hidden {
		return nil, autocert.ErrCacheMiss
	}
	return c.Cache.Get(ctx, key)
}

func (c *hidingCache) Put(ctx context.Context, key string, data []byte) error {
	err := c.Cache.Put(ctx, key, data)
	if key == c.key && err == nil {
		c.mu.Lock()
		c.written = true
		c.mu.Unlock()
	}
	return err
}

// chainPEM encodes a certificate chain as tls.crt holds it.
func chainPEM(c *tls.Certificate) []byte {
	var b bytes.Buffer
	for _, der := range c.Certificate {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return b.Bytes()
}
