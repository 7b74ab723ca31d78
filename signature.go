package oauth2jwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/fips140"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"hash"

	"filippo.io/bigmod"
	jose "github.com/go-jose/go-jose/v4"
)

// Signature verification with crypto/* directly, each algorithm checked as
// go-jose checks it (asymmetric.go, symmetric.go): the same hash, the same
// signature lengths, the same keys refused. RSA is the exception in how,
// not in what: crypto/rsa rebuilds the modulus' Montgomery constants on
// every call, which is about a third of a 2048-bit verification, so the
// public-key operation s^e mod n runs here on a modulus prepared once per
// JWKS key, with filippo.io/bigmod (the Go standard library's own
// crypto/internal/fips140/bigmod, exported), and the encodings are checked
// as crypto/rsa checks them (RFC 8017 sections 8.2.2, 9.1.2 and 9.2).
// SECURITY.md explains the choice and what the code checks.

// rsaVerifyKey is an RSA public key prepared for verification when its JWKS
// is parsed.
type rsaVerifyKey struct {
	pub *rsa.PublicKey
	// n is nil for a key crypto/rsa refuses for every signature (an even
	// modulus, an exponent that is even, under 2 or over 2^31-1, a modulus
	// under 1024 bits): such a key verifies nothing here either.
	n    *bigmod.Modulus
	e    uint
	size int // the modulus' length in bytes: every signature's length
	bits int // the modulus' length in bits
}

// newRSAVerifyKey prepares pub. It never fails: a key crypto/rsa would
// refuse is kept, and verifies nothing.
func newRSAVerifyKey(pub *rsa.PublicKey) *rsaVerifyKey {
	k := &rsaVerifyKey{pub: pub}
	if pub.N == nil || pub.N.Sign() <= 0 {
		return k
	}
	k.bits = pub.N.BitLen()
	k.size = (k.bits + 7) / 8
	if k.bits < 1024 || pub.N.Bit(0) == 0 || pub.E < 2 || pub.E&1 == 0 || pub.E > 1<<31-1 {
		return k
	}
	n, err := bigmod.NewModulus(pub.N.Bytes())
	if err != nil {
		return k
	}
	k.n, k.e = n, uint(pub.E)
	return k
}

// publicOp returns sig^e mod n as a big-endian string of the modulus'
// length, or nil when sig is not a signature of this key: not exactly the
// modulus' length (RFC 8017 section 8.2.2 step 1), or not less than n.
func (k *rsaVerifyKey) publicOp(sig []byte) []byte {
	if k.n == nil || len(sig) != k.size {
		return nil
	}
	s, err := bigmod.NewNat().SetBytes(sig, k.n)
	if err != nil {
		return nil
	}
	return bigmod.NewNat().ExpShortVarTime(s, k.e, k.n).Bytes(k.n)
}

// digestInfoPrefixes are the DER DigestInfo headers of RFC 8017 section
// 9.2 note 1, by hash.
var digestInfoPrefixes = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// verifyPKCS1v15 is RSASSA-PKCS1-v1_5 verification (RFC 8017 section
// 8.2.2): the recovered EM must be exactly 0x00 0x01 PS 0x00 T, with PS
// all 0xff and T the DigestInfo of digest (EMSA-PKCS1-v1_5, section 9.2).
func (k *rsaVerifyKey) verifyPKCS1v15(h crypto.Hash, digest, sig []byte) bool {
	prefix := digestInfoPrefixes[h]
	tLen := len(prefix) + len(digest)
	if k.size < tLen+11 {
		return false
	}
	em := k.publicOp(sig)
	if em == nil {
		return false
	}
	ps := len(em) - tLen - 1 // the index of the 0x00 before T
	if em[0] != 0x00 || em[1] != 0x01 || em[ps] != 0x00 {
		return false
	}
	for _, b := range em[2:ps] {
		if b != 0xff {
			return false
		}
	}
	return string(em[ps+1:ps+1+len(prefix)]) == string(prefix) && string(em[len(em)-len(digest):]) == string(digest)
}

