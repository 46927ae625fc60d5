package annotations

import (
	"encoding/base64"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// TestMD5Crypt checks against hashes made by OpenSSL (openssl passwd -apr1 / -1), an independent
// implementation.
func TestMD5Crypt(t *testing.T) {
	for _, c := range []struct{ pw, salt, magic, want string }{
		{"password", "xxxxxxxx", "$apr1$", "$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0"},
		{"password", "ab", "$1$", "$1$ab$oKsM6dtDD2L1bKowOBX.7."},
		{"", "xxxxxxxx", "$apr1$", "$apr1$xxxxxxxx$AL/DOdqyMUurcg0cPNW/P1"},
		{"", "ab", "$1$", "$1$ab$rn6aQS/o7141mj179E/zA."},
		{"p@ss w0rd:üñî", "Abc/.9", "$apr1$", "$apr1$Abc/.9$cKBXv14j/d1cmB10/axAP."},
		{strings.Repeat("a", 76), "saltsalt", "$1$", "$1$saltsalt$ed3mAz/Akq8H8uTpLM4lz."},
	} {
		if got := MD5Crypt(c.pw, c.salt, c.magic); got != c.want {
			t.Errorf("MD5Crypt(%q, %q, %q) = %q, want %q", c.pw, c.salt, c.magic, got, c.want)
		}
	}
}

func TestHashVerify(t *testing.T) {
	bc, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// htpasswd -B writes $2y$, which is the same algorithm as Go's $2a$.
	bcY := "$2y$" + string(bc[4:])
	sha := "{SHA}" + "W6ph5Mm5Pz8GgiULbPgzG37mj9g=" // sha1("password")
	ssha := "{SSHA}" + base64.StdEncoding.EncodeToString(append(sha1Sum("passwordNaCl"), "NaCl"...))
	for _, c := range []struct {
		hash, pw string
		want     bool
	}{
		{string(bc), "s3cret", true}, {string(bc), "s3cret ", false}, {bcY, "s3cret", true}, {bcY, "S3cret", false},
		{"$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0", "password", true}, {"$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0", "passwore", false},
		{"$1$ab$oKsM6dtDD2L1bKowOBX.7.", "password", true}, {"$1$ab$oKsM6dtDD2L1bKowOBX.7.", "", false},
		{sha, "password", true}, {sha, "Password", false},
		{ssha, "password", true}, {ssha, "passwordNaCl", false},
		{"{PLAIN}hunter2", "hunter2", true}, {"{PLAIN}hunter2", "hunter", false},
	} {
		h, err := ParseHash(c.hash)
		if err != nil {
			t.Fatalf("ParseHash(%q): %v", c.hash, err)
		}
		if got := h.Verify(c.pw); got != c.want {
			t.Errorf("Verify(%q, %q) = %t, want %t", c.hash, c.pw, got, c.want)
		}
	}
	for _, bad := range []string{"", "abJnggxhB/yWI", "$5$rounds=5000$salt$hash", "$6$salt$hash", "$2y$10$short",
		"$apr1$$dxHfLAsjHkDRmG83UXe8K0", "$apr1$xxxxxxxxx$dxHfLAsjHkDRmG83UXe8K0", "$apr1$xx$short", "{SHA}notbase64!", "{SHA}AAAA", "{SSHA}" + base64.StdEncoding.EncodeToString(make([]byte, 20))} {
		if _, err := ParseHash(bad); err == nil {
			t.Errorf("ParseHash(%q) accepted", bad)
		} else if strings.Contains(err.Error(), bad) && bad != "" {
			t.Errorf("error %q repeats the hash", err)
		}
	}
}

func TestParseHtpasswd(t *testing.T) {
	file := "# users\r\nalice:$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0\r\n\nbob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=:comment\n" +
		"carol:abJnggxhB/yWI\nnocolon\n:{PLAIN}x\nalice:{PLAIN}second\n  \ndave:{PLAIN}pw"
	users, bad := ParseHtpasswd(file)
	if len(users) != 3 || len(bad) != 3 {
		t.Fatalf("users %v, bad %q", users, bad)
	}
	if !users["alice"].Verify("password") || users["alice"].Verify("second") {
		t.Errorf("alice: the first entry must win")
	}
	if !users["bob"].Verify("password") || !users["dave"].Verify("pw") {
		t.Errorf("bob or dave cannot log in")
	}
	for _, b := range bad {
		if strings.Contains(b, "abJnggxhB") {
			t.Errorf("message %q leaks a hash", b)
		}
	}
}

func basicHeader(user, pw string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+pw)))
	return h
}

