package annotations

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Hash is one password hash from an htpasswd file, in a scheme nginx's auth_basic also accepts:
// bcrypt ($2a$, $2b$, $2y$), Apache MD5 ($apr1$), MD5-crypt ($1$), {SHA}, {SSHA} and {PLAIN}.
// DES crypt and the SHA-crypt schemes ($5$, $6$) are refused.
type Hash struct {
	scheme string
	value  string // the whole hash for bcrypt and MD5 schemes; the decoded digest otherwise
	salt   string
}

// ParseHtpasswd reads an htpasswd file: "user:hash" lines; blank lines and # comments are skipped.
// Lines it cannot use are returned as messages (never with the hash in them); the others still work.
// A user listed twice keeps the first hash, as Apache and nginx do.
func ParseHtpasswd(file string) (map[string]Hash, []string) {
	users := map[string]Hash{}
	var bad []string
	for n, line := range strings.Split(file, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			bad = append(bad, fmt.Sprintf("line %d is not user:hash", n+1))
			continue
		}
		// Some tools append ":comment" after the hash; no supported hash contains ':'.
		hash, _, _ = strings.Cut(hash, ":")
		h, err := ParseHash(strings.TrimSpace(hash))
		if err != nil {
			bad = append(bad, fmt.Sprintf("line %d (user %q): %v", n+1, user, err))
			continue
		}
		if _, dup := users[user]; !dup {
			users[user] = h
		}
	}
	return users, bad
}

// ParseHash reads one password hash.
func ParseHash(s string) (Hash, error) {
	switch {
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		cost, err := bcrypt.Cost([]byte(s))
		if err != nil {
			return Hash{}, fmt.Errorf("malformed bcrypt hash: %w", err)
		}
		if cost > maxBcryptCost {
			return Hash{}, fmt.Errorf("bcrypt cost %d is above %d: each login would tie up a core for seconds", cost, maxBcryptCost)
		}
		return Hash{scheme: "bcrypt", value: s}, nil
	case strings.HasPrefix(s, "$apr1$"), strings.HasPrefix(s, "$1$"):
		magic := s[:strings.IndexByte(s[1:], '$')+2]
		salt, sum, ok := strings.Cut(s[len(magic):], "$")
		if !ok || salt == "" || len(salt) > 8 || len(sum) != 22 || strings.ContainsAny(salt+sum, "$:") {
			return Hash{}, errors.New("malformed MD5 hash")
		}
		return Hash{scheme: magic, value: s, salt: salt}, nil
	case strings.HasPrefix(s, "{SHA}"):
		d, err := base64.StdEncoding.DecodeString(s[5:])
		if err != nil || len(d) != sha1.Size {
			return Hash{}, errors.New("malformed {SHA} hash")
		}
		return Hash{scheme: "sha", value: string(d)}, nil
	case strings.HasPrefix(s, "{SSHA}"):
		d, err := base64.StdEncoding.DecodeString(s[6:])
		if err != nil || len(d) <= sha1.Size {
			return Hash{}, errors.New("malformed {SSHA} hash")
		}
		return Hash{scheme: "ssha", value: string(d[:sha1.Size]), salt: string(d[sha1.Size:])}, nil
	case strings.HasPrefix(s, "{PLAIN}"):
		return Hash{scheme: "plain", value: s[7:]}, nil
	case strings.HasPrefix(s, "$5$"), strings.HasPrefix(s, "$6$"):
		return Hash{}, errors.New("SHA-crypt hashes ($5$, $6$) are not supported; use bcrypt (htpasswd -B)")
	case s == "":
		return Hash{}, errors.New("empty hash")
	}
	return Hash{}, errors.New("unknown hash scheme (DES crypt is not supported); use bcrypt (htpasswd -B)")
}

// Verify reports whether password matches the hash, comparing in constant time.
func (h Hash) Verify(password string) bool {
	switch h.scheme {
	case "bcrypt":
		return bcrypt.CompareHashAndPassword([]byte(h.value), []byte(password)) == nil
	case "$apr1$", "$1$":
		return equal(MD5Crypt(password, h.salt, h.scheme), h.value)
	case "sha":
		sum := sha1.Sum([]byte(password))
		return equal(string(sum[:]), h.value)
	case "ssha":
		sum := sha1.Sum([]byte(password + h.salt))
		return equal(string(sum[:]), h.value)
	case "plain":
		return equal(password, h.value)
	}
	return false
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// maxBcryptCost bounds the work one request can cause (cost 14 is about a second of CPU).
const maxBcryptCost = 14

const itoa64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// MD5Crypt is Poul-Henning Kamp's MD5-based crypt with magic "$1$", or Apache's variant with magic
// "$apr1$" (the same algorithm, another magic). salt is cut at 8 characters.
func MD5Crypt(password, salt, magic string) string {
	if len(salt) > 8 {
		salt = salt[:8]
	}
	pw := []byte(password)
	alt := md5.Sum([]byte(password + salt + password))
	ctx := md5.New()
	ctx.Write([]byte(password + magic + salt))
	for n := len(pw); n > 0; n -= md5.Size {
		ctx.Write(alt[:min(n, md5.Size)])
	}
	for i := len(pw); i != 0; i >>= 1 {
		if i&1 != 0 {
			ctx.Write([]byte{0})
		} else {
			ctx.Write(pw[:1])
		}
	}
	final := ctx.Sum(nil)
	for i := 0; i < 1000; i++ {
		var b bytes.Buffer
		if i&1 != 0 {
			b.Write(pw)
		} else {
			b.Write(final)
		}
		if i%3 != 0 {
			b.WriteString(salt)
		}
		if i%7 != 0 {
			b.Write(pw)
		}
		if i&1 != 0 {
			b.Write(final)
		} else {
			b.Write(pw)
		}
		sum := md5.Sum(b.Bytes())
		final = sum[:]
	}
	out := []byte(magic + salt + "$")
	to64 := func(v uint32, n int) {
		for ; n > 0; n-- {
			out = append(out, itoa64[v&0x3f])
			v >>= 6
		}
	}
	f := final
	for _, t := range [][3]int{{0, 6, 12}, {1, 7, 13}, {2, 8, 14}, {3, 9, 15}, {4, 10, 5}} {
		to64(uint32(f[t[0]])<<16|uint32(f[t[1]])<<8|uint32(f[t[2]]), 4)
	}
	to64(uint32(f[11]), 2)
	return string(out)
}