// verifyPSS is RSASSA-PSS verification (RFC 8017 section 8.1.2) with
// MGF1 of the same hash and the salt length read from the encoding, as
// crypto/rsa.VerifyPSS with PSSSaltLengthAuto does, which is what go-jose
// asks for.
func (k *rsaVerifyKey) verifyPSS(h crypto.Hash, digest, sig []byte) bool {
	em := k.publicOp(sig)
	if em == nil {
		return false
	}
	emBits := k.bits - 1
	emLen := (emBits + 7) / 8
	// A modulus of 8n+1 bits: EM is one byte shorter than the modulus,
	// and the extra leading byte must be zero.
	for len(em) > emLen {
		if em[0] != 0 {
			return false
		}
		em = em[1:]
	}
	return emsaPSSVerify(h.New(), digest, em, emBits)
}

// emsaPSSVerify is EMSA-PSS-VERIFY (RFC 8017 section 9.1.2) for an unknown
// salt length; em is overwritten.
func emsaPSSVerify(hf hash.Hash, mHash, em []byte, emBits int) bool {
	hLen := hf.Size()
	emLen := len(em)
	// Steps 2 and 3 (with a salt of at least zero bytes).
	if len(mHash) != hLen || emLen < hLen+2 {
		return false
	}
	// Step 4.
	if em[emLen-1] != 0xbc {
		return false
	}
	// Steps 5 and 6.
	db := em[:emLen-hLen-1]
	hh := em[emLen-hLen-1 : emLen-1]
	bitMask := byte(0xff >> (8*emLen - emBits))
	if em[0]&^bitMask != 0 {
		return false
	}
	// Steps 7 to 9.
	mgf1XOR(hf, db, hh)
	db[0] &= bitMask
	// Step 10: zeros, then 0x01, then the salt.
	psLen := 0
	for psLen < len(db) && db[psLen] == 0 {
		psLen++
	}
	if psLen == len(db) || db[psLen] != 0x01 {
		return false
	}
	salt := db[psLen+1:]
	// Steps 12 to 14.
	hf.Reset()
	var zeros [8]byte
	hf.Write(zeros[:])
	hf.Write(mHash)
	hf.Write(salt)
	var sum [sha512.Size]byte
	return hmac.Equal(hf.Sum(sum[:0]), hh)
}