func TestBasicAuth(t *testing.T) {
	file := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "basic-auth"},
		Data: map[string][]byte{"auth": []byte("foo:$apr1$xxxxxxxx$dxHfLAsjHkDRmG83UXe8K0\nbar:$6$x$y\n")}}
	authMap := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "users"},
		Data: map[string][]byte{"foo": []byte("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n"), "bad": []byte("nohash")}}
	noKey := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "nokey"}, Data: map[string][]byte{"users": []byte("x")}}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "basic-auth"}, Data: file.Data}
	get := secrets(file, authMap, noKey, other)
	for _, c := range []struct {
		name     string
		ann      map[string]string
		problems []string
		denied   bool
		realm    string
	}{
		{"auth-file", map[string]string{"auth-type": "basic", "auth-secret": "basic-auth", "auth-realm": "Authentication Required - foo"},
			[]string{"InvalidHtpasswd auth-secret"}, false, `Basic realm="Authentication Required - foo"`},
		{"namespace/name in own namespace", map[string]string{"auth-type": "basic", "auth-secret": "shop/basic-auth"},
			[]string{"InvalidHtpasswd auth-secret"}, false, `Basic realm="Authentication Required"`},
		{"auth-map", map[string]string{"auth-type": "basic", "auth-secret": "users", "auth-secret-type": "auth-map"},
			[]string{"InvalidHtpasswd auth-secret"}, false, `Basic realm="Authentication Required"`},
		{"bad realm keeps auth", map[string]string{"auth-type": "basic", "auth-secret": "users", "auth-secret-type": "auth-map", "auth-realm": `a"b`},
			[]string{"InvalidHtpasswd auth-secret", "InvalidAnnotation auth-realm"}, false, `Basic realm="Authentication Required"`},
		{"other namespace", map[string]string{"auth-type": "basic", "auth-secret": "other/basic-auth"}, []string{"InvalidAnnotation auth-secret"}, true, ""},
		{"missing secret", map[string]string{"auth-type": "basic", "auth-secret": "gone"}, []string{"InvalidAnnotation auth-secret"}, true, ""},
		{"no auth-secret", map[string]string{"auth-type": "basic"}, []string{"InvalidAnnotation auth-type"}, true, ""},
		{"no auth key", map[string]string{"auth-type": "basic", "auth-secret": "nokey"}, []string{"InvalidAnnotation auth-secret"}, true, ""},
		{"bad secret type", map[string]string{"auth-type": "basic", "auth-secret": "basic-auth", "auth-secret-type": "ldap"}, []string{"InvalidAnnotation auth-secret"}, true, ""},
		{"digest", map[string]string{"auth-type": "digest", "auth-secret": "basic-auth"}, []string{"InvalidAnnotation auth-type"}, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, probs := Parse(ingress(c.ann, "/"), get)
			wantProblems(t, probs, c.problems...)
			if (p.Denied != "") != c.denied || (p.BasicAuth == nil) != c.denied {
				t.Fatalf("denied %q, basic auth %+v; want denied %t", p.Denied, p.BasicAuth, c.denied)
			}
			if c.denied {
				return
			}
			a := p.BasicAuth
			if a.Challenge() != c.realm || a.Users() != 1 {
				t.Errorf("challenge %q, users %d", a.Challenge(), a.Users())
			}
			if u, ok := a.Check(basicHeader("foo", "password")); !ok || u != "foo" {
				t.Errorf("foo with the right password refused")
			}
			for _, h := range []http.Header{basicHeader("foo", "wrong"), basicHeader("bar", "password"), basicHeader("nobody", "password"), {},
				{"Authorization": {"Bearer abc"}}, {"Authorization": {"Basic !!!"}}} {
				if _, ok := a.Check(h); ok {
					t.Errorf("Check(%v) accepted", h)
				}
			}
		})
	}
	p, _ := Parse(ingress(map[string]string{"auth-type": "basic", "auth-secret": "basic-auth"}, "/"), nil)
	if p.Denied == "" {
		t.Errorf("no SecretGetter must deny, not open")
	}
}

func TestSecretRefs(t *testing.T) {
	for _, c := range []struct {
		ann  map[string]string
		want []types.NamespacedName
	}{
		{map[string]string{"auth-type": "basic", "auth-secret": "basic-auth"}, []types.NamespacedName{{Namespace: "shop", Name: "basic-auth"}}},
		{map[string]string{"auth-type": "basic", "auth-secret": "shop/users"}, []types.NamespacedName{{Namespace: "shop", Name: "users"}}},
		{map[string]string{"baregate.io/auth-type": "basic", "baregate.io/auth-secret": "x"}, []types.NamespacedName{{Namespace: "shop", Name: "x"}}},
		{map[string]string{"auth-type": "basic", "auth-secret": "other/users"}, nil},
		{map[string]string{"auth-type": "basic", "auth-secret": "shop/"}, nil},
		{map[string]string{"auth-type": "basic"}, nil},
		{map[string]string{"auth-secret": "basic-auth"}, nil},
		{nil, nil},
	} {
		if got := SecretRefs(ingress(c.ann, "/")); !reflect.DeepEqual(got, c.want) {
			t.Errorf("SecretRefs(%v) = %v, want %v", c.ann, got, c.want)
		}
	}
}
