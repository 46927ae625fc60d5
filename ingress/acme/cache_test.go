package acme

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/acme/autocert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
)

func TestCacheSecretName(t *testing.T) {
	keys := []string{
		"shop.example.com", "shop.example.com+rsa", "shop.example.com+token", "acme_account+key", "acme_account.key",
		"Xy_9-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789+http-01", "xy_9-abcdefghijklmnopqrstuvwxyz0123456789+http-01",
		"", "+", "---", strings.Repeat("a.", 200) + "com", "ÄÖÜ.example", "shop.example.com+baregate-failure",
	}
	seen := map[string]string{}
	for _, k := range keys {
		n := CacheSecretName(k)
		if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
			t.Errorf("CacheSecretName(%q) = %q: not a valid Secret name: %v", k, n, errs)
		}
		if other, dup := seen[n]; dup {
			t.Errorf("keys %q and %q share the Secret name %q", k, other, n)
		}
		seen[n] = k
		if CacheSecretName(k) != n {
			t.Errorf("CacheSecretName(%q) is not stable", k)
		}
	}
	if n := CacheSecretName("shop.example.com"); !strings.HasPrefix(n, "baregate-acme-shop-example-com-") {
		t.Errorf("name %q does not show the host", n)
	}
}

func FuzzCacheSecretName(f *testing.F) {
	for _, s := range []string{"shop.example.com+token", "acme_account+key", "", "A_b-C+http-01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if errs := validation.IsDNS1123Subdomain(CacheSecretName(key)); len(errs) > 0 {
			t.Errorf("CacheSecretName(%q): %v", key, errs)
		}
	})
}

func TestSecretCacheRoundTrip(t *testing.T) {
	ctx := context.Background()
	client := fake.NewClientset()
	c := &SecretCache{Client: client, Namespace: "baregate-system"}
	if _, err := c.Get(ctx, "shop.example.com"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Fatalf("Get of a missing key: %v, want ErrCacheMiss", err)
	}
	for _, data := range []string{"first", "second"} { // create, then update
		if err := c.Put(ctx, "Tok_EN+http-01", []byte(data)); err != nil {
			t.Fatal(err)
		}
		got, err := c.Get(ctx, "Tok_EN+http-01")
		if err != nil || string(got) != data {
			t.Fatalf("Get after Put(%q) = %q, %v", data, got, err)
		}
	}
	// A key differing only in case is a different entry.
	if _, err := c.Get(ctx, "tok_en+http-01"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("Get of a key differing in case: %v, want ErrCacheMiss", err)
	}
	s, err := client.CoreV1().Secrets("baregate-system").Get(ctx, CacheSecretName("Tok_EN+http-01"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Labels[CacheLabel] != "true" || s.Annotations[CacheKeyAnnotation] != "Tok_EN+http-01" {
		t.Errorf("cache Secret metadata: labels %v annotations %v", s.Labels, s.Annotations)
	}
	if err := c.Delete(ctx, "Tok_EN+http-01"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "Tok_EN+http-01"); err != nil {
		t.Errorf("deleting a missing entry: %v", err)
	}
	if _, err := c.Get(ctx, "Tok_EN+http-01"); !errors.Is(err, autocert.ErrCacheMiss) {
		t.Errorf("Get after Delete: %v, want ErrCacheMiss", err)
	}
}
