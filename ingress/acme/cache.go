// Package acme obtains certificates for the hosts of served Ingresses from an ACME CA (autocert), shares
// them and the challenge answers between gateway replicas through Secrets, and serializes orders with a Lease.
package acme

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"golang.org/x/crypto/acme/autocert"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Labels and annotations baregate puts on the Secrets it writes.
const (
	// CacheLabel marks the Secrets that hold autocert's cache entries.
	CacheLabel = "baregate.io/acme-cache"
	// CacheKeyAnnotation holds the autocert cache key a Secret stores (Secret names cannot hold it as is).
	CacheKeyAnnotation = "baregate.io/acme-cache-key"
	// ManagedLabel marks kubernetes.io/tls Secrets that baregate writes and may overwrite.
	ManagedLabel = "baregate.io/acme-managed"
	// HostAnnotation names the host a managed kubernetes.io/tls Secret holds the certificate of.
	HostAnnotation = "baregate.io/acme-host"

	cacheDataKey = "data"
	namePrefix   = "baregate-acme-"
)

// SecretCache is an autocert.Cache that keeps each entry (certificates, the account key, the answers
// to pending challenges) in its own Secret of one namespace, so every gateway replica sees the same
// state: whichever replica orders a certificate, all of them can answer the CA's challenges.
type SecretCache struct {
	Client    kubernetes.Interface
	Namespace string
}

var _ autocert.Cache = (*SecretCache)(nil)

// CacheSecretName maps an autocert cache key (a host name, "acme_account+key", "<token>+http-01",
// "<host>+token" ...) to a valid Secret name. Keys hold characters Secret names may not (upper case,
// '+', '_'), so the readable part is sanitized and a hash of the exact key keeps names distinct.
func CacheSecretName(key string) string {
	sum := sha256.Sum256([]byte(key))
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(key) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	readable := strings.TrimRight(b.String(), "-")
	// Room for the prefix, the hash and its dash within the 253 characters of a Secret name.
	if limit := 253 - len(namePrefix) - 1 - 16; len(readable) > limit {
		readable = strings.TrimRight(readable[:limit], "-")
	}
	if readable == "" {
		return namePrefix + hex.EncodeToString(sum[:8])
	}
	return namePrefix + readable + "-" + hex.EncodeToString(sum[:8])
}

// Get implements autocert.Cache.
func (c *SecretCache) Get(ctx context.Context, key string) ([]byte, error) {
	s, err := c.Client.CoreV1().Secrets(c.Namespace).Get(ctx, CacheSecretName(key), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, autocert.ErrCacheMiss
	}
	if err != nil {
		return nil, fmt.Errorf("reading ACME cache entry %q: %w", key, err)
	}
	if s.Annotations[CacheKeyAnnotation] != key {
		return nil, autocert.ErrCacheMiss // another key's Secret (a hash collision, or foreign)
	}
	data, ok := s.Data[cacheDataKey]
	if !ok {
		return nil, autocert.ErrCacheMiss
	}
	return data, nil
}

// Put implements autocert.Cache.
func (c *SecretCache) Put(ctx context.Context, key string, data []byte) error {
	secrets := c.Client.CoreV1().Secrets(c.Namespace)
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:        CacheSecretName(key),
			Namespace:   c.Namespace,
			Labels:      map[string]string{CacheLabel: "true"},
			Annotations: map[string]string{CacheKeyAnnotation: key},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{cacheDataKey: data},
	}
	for range 3 { // a concurrent writer of the same key makes the update conflict: read again and retry
		cur, err := secrets.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if _, err = secrets.Create(ctx, want, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
				return wrapPut(key, err)
			}
			continue
		}
		if err != nil {
			return wrapPut(key, err)
		}
		cur = cur.DeepCopy()
		cur.Labels, cur.Annotations, cur.Data = want.Labels, want.Annotations, want.Data
		if _, err = secrets.Update(ctx, cur, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
			return wrapPut(key, err)
		}
	}
	return fmt.Errorf("writing ACME cache entry %q: kept conflicting with other writers", key)
}

func wrapPut(key string, err error) error {
	if err != nil {
		return fmt.Errorf("writing ACME cache entry %q: %w", key, err)
	}
	return nil
}

// Delete implements autocert.Cache.
func (c *SecretCache) Delete(ctx context.Context, key string) error {
	err := c.Client.CoreV1().Secrets(c.Namespace).Delete(ctx, CacheSecretName(key), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ACME cache entry %q: %w", key, err)
	}
	return nil
}