// mgf1XOR XORs out with MGF1(seed, len(out)) (RFC 8017 appendix B.2.1).
func mgf1XOR(hf hash.Hash, out, seed []byte) {
	var counter [4]byte
	var sum [sha512.Size]byte
	for done := 0; done < len(out); {
		hf.Reset()
		hf.Write(seed)
		hf.Write(counter[:])
		d := hf.Sum(sum[:0])
		done += xorInto(out[done:], d)
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}

// xorInto XORs src into dst as far as both go and returns how far.
func xorInto(dst, src []byte) int {
	n := min(len(dst), len(src))
	for i := range n {
		dst[i] ^= src[i]
	}
	return n
}

// algHash is the hash of a signature algorithm (RFC 7518 section 3.1).
func algHash(alg jose.SignatureAlgorithm) crypto.Hash {
	switch alg {
	case jose.RS256, jose.PS256, jose.ES256, jose.HS256:
		return crypto.SHA256
	case jose.RS384, jose.PS384, jose.ES384, jose.HS384:
		return crypto.SHA384
	case jose.RS512, jose.PS512, jose.ES512, jose.HS512:
		return crypto.SHA512
	}
	return 0
}

// digestOf hashes input with h into buf, without allocating.
func digestOf(h crypto.Hash, input []byte, buf *[sha512.Size]byte) []byte {
	switch h {
	case crypto.SHA256:
		*(*[sha256.Size]byte)(buf[:sha256.Size]) = sha256.Sum256(input)
		return buf[:sha256.Size]
	case crypto.SHA384:
		*(*[sha512.Size384]byte)(buf[:sha512.Size384]) = sha512.Sum384(input)
		return buf[:sha512.Size384]
	case crypto.SHA512:
		*buf = sha512.Sum512(input)
		return buf[:]
	}
	return nil
}

// useBigmod is false in FIPS 140-3 mode, where RSA must go through the
// standard library's validated module: crypto/rsa then does it all.
var useBigmod = !fips140.Enabled()

// verify reports whether sig is a signature of input by this key under
// alg. The caller (candidates) has checked that the key fits alg.
func (k *verificationKey) verify(alg jose.SignatureAlgorithm, input, sig []byte) bool {
	if key, ok := k.key.(ed25519.PublicKey); ok {
		return alg == jose.EdDSA && len(key) == ed25519.PublicKeySize && ed25519.Verify(key, input, sig)
	}
	h := algHash(alg)
	if h == 0 {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		var buf [sha512.Size]byte
		digest := digestOf(h, input, &buf)
		rk := k.rsa
		if rk == nil {
			// A key made without parseJWK (tests): prepare it now.
			rk = newRSAVerifyKey(key)
		}
		switch alg {
		case jose.RS256, jose.RS384, jose.RS512:
			if !useBigmod {
				return rsa.VerifyPKCS1v15(key, h, digest, sig) == nil
			}
			return rk.verifyPKCS1v15(h, digest, sig)
		case jose.PS256, jose.PS384, jose.PS512:
			if !useBigmod {
				return rsa.VerifyPSS(key, h, digest, sig, nil) == nil
			}
			return rk.verifyPSS(h, digest, sig)
		}
		return false
	case *ecdsa.PublicKey:
		var buf [sha512.Size]byte
		return verifyECDSA(key, alg, digestOf(h, input, &buf), sig)
	case []byte:
		// RFC 7518 section 3.2: a key at least as long as the hash.
		if len(key) < h.Size() {
			return false
		}
		mac := hmac.New(h.New, key)
		mac.Write(input)
		var buf [sha512.Size]byte
		return hmac.Equal(sig, mac.Sum(buf[:0]))
	}
	return false
}

// ecdsaSizes are the byte lengths of r and s in a JWS ECDSA signature
// (RFC 7518 section 3.4), by algorithm.
var ecdsaSizes = map[jose.SignatureAlgorithm]int{jose.ES256: 32, jose.ES384: 48, jose.ES512: 66}

// verifyECDSA checks a JWS ECDSA signature, r and s as big-endian integers
// of exactly the curve's size (any other length is refused, as go-jose
// does), re-encoded as the ASN.1 structure crypto/ecdsa verifies (as
// ecdsa.Verify would encode them).
func verifyECDSA(pub *ecdsa.PublicKey, alg jose.SignatureAlgorithm, digest, sig []byte) bool {
	size := ecdsaSizes[alg]
	if size == 0 || len(sig) != 2*size || pub.Curve != algCurve(alg) {
		return false
	}
	var der [2*(3+66) + 3]byte
	body := der[3:3]
	var ok bool
	if body, ok = appendASN1Int(body, sig[:size]); !ok {
		return false
	}
	if body, ok = appendASN1Int(body, sig[size:]); !ok {
		return false
	}
	// The SEQUENCE header, in front of its body.
	var start int
	if len(body) < 0x80 {
		start = 1
		der[1], der[2] = 0x30, byte(len(body))
	} else {
		der[0], der[1], der[2] = 0x30, 0x81, byte(len(body))
	}
	return ecdsa.VerifyASN1(pub, digest, der[start:3+len(body)])
}

// algCurve is the curve an ES* algorithm names (RFC 7518 section 3.4).
func algCurve(alg jose.SignatureAlgorithm) elliptic.Curve {
	switch alg {
	case jose.ES256:
		return elliptic.P256()
	case jose.ES384:
		return elliptic.P384()
	case jose.ES512:
		return elliptic.P521()
	}
	return nil
}

// appendASN1Int appends the DER INTEGER of the non-negative big-endian b.
// Zero is refused, as ecdsa.Verify refuses r or s of zero.
func appendASN1Int(out, b []byte) ([]byte, bool) {
	for len(b) > 0 && b[0] == 0 {
		b = b[1:]
	}
	if len(b) == 0 {
		return nil, false
	}
	n := len(b)
	if b[0]&0x80 != 0 {
		n++
	}
	out = append(out, 0x02, byte(n))
	if n > len(b) {
		out = append(out, 0)
	}
	return append(out, b...), true
}
